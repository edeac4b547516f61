"""Issue 12, low: `gateway check` printed the Cloud API verify token, though
config/secrets.example.toml says secrets are never shown. Masked unless asked."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway import cli

VERIFY = "verify-token-7f3a9c2e41"
SETTINGS = f"""
public_url = "https://gw.example.com"
[store]
url = "sqlite:///{{db}}"
[channels.wa]
provider = "cloudapi"
phone_number_id = "1234567890"
access_token = "access-token-secret-0042"
app_secret = "app-secret-0042"
verify_token = "{VERIFY}"
"""


@pytest.mark.parametrize("show", [False, True])
def test_check_masks_secrets_unless_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], show: bool
) -> None:
    path = tmp_path / "settings.toml"
    path.write_text(SETTINGS.format(db=tmp_path / "gw.db"))
    argv = ["check", "--settings", str(path)] + (["--show-secrets"] if show else [])
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "Verify token" in out
    assert (VERIFY in out) is show, out
    assert "access-token-secret-0042" not in out and "app-secret-0042" not in out
