"""What `gateway rehearse` writes: the gateway's settings for its fakes, and the steps."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from gateway_fakes.tls import Certificates

if TYPE_CHECKING:
    from gateway_fakes.rehearsal import Fakes

MARK = "# Written by `gateway rehearse`"
CUSTOMERS = {"wa": "79991234567", "wa_chatapi": "79991234568", "wa_green": "79991234569"}


def write_settings(
    directory: Path, port: int, fakes: Fakes, certificates: Certificates, admin_token: str
) -> Path:
    """`settings.toml` and `.secrets.toml` (0600) for `gateway run` against `fakes`."""
    urls, portal, cloud = fakes.urls, fakes.portal, fakes.cloudapi
    chat, green = fakes.chatapi, fakes.greenapi
    settings = directory / "settings.toml"
    settings.write_text(
        f"""{MARK}: a gateway for the fakes it runs, offline.
# Not for production: the keys marked REHEARSAL ONLY say why.

public_url = "http://127.0.0.1:{port}"
host = "127.0.0.1"
port = {port}
# REHEARSAL ONLY: the fakes reach the gateway on 127.0.0.1 over plain http, which
# Bitrix24 and Meta would not.
allow_local_public_url = true
# REHEARSAL ONLY: trust the CA made for this run (the fake portal's https certificate).
ca_file = "{certificates.ca}"
log_format = "text"

[store]
url = "sqlite:///{directory / "gateway.db"}"

[media]
directory = "{directory / "media"}"

[fetch]
# Files come from the fakes on loopback.
allowed_hosts = ["127.0.0.1"]

[retry]
base_delay = 0.5
max_delay = 5.0

[workers]
poll_interval = 0.5

[channels.wa]
provider = "cloudapi"
phone_number_id = "{cloud.phone_number_id}"
# REHEARSAL ONLY: the fake Cloud API instead of https://graph.facebook.com.
api_base = "{urls["cloudapi"]}"

[channels.wa_chatapi]
provider = "chatapi"
# REHEARSAL ONLY: the fake Chat API; the gateway points its webhook here on start.
base_url = "{chat.base_url}"

[channels.wa_green]
provider = "greenapi"
# REHEARSAL ONLY: the fake GREEN-API; the gateway points its webhook here on start.
api_url = "{urls["greenapi"]}"
id_instance = "{green.id_instance}"

[crms.b24]
provider = "bitrix24"
client_id = "{portal.client_id}"
connector_id = "whatschat"
connector_name = "WhatsApp (rehearsal)"
# REHEARSAL ONLY: the fake portal's OAuth server (https, with this run's certificate).
oauth_url = "{portal.oauth_token_url}"
# Only this (fake) portal may install the app.
allowed_portals = ["{portal.member_id}"]
"""
    )
    secrets_file = directory / ".secrets.toml"
    secrets_file.write_text(
        f"""{MARK}: the fakes' secrets and this run's admin token.
[admin]
token = "{admin_token}"

[channels.wa]
access_token = "{cloud.access_token}"
app_secret = "{cloud.app_secret}"
verify_token = "{secrets.token_urlsafe(12)}"

[channels.wa_chatapi]
token = "{chat.token}"
webhook_secret = "{secrets.token_hex(16)}"

[channels.wa_green]
api_token = "{green.api_token}"
webhook_token = "{secrets.token_hex(16)}"

[crms.b24]
client_secret = "{portal.client_secret}"
"""
    )
    secrets_file.chmod(0o600)
    return settings


def instructions(
    directory: Path,
    settings: Path,
    certificates: Certificates,
    urls: dict[str, str],
    admin_token: str,
) -> str:
    """The steps, with this run's ports and paths, as commands to paste."""
    ca = f"--cacert {certificates.ca}"
    post = "curl -s -H 'Content-Type: application/json' -X POST"
    portal, gateway = urls["portal"], urls["gateway"]
    install = json.dumps({"url": f"{gateway}/webhooks/b24/install"})
    customer = CUSTOMERS["wa"]
    writes = json.dumps({"wa_id": customer, "text": "Hello! Is my order ready?"})
    answers = json.dumps({"line": 1, "chat_id": customer, "text": "Yes, it is ready."})
    chat, green = CUSTOMERS["wa_chatapi"], CUSTOMERS["wa_green"]
    return f"""
── Bitrix24 rehearsal, offline ───────────────────────────────────────────
   fake Bitrix24 portal + OAuth  {portal}  (https; CA {certificates.ca})
   fake WhatsApp Cloud API       {urls["cloudapi"]}  (channel wa, line 1)
   fake Chat API                 {urls["chatapi"]}  (channel wa_chatapi, line 2)
   fake GREEN-API                {urls["greenapi"]}  (channel wa_green, line 3)
   settings for the gateway      {settings}  (+ .secrets.toml beside it)

1. Start the gateway, in another terminal:
   gateway run --settings {settings}

2. Bitrix24 installs the app:
   {post} {ca} {portal}/_fake/install -d '{install}'
   {post} {ca} {portal}/_fake/finish_install

3. The administrator links each number to its open line:
   {post} {ca} {portal}/_fake/link -d '{{"line": 1, "channel": "wa"}}'
   {post} {ca} {portal}/_fake/link -d '{{"line": 2, "channel": "wa_chatapi"}}'
   {post} {ca} {portal}/_fake/link -d '{{"line": 3, "channel": "wa_green"}}'

4. A customer writes on WhatsApp, and the operator sees it:
   {post} {urls["cloudapi"]}/_fake/customer_writes -d '{writes}'
   {post} {urls["cloudapi"]}/_fake/deliver
   curl -s {ca} '{portal}/_fake/wait?chat_id={customer}&count=1'
   Chat API and GREEN-API push their webhooks themselves; their chats in the portal are
   `NUMBER@c.us` (the wait answer shows each message's chat_id, line and text):
   {post} {urls["chatapi"]}/_fake/customer_writes -d '{{"chat": "{chat}", "text": "Hi"}}'
   curl -s {ca} '{portal}/_fake/wait?chat_id={chat}&count=1'
   {post} {urls["greenapi"]}/_fake/customer_writes -d '{{"chat": "{green}", "text": "Hi"}}'
   curl -s {ca} '{portal}/_fake/wait?chat_id={green}&count=1'

5. The operator answers, and the customer gets it:
   {post} {ca} {portal}/_fake/operator_writes -d '{answers}'
   curl -s '{urls["cloudapi"]}/_fake/wait?to={customer}&count=1'
   (and line 2 with "chat_id": "{chat}@c.us", line 3 with "chat_id": "{green}@c.us";
   /_fake/wait?to=NUMBER on the Chat API and GREEN-API fakes likewise)

   The console: {gateway}/console/  (admin token: {admin_token})
   `gateway status --settings {settings}` shows what needs a person.
   Everything stays in {directory}; delete it when done.

Serving the fakes until Ctrl-C.
"""
