"""`gateway check` asks the CRM's provider whether a route's target can address anything."""

from __future__ import annotations

from typing import Any

from gateway.plugins import PluginHost
from gateway.settings import settings_from_mapping, validate_instances


def check(target: Any) -> list[str]:
    host = PluginHost()
    host.load_entry_points()
    settings = settings_from_mapping(
        {
            "public_url": "https://gw.example.com",
            "channels": {"wa": {"provider": "test-channel", "base_url": "http://c", "token": "t"}},
            "crms": {"b24": {"provider": "bitrix24", "client_id": "local.1", "client_secret": "s"}},
            "routes": {"sales": {"channel": "wa", "crm": "b24", "target": target}},
        }
    )
    return [str(p) for p in validate_instances(settings, host.collect_providers())]


def test_a_bitrix24_route_needs_member_id_and_line() -> None:
    [problem] = [p for p in check("1") if "routes.sales.target" in p]
    assert "{member_id}/{open line id}" in problem
    assert not [p for p in check("a223c6b3710f85df22e9377d6c4f7553/1") if "target" in p]
