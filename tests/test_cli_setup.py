"""`gateway check` prints what a provider needs done by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import main


def test_check_prints_the_cloud_api_callback_url_and_verify_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = tmp_path / "settings.toml"
    settings.write_text(
        """
public_url = "https://gw.example.com"
[store]
url = "sqlite:///var/gw.db"
[channels.meta]
provider = "cloudapi"
phone_number_id = "106540352242922"
"""
    )
    (tmp_path / ".secrets.toml").write_text(
        """
[channels.meta]
access_token = "EAAGxxxxxxxxxxxxxxxxxxxxxxxx"
app_secret = "0123456789abcdef0123"
verify_token = "paste-me-verify-token"
"""
    )
    assert main(["check", "--settings", str(settings)]) == 0
    out = capsys.readouterr().out
    assert "Callback URL: https://gw.example.com/webhooks/meta" in out
    assert "Verify token: ***" in out  # secrets are masked unless asked
    assert main(["check", "--settings", str(settings), "--show-secrets"]) == 0
    out = capsys.readouterr().out
    assert "Verify token: paste-me-verify-token" in out
