"""The configured targets: generic webhooks, Slack and PagerDuty, each with its request format."""

from __future__ import annotations

from journeywatch.notifier import formats
from journeywatch.notifier.delivery import Target
from journeywatch.notifier.routing import Notification
from journeywatch.notifier.settings import NotifierSettings

_JSON = {"Content-Type": formats.JSON_CONTENT_TYPE}


def webhook(url: str, name: str, secret: bytes | None) -> Target:
    """A generic webhook: the CloudEvent JSON, timestamped and (with a secret) signed."""

    def render(notification: Notification, now: float) -> tuple[bytes, dict[str, str]]:
        return formats.webhook_request(notification, secret=secret, now=now)

    return Target("webhook", name, url, render)


def slack(url: str, base_url: str) -> Target:
    """A Slack incoming webhook."""

    def render(notification: Notification, now: float) -> tuple[bytes, dict[str, str]]:
        return formats.json_body(formats.slack_message(notification, base_url)), dict(_JSON)

    return Target("slack", "slack", url, render)


def pagerduty(url: str, routing_key: str, base_url: str) -> Target:
    """PagerDuty Events API v2."""

    def render(notification: Notification, now: float) -> tuple[bytes, dict[str, str]]:
        event = formats.pagerduty_event(notification, routing_key, base_url)
        return formats.json_body(event), dict(_JSON)

    return Target("pagerduty", "pagerduty", url, render)


def from_settings(settings: NotifierSettings) -> list[Target]:
    """Every configured target, webhooks first (named webhook-1, webhook-2, …)."""
    secret = (
        settings.notify_secret.get_secret_value().encode()
        if settings.notify_secret is not None
        else None
    )
    targets = [
        webhook(url, f"webhook-{i}", secret)
        for i, url in enumerate(settings.notify_webhook_urls, start=1)
    ]
    if settings.notify_slack_webhook_url is not None:
        targets.append(
            slack(settings.notify_slack_webhook_url.get_secret_value(), settings.map_base_url)
        )
    if settings.notify_pagerduty_routing_key is not None:
        targets.append(
            pagerduty(
                settings.notify_pagerduty_url,
                settings.notify_pagerduty_routing_key.get_secret_value(),
                settings.map_base_url,
            )
        )
    return targets
