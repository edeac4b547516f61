"""Settings checks: what `gateway check` reports for a Cloud API instance."""

from __future__ import annotations

from gateway_cloudapi.config import parse_config
from gateway_cloudapi.provider import CloudApiProvider

GOOD = {
    "phone_number_id": "106540352242922",
    "access_token": "t",
    "app_secret": "s",
    "verify_token": "v",
}


def test_defaults_and_string_values() -> None:
    config, problems = parse_config({**GOOD, "messages_per_second": "20", "upload_media": "true"})
    assert problems == []
    assert config is not None
    assert config.graph_url == "https://graph.facebook.com/v21.0"
    assert (config.messages_per_second, config.pair_interval, config.upload_media) == (
        20.0,
        6.0,
        True,
    )
    assert config.template_name is None and config.template_language == "en_US"


def test_every_problem_is_reported() -> None:
    bad = {
        "phone_number_id": "+1 555 078 3881",
        "api_version": "21",
        "api_base": "graph.facebook.com",
        "messages_per_second": 0,
        "pair_interval": "soon",
        "template_language": "english",
        "upload_media": "maybe",
    }
    keys = [key for key, _, _ in CloudApiProvider.validate_settings(bad)]
    assert sorted(keys) == sorted([
        "access_token", "app_secret", "verify_token", "phone_number_id", "api_version",
        "api_base", "messages_per_second", "pair_interval", "template_language", "upload_media",
    ])  # fmt: skip
    assert CloudApiProvider.validate_settings(GOOD) == []
    assert {"access_token", "app_secret", "verify_token"} <= CloudApiProvider.secret_settings
