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


B24 = """
[store]
url = "sqlite:///var/gw.db"
[crms.b24]
provider = "bitrix24"
client_id = "local.0123456789abcd.01234567"
"""
B24_SECRET = '[crms.b24]\nclient_secret = "0123456789abcdefghijklmnopqrstuvwxyz"\n'


def _b24(tmp_path: Path, top: str, secrets: bool = True) -> Path:
    settings = tmp_path / "settings.toml"
    settings.write_text(top + B24)
    if secrets:
        (tmp_path / ".secrets.toml").write_text(B24_SECRET)
    return settings


def test_check_prints_the_bitrix24_paths_and_scopes_to_paste(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = _b24(tmp_path, 'public_url = "https://gw.example.com/wa"\n')
    assert main(["check", "--settings", str(settings)]) == 0
    out = capsys.readouterr().out
    assert "setup for b24 (paste these):" in out
    assert "Your handler path: https://gw.example.com/wa/webhooks/b24/placement" in out
    assert "Initial installation path: https://gw.example.com/wa/webhooks/b24/install" in out
    assert "Permissions (scopes): imopenlines, imconnector, im, messageservice, bizproc" in out
    # Not the bare instance URL, which answers 404: Bitrix24 calls the paths above.
    assert "webhook=https://gw.example.com/wa/webhooks/b24\n" not in out
    assert "b24  provider=bitrix24  webhook=see setup below" in out


@pytest.mark.parametrize(
    ("public_url", "why"),
    [
        ("http://localhost:8080", "a name for this machine"),
        ("https://localhost", "a name for this machine"),
        ("https://gateway:8443", "a host name without a dot"),
        ("https://127.0.0.1:8080", "a loopback address"),
        ("https://192.168.1.20", "a private address"),
        ("https://gw.corp.internal", "a name for this machine or a private network"),
        ("http://gw.example.com", "plain http, which crms.b24 (bitrix24) will not call"),
    ],
)
def test_check_refuses_a_public_url_bitrix24_cannot_reach(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    public_url: str,
    why: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = _b24(tmp_path, f'public_url = "{public_url}"\n')
    assert main(["check", "--settings", str(settings)]) == 2
    err = capsys.readouterr().err
    assert f"{settings}: public_url: {public_url!r} is " in err
    assert why in err and "allow_local_public_url = true" in err
    # Allowed by name: a rehearsal on this machine, an on-premise portal on the network.
    settings.write_text(f'public_url = "{public_url}"\nallow_local_public_url = true\n' + B24)
    assert main(["check", "--settings", str(settings)]) == 0
    assert "allow_local_public_url = true" in capsys.readouterr().out


def test_a_loopback_public_url_is_fine_without_a_provider_that_needs_more(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = tmp_path / "settings.toml"
    settings.write_text('public_url = "http://127.0.0.1:8080"\n')
    assert main(["check", "--settings", str(settings)]) == 0
    settings.write_text(
        'public_url = "http://localhost:8080"\n[channels.meta]\nprovider = "cloudapi"\n'
        'phone_number_id = "106540352242922"\naccess_token = "EAAGxxxxxxxx"\n'
        'app_secret = "0123456789abcdef0123"\nverify_token = "vvvvvvvvvvvv"\n'
    )
    assert main(["check", "--settings", str(settings)]) == 2
    assert "channels.meta (cloudapi) cannot reach" in capsys.readouterr().err


def test_check_names_a_missing_settings_file_and_where_a_missing_secret_goes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["check"]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'settings.toml'}: (file): does not exist" in err
    assert "public_url" not in err
    settings = _b24(tmp_path, 'public_url = "https://gw.example.com"\n', secrets=False)
    assert main(["check"]) == 2
    err = capsys.readouterr().err
    assert (
        ".secrets.toml (or GATEWAY_CRMS__B24__CLIENT_SECRET): crms.b24.client_secret: is missing"
        in err
    )
    assert f"{settings}: crms.b24.client_secret" not in err


def test_status_names_every_route_whose_portal_is_not_installed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = _b24(tmp_path, 'public_url = "https://gw.example.com"\n')
    with settings.open("a") as handle:
        handle.write(
            '[channels.wa]\nprovider = "chatapi"\nbase_url = "https://api.chat-api.com/instance1"\n'
            '[routes.first]\nchannel = "wa"\ncrm = "b24"\ntarget = "0123abcd/1"\n'
            '[routes.second]\nchannel = "wa"\ncrm = "b24"\ntarget = "4567ef/2"\n'
        )
    (tmp_path / ".secrets.toml").write_text(
        B24_SECRET + '[channels.wa]\ntoken = "wa-token-0123456789"\n'
        'webhook_secret = "0123456789abcdef0123"\n'
    )
    assert main(["status", "--settings", str(settings)]) == 1
    out = capsys.readouterr().out
    assert "b24: route first: the app is not installed on portal 0123abcd" in out
    assert "b24: route second: the app is not installed on portal 4567ef" in out


def test_a_plain_http_oauth_url_is_for_loopback_only_and_marked_as_a_rehearsal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = _b24(tmp_path, 'public_url = "https://gw.example.com"\n')
    with settings.open("a") as handle:
        handle.write('oauth_url = "http://oauth.example.com/oauth/token/"\n')
    assert main(["check", "--settings", str(settings)]) == 2
    err = capsys.readouterr().err
    assert "crms.b24.oauth_url: must be an https URL (plain http only to this machine" in err
    settings.write_text(
        settings.read_text().replace("http://oauth.example.com", "http://127.0.0.1:8010")
    )
    assert main(["check", "--settings", str(settings)]) == 0
    out = capsys.readouterr().out
    assert "warning: crms.b24: oauth_url http://127.0.0.1:8010/oauth/token/ is plain http" in out
    assert "REHEARSAL ONLY" in out
