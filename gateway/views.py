"""What the admin API shows of a running gateway: instances, routes, plugins."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.hub import GatewayHub
from gateway.plugins import PluginHost
from gateway.providers import Provider, ProviderKind
from gateway.routes import RouteTable


async def instances_info(
    hub: GatewayHub, instances: Mapping[str, Provider], kinds: Mapping[str, ProviderKind]
) -> list[dict[str, Any]]:
    info = []
    for name, provider in instances.items():
        state = await hub.account_state(name)
        info.append(
            {
                "name": name,
                "kind": kinds[name],
                "provider": provider.name,
                "state": state.status.value,
                "detail": state.detail,
                "has_qr": state.qr is not None,
                "webhook_url": hub.webhook_url(name),
            }
        )
    return info


def routes_info(routes: RouteTable) -> list[dict[str, Any]]:
    return [
        {
            "name": r.name,
            "channel": r.channel,
            "crm": r.crm,
            "target": r.target,
            "direction": r.direction,
            "origin": r.origin,
        }
        for r in routes.all()
    ]


def plugins_info(host: PluginHost) -> list[dict[str, Any]]:
    return [
        {
            "name": r.name,
            "module": r.module,
            "loaded": r.loaded,
            "error": r.error,
            "providers": r.providers,
        }
        for r in host.reports
    ]
