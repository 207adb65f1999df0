"""Each target's payload against its documented format; webhook signatures verify, tampering fails."""

from __future__ import annotations

from datetime import datetime

import pytest

from journeywatch.notifier import formats
from journeywatch.notifier.routing import Change, Notification, NotificationKind
from journeywatch.notifier.settings import NotifierSettings
from journeywatch.notifier.targets import from_settings
from journeywatch.shared.anomalies import Contributor, LifecycleChange, Severity
from tests.integration.notifier_support import anomaly, cloudevent

BASE = "https://jw.example.com"


def notification(
    kind: NotificationKind = NotificationKind.OPENED, **fields: object
) -> Notification:
    a = anomaly(**fields)  # type: ignore[arg-type]
    return Notification(kind, Change.decode(cloudevent(LifecycleChange.OPENED, a, 0)))


def test_webhook_body_is_the_cloudevent_and_the_signature_verifies() -> None:
    n = notification()
    body, headers = formats.webhook_request(n, secret=b"s3cret", now=1764590400.7)
    assert body == n.change.raw  # byte for byte what was on the topic
    assert headers["Content-Type"] == "application/cloudevents+json; charset=utf-8"
    assert headers["X-JourneyWatch-Timestamp"] == "1764590400"
    assert headers["X-JourneyWatch-Notification"] == "opened"
    signature = headers["X-JourneyWatch-Signature"]
    assert signature.startswith("sha256=")
    assert len(signature) == len("sha256=") + 64
    assert formats.verify(b"s3cret", "1764590400", body, signature)
    # Replay with a fresh timestamp, a changed body or another key: rejected.
    assert not formats.verify(b"s3cret", "1764594000", body, signature)
    assert not formats.verify(b"s3cret", "1764590400", body.replace(b"0.12", b"0.13"), signature)
    assert not formats.verify(b"other", "1764590400", body, signature)


def test_webhook_without_secret_is_not_signed() -> None:
    _, headers = formats.webhook_request(notification(), secret=None, now=0)
    assert "X-JourneyWatch-Signature" not in headers
    assert headers["X-JourneyWatch-Timestamp"] == "0"


def test_slack_message_follows_block_kit_and_says_what_where_values_since_link() -> None:
    n = notification(
        NotificationKind.CONFIRMED,
    )
    msg = formats.slack_message(n, BASE)
    assert set(msg) == {"text", "blocks"}
    assert msg["text"].startswith("Confirmed warning conversion drop in ecommerce / checkout")
    header, section, fields, context = msg["blocks"]
    assert header["type"] == "header"
    assert header["text"]["type"] == "plain_text"
    assert len(header["text"]["text"]) <= 150
    assert section["type"] == "section"
    assert section["text"]["type"] == "mrkdwn"
    text = section["text"]["text"]
    assert "Checkout conversion on mobile fell to 12 % (expected 41 %)" in text
    link = f"<{BASE}/?journey=ecommerce&metric=conversion_rate#an_test|Open on the map>"
    assert link in text
    assert len(text) <= 3000
    assert fields["type"] == "section"
    assert len(fields["fields"]) <= 10
    shown = "\n".join(f["text"] for f in fields["fields"])
    assert "*Observed*\n0.12" in shown
    assert "*Expected*\n0.41 (band 0.33–0.49)" in shown
    assert "*Since*\n2026-12-01T12:00:00Z" in shown
    assert all(f["type"] == "mrkdwn" and len(f["text"]) <= 2000 for f in fields["fields"])
    assert context["type"] == "context"
    assert "`an_test`" in context["elements"][0]["text"]


def test_slack_escapes_mrkdwn_control_characters() -> None:
    a = anomaly().model_copy(update={"summary": "a <b> & c", "contributors": []})
    n = Notification(
        NotificationKind.OPENED, Change.decode(cloudevent(LifecycleChange.OPENED, a, 0))
    )
    text = formats.slack_message(n, BASE)["blocks"][1]["text"]["text"]
    assert "a &lt;b&gt; &amp; c" in text


def test_pagerduty_trigger_follows_events_api_v2() -> None:
    a = anomaly(severity=Severity.CRITICAL).model_copy(
        update={
            "contributors": [
                Contributor(dimension="channel", value="mobile", observed=1, expected=5, share=0.8)
            ]
        }
    )
    n = Notification(
        NotificationKind.OPENED, Change.decode(cloudevent(LifecycleChange.OPENED, a, 0))
    )
    event = formats.pagerduty_event(n, "R0UT1NGKEY", BASE)
    assert event["routing_key"] == "R0UT1NGKEY"
    assert event["event_action"] == "trigger"
    assert event["dedup_key"] == "an_test"
    assert len(event["dedup_key"]) <= 255
    payload = event["payload"]
    assert payload["summary"] == a.summary
    assert len(payload["summary"]) <= 1024
    assert payload["source"] == "journeywatch/ecommerce/checkout"
    assert payload["severity"] in {"critical", "error", "warning", "info"}
    assert payload["severity"] == "critical"
    datetime.fromisoformat(payload["timestamp"])  # ISO 8601
    assert payload["component"] == "checkout"
    assert payload["group"] == "ecommerce"
    assert payload["class"] == "conversion_drop"
    details = payload["custom_details"]
    assert details["observed"] == 0.12
    assert details["expected"] == 0.41
    assert details["contributors"][0]["value"] == "mobile"
    assert details["anomaly_url"] == f"{BASE}/v1/anomalies/an_test"
    assert event["links"] == [
        {"href": f"{BASE}/?journey=ecommerce&metric=conversion_rate#an_test", "text": "Journey map"}
    ]
    assert event["client"] == "JourneyWatch"


@pytest.mark.parametrize("kind", [NotificationKind.RESOLVED, NotificationKind.RETRACTED])
def test_pagerduty_resolve_carries_only_key_action_and_dedup_key(kind: NotificationKind) -> None:
    event = formats.pagerduty_event(notification(kind), "R0UT1NGKEY", BASE)
    assert event == {"routing_key": "R0UT1NGKEY", "event_action": "resolve", "dedup_key": "an_test"}


def test_pagerduty_summary_is_cut_to_1024_characters() -> None:
    a = anomaly().model_copy(update={"summary": "x" * 5000})
    n = Notification(
        NotificationKind.OPENED, Change.decode(cloudevent(LifecycleChange.OPENED, a, 0))
    )
    assert len(formats.pagerduty_event(n, "k", BASE)["payload"]["summary"]) == 1024


def test_targets_and_links_from_settings() -> None:
    settings = NotifierSettings(
        notify_webhook_urls="http://a/hook, http://b/hook",  # type: ignore[arg-type]
        notify_slack_webhook_url="https://hooks.slack.com/services/T/B/X",  # type: ignore[arg-type]
        notify_pagerduty_routing_key="",  # type: ignore[arg-type]
        api_host="0.0.0.0",
        api_port=8123,
    )
    assert settings.notify_pagerduty_routing_key is None  # blank = unset
    assert [(t.kind, t.name, t.url) for t in from_settings(settings)] == [
        ("webhook", "webhook-1", "http://a/hook"),
        ("webhook", "webhook-2", "http://b/hook"),
        ("slack", "slack", "https://hooks.slack.com/services/T/B/X"),
    ]
    assert settings.map_base_url == "http://127.0.0.1:8123"
    assert NotifierSettings(notify_map_base_url="https://map/").map_base_url == "https://map"
    assert NotifierSettings().notify_min_severity is Severity.WARNING
    assert not NotifierSettings().any_target


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOURNEYWATCH_NOTIFY_WEBHOOK_URLS", "http://x/1,http://x/2")
    monkeypatch.setenv("JOURNEYWATCH_NOTIFY_JOURNEYS", "ecommerce, support")
    monkeypatch.setenv("JOURNEYWATCH_NOTIFY_MIN_SEVERITY", "critical")
    monkeypatch.setenv("JOURNEYWATCH_NOTIFY_PAGERDUTY_ROUTING_KEY", "abc")
    settings = NotifierSettings()
    assert settings.notify_webhook_urls == ("http://x/1", "http://x/2")
    assert settings.notify_journeys == ("ecommerce", "support")
    assert settings.notify_min_severity is Severity.CRITICAL
    assert "abc" not in repr(settings)  # secrets stay out of logs
    assert [t.kind for t in from_settings(settings)] == ["webhook", "webhook", "pagerduty"]


@pytest.mark.parametrize(
    "env",
    [
        {"notify_webhook_urls": "hooks.example.com/x"},
        {"notify_webhook_urls": "https://ok.example.com, ftp://x"},
        {"notify_pagerduty_url": "events.pagerduty.com"},
        {"notify_min_severity": "urgent"},
    ],
)
def test_bad_settings_are_refused(env: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="notify_"):
        NotifierSettings(**env)  # type: ignore[arg-type]
