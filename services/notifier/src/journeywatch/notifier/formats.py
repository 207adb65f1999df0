"""What each target receives: signed CloudEvent webhooks, Slack messages, PagerDuty Events API v2.

Pure functions from a notification to a request body (and headers); no I/O.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any, Final
from urllib.parse import quote, urlencode

import orjson

from journeywatch.notifier.routing import Notification, NotificationKind
from journeywatch.shared.anomalies import Anomaly

SIGNATURE_HEADER: Final = "X-JourneyWatch-Signature"
TIMESTAMP_HEADER: Final = "X-JourneyWatch-Timestamp"
NOTIFICATION_HEADER: Final = "X-JourneyWatch-Notification"
CLOUDEVENTS_CONTENT_TYPE: Final = "application/cloudevents+json; charset=utf-8"
JSON_CONTENT_TYPE: Final = "application/json"

# PagerDuty limits (Events API v2): summary ≤ 1024 characters, dedup_key ≤ 255.
PAGERDUTY_SUMMARY_MAX: Final = 1024
# Slack Block Kit limits: header text ≤ 150 characters, section text ≤ 3000.
SLACK_HEADER_MAX: Final = 150
SLACK_SECTION_MAX: Final = 3000

_VERB: Final = {
    NotificationKind.OPENED: "Opened",
    NotificationKind.CONFIRMED: "Confirmed",
    NotificationKind.UPDATED: "Escalated",
    NotificationKind.RESOLVED: "Resolved",
    NotificationKind.RETRACTED: "Retracted",
}
_EMOJI: Final = {
    NotificationKind.OPENED: ":rotating_light:",
    NotificationKind.CONFIRMED: ":rotating_light:",
    NotificationKind.UPDATED: ":arrow_double_up:",
    NotificationKind.RESOLVED: ":white_check_mark:",
    NotificationKind.RETRACTED: ":leftwards_arrow_with_hook:",
}


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """`sha256=<hex>`: HMAC-SHA256 of `<timestamp>.<body>`, so a replayed body with a new
    timestamp does not verify.

    >>> sign(b"k", "1764590400", b"{}")
    'sha256=294cf08d90c13b54e7d462082579e7efcc419e63f208365757561078df01c8f6'
    """
    digest = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify(secret: bytes, timestamp: str, body: bytes, signature: str) -> bool:
    """What a receiver does (constant-time compare); it should also reject old timestamps."""
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


def webhook_request(
    notification: Notification, *, secret: bytes | None, now: float
) -> tuple[bytes, dict[str, str]]:
    """The CloudEvent exactly as it was on the topic, with timestamp and optional signature."""
    body = notification.change.raw
    timestamp = str(int(now))
    headers = {
        "Content-Type": CLOUDEVENTS_CONTENT_TYPE,
        TIMESTAMP_HEADER: timestamp,
        NOTIFICATION_HEADER: notification.kind.value,
    }
    if secret is not None:
        headers[SIGNATURE_HEADER] = sign(secret, timestamp, body)
    return body, headers


def anomaly_link(base_url: str, anomaly: Anomaly) -> str:
    """The journey map with the incident's journey and metric preselected.

    >>> from journeywatch.shared.anomalies import Metric
    >>> anomaly_link("http://map", type("A", (), {"journey": "shop", "metric": Metric.SESSIONS,
    ...     "id": "an_1"})())
    'http://map/?journey=shop&metric=sessions#an_1'
    """
    query = urlencode({"journey": anomaly.journey, "metric": anomaly.metric.value})
    return f"{base_url.rstrip('/')}/?{query}#{quote(anomaly.id)}"


def api_link(base_url: str, anomaly: Anomaly) -> str:
    """The incident in the REST API."""
    return f"{base_url.rstrip('/')}/v1/anomalies/{quote(anomaly.id)}"


def _where(anomaly: Anomaly) -> str:
    parts = [anomaly.journey, anomaly.stage]
    if anomaly.step:
        parts.append(f"step {anomaly.step}")
    if anomaly.touchpoint:
        parts.append(f"touchpoint {anomaly.touchpoint}")
    parts.append(f"channel {anomaly.channel}" if anomaly.channel else "all channels")
    return " / ".join(parts)


def _number(value: float) -> str:
    return f"{value:.3g}"


def headline(notification: Notification) -> str:
    """One line: what happened to which incident, where."""
    a = notification.anomaly
    what = a.type.value.replace("_", " ")
    return f"{_VERB[notification.kind]} {a.severity.value} {what} in {_where(a)}"


def _escape(text: str) -> str:
    """Slack mrkdwn control characters (&, <, >) as their entities."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_message(notification: Notification, base_url: str) -> dict[str, Any]:
    """A Slack incoming-webhook payload: `text` (notification fallback) and Block Kit blocks."""
    a = notification.anomaly
    link = anomaly_link(base_url, a)
    title = headline(notification)
    summary = a.summary or title
    since = (a.onset or a.opened_at).isoformat().replace("+00:00", "Z")
    fields = [
        f"*Observed*\n{_number(a.observed)}",
        f"*Expected*\n{_number(a.expected)} (band {_number(a.lower)}–{_number(a.upper)})",
        f"*Since*\n{since}",
        f"*Metric*\n{a.metric.value}",
    ]
    if a.resolved_at is not None:
        fields.append(f"*Resolved at*\n{a.resolved_at.isoformat().replace('+00:00', 'Z')}")
    if a.provisional and notification.kind is NotificationKind.OPENED:
        fields.append("*Provisional*\nearly evaluation; confirmation follows")
    context = f"`{a.id}` · score {a.score:.2f} · {a.anomalous_windows} anomalous window(s)"
    if a.contributors:
        top = a.contributors[0]
        context += f" · top contributor {top.dimension}={top.value} ({top.share:.0%})"
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": title[:SLACK_HEADER_MAX], "emoji": True},
        },
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": (
                    f"{_EMOJI[notification.kind]} {_escape(summary)}\n<{link}|Open on the map>"
                )[:SLACK_SECTION_MAX],
            },
        },
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f} for f in fields]},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": _escape(context)}]},
    ]
    return {"text": f"{title}: {summary}", "blocks": blocks}


def pagerduty_event(notification: Notification, routing_key: str, base_url: str) -> dict[str, Any]:
    """A PagerDuty Events API v2 event: trigger (opened, confirmed, escalated) or resolve.

    dedup_key is the anomaly id, so every change of one incident lands on one PagerDuty alert.
    """
    a = notification.anomaly
    if notification.kind in (NotificationKind.RESOLVED, NotificationKind.RETRACTED):
        return {"routing_key": routing_key, "event_action": "resolve", "dedup_key": a.id}
    link = anomaly_link(base_url, a)
    summary = a.summary or headline(notification)
    details: dict[str, Any] = {
        "notification": notification.kind.value,
        "journey": a.journey,
        "stage": a.stage,
        "channel": a.channel or "all",
        "metric": a.metric.value,
        "observed": a.observed,
        "expected": a.expected,
        "lower": a.lower,
        "upper": a.upper,
        "score": a.score,
        "provisional": a.provisional,
        "opened_at": a.opened_at.isoformat(),
        "anomaly_url": api_link(base_url, a),
    }
    if a.step:
        details["step"] = a.step
    if a.touchpoint:
        details["touchpoint"] = a.touchpoint
    if a.contributors:
        details["contributors"] = [c.model_dump(mode="json") for c in a.contributors]
    return {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": a.id,
        "payload": {
            "summary": summary[:PAGERDUTY_SUMMARY_MAX],
            "source": f"journeywatch/{a.journey}/{a.stage}",
            "severity": a.severity.value,  # info, warning, critical are PagerDuty severities too
            "timestamp": a.updated_at.isoformat(),
            "component": a.stage,
            "group": a.journey,
            "class": a.type.value,
            "custom_details": details,
        },
        "client": "JourneyWatch",
        "client_url": link,
        "links": [{"href": link, "text": "Journey map"}],
    }


def json_body(payload: dict[str, Any]) -> bytes:
    """Compact JSON bytes."""
    return orjson.dumps(payload)
