"""The notifier on the real broker: lifecycle to webhook, Slack and PagerDuty receivers on loopback,
signatures, filters, backfill, dedupe, commits, and the dead-letter topic."""

from __future__ import annotations

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from journeywatch.notifier import formats
from journeywatch.notifier.settings import NotifierSettings
from journeywatch.shared import topics
from journeywatch.shared.anomalies import AnomalyStatus, LifecycleChange, Severity
from tests.conftest import wait_until
from tests.integration.notifier_support import (
    anomaly,
    cloudevent,
    receiver,
    running_notifier,
    sample,
)
from tests.integration.test_detector_pipeline import consume_all

pytestmark = pytest.mark.integration

KEY = b"ecommerce/checkout"
OPENED, UPDATED, RESOLVED = (
    LifecycleChange.OPENED,
    LifecycleChange.UPDATED,
    LifecycleChange.RESOLVED,
)


async def produce(
    bootstrap: str, topic: str, messages: list[tuple[bytes, list[tuple[str, bytes]]]]
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for value, headers in messages:
            await producer.send_and_wait(topic, value=value, key=KEY, headers=headers)
    finally:
        await producer.stop()


def settings(bootstrap: str, group: str, **overrides: object) -> NotifierSettings:
    return NotifierSettings(
        kafka_bootstrap_servers=bootstrap,
        notifier_group_id=group,
        notifier_offset_reset="earliest",
        notifier_metrics_port=0,
        notify_map_base_url="http://map.example",
        notify_retry_initial_seconds=0.05,
        notify_retry_max_seconds=0.2,
        **overrides,  # type: ignore[arg-type]
    )


async def test_lifecycle_reaches_every_target_once_signed_filtered_and_committed(
    bootstrap_servers: str, unique: str
) -> None:
    source, dlq = f"anomalies-{unique}", f"dlq-{unique}"
    a = anomaly("an_a", provisional=True)
    confirmed = a.model_copy(update={"provisional": False})
    critical = confirmed.model_copy(update={"severity": Severity.CRITICAL})
    resolved = critical.model_copy(update={"status": AnomalyStatus.RESOLVED})
    messages = [
        (cloudevent(OPENED, a, 0), []),
        (cloudevent(OPENED, a, 0), []),  # repeated (a producer retry): dropped
        (cloudevent(UPDATED, confirmed, 1), []),
        (cloudevent(UPDATED, confirmed, 2), []),  # same severity: quiet
        (cloudevent(OPENED, anomaly("an_info", severity=Severity.INFO), 0), []),  # below min
        (cloudevent(OPENED, anomaly("an_back"), 0), [(topics.BACKFILL_HEADER, b"replay-7")]),
        (cloudevent(UPDATED, critical, 3), []),
        (cloudevent(RESOLVED, resolved, 4), []),
    ]
    async with (
        receiver() as hook,
        receiver((200, b"ok")) as slack,
        receiver((202, b'{"status":"success","message":"Event processed"}')) as pd,
    ):
        config = settings(
            bootstrap_servers,
            f"notifier-{unique}",
            notify_webhook_urls=f"{hook.url}/hook",
            notify_secret="s3cret",
            notify_slack_webhook_url=f"{slack.url}/services/T0/B0/XYZ",
            notify_pagerduty_routing_key="R0UT1NGKEY",
            notify_pagerduty_url=f"{pd.url}/v2/enqueue",
        )
        async with running_notifier(config, anomalies_topic=source, dlq_topic=dlq) as metrics:
            await produce(bootstrap_servers, source, messages)
            await wait_until(lambda: len(pd.delivered()) >= 4, timeout=60)
            await wait_until(
                lambda: (
                    sum(
                        sample(metrics, "journeywatch_notifier_changes_total", decision=d)
                        for d in ("notify", "duplicate", "unchanged", "filtered", "backfill")
                    )
                    == 8
                ),
                timeout=60,
            )
            assert sample(metrics, "journeywatch_notifier_changes_total", decision="duplicate") == 1
            assert sample(metrics, "journeywatch_notifier_changes_total", decision="backfill") == 1
            assert sample(metrics, "journeywatch_notifier_changes_total", decision="filtered") == 1

        # Webhook: the CloudEvents themselves, in order, each signed over timestamp and body.
        kinds = [r.headers["x-journeywatch-notification"] for r in hook.delivered()]
        assert kinds == ["opened", "confirmed", "updated", "resolved"]
        for request, (value, _) in zip(
            hook.delivered(), [messages[0], messages[2], messages[6], messages[7]], strict=True
        ):
            assert request.path == "/hook"
            assert request.body == value
            assert request.headers["content-type"] == formats.CLOUDEVENTS_CONTENT_TYPE
            assert formats.verify(
                b"s3cret",
                request.headers["x-journeywatch-timestamp"],
                request.body,
                request.headers["x-journeywatch-signature"],
            )
        # Slack: readable messages with the summary and a map link.
        texts = [r.json()["text"] for r in slack.delivered()]  # type: ignore[index]
        assert [t.split(" ", 1)[0] for t in texts] == [
            "Opened",
            "Confirmed",
            "Escalated",
            "Resolved",
        ]
        assert all(a.summary in t for t in texts)
        assert slack.delivered()[0].path == "/services/T0/B0/XYZ"
        # PagerDuty: trigger ×3 then resolve, all on the incident's dedup_key.
        events = [r.json() for r in pd.delivered()]
        assert [e["event_action"] for e in events] == ["trigger", "trigger", "trigger", "resolve"]  # type: ignore[index]
        assert {e["dedup_key"] for e in events} == {"an_a"}  # type: ignore[index]
        assert events[2]["payload"]["severity"] == "critical"  # type: ignore[index]
        assert {e["routing_key"] for e in events} == {"R0UT1NGKEY"}  # type: ignore[index]

        # Offsets were committed after delivery: a restart of the same group repeats nothing.
        before = len(hook.requests)
        async with running_notifier(config, anomalies_topic=source, dlq_topic=dlq):
            await produce(bootstrap_servers, source, [(cloudevent(OPENED, anomaly("an_b"), 0), [])])
            await wait_until(lambda: len(hook.requests) > before, timeout=60)
        assert [orjson.loads(r.body)["data"]["id"] for r in hook.requests[before:]] == ["an_b"]


async def test_failing_target_goes_to_the_dead_letter_topic_and_others_still_deliver(
    bootstrap_servers: str, unique: str
) -> None:
    source, dlq = f"anomalies-{unique}", f"dlq-{unique}"
    value = cloudevent(OPENED, anomaly("an_dlq", severity=Severity.CRITICAL), 0)
    async with receiver((503, b"down")) as broken, receiver() as fine:
        config = settings(
            bootstrap_servers,
            f"notifier-{unique}",
            notify_webhook_urls=f"{broken.url}/hook,{fine.url}/hook",
            notify_deadline_seconds=1.0,
        )
        async with running_notifier(config, anomalies_topic=source, dlq_topic=dlq) as metrics:
            await produce(bootstrap_servers, source, [(value, []), (b"{not json", [])])
            records = await consume_all(bootstrap_servers, dlq, expect_at_least=2, timeout=60)
            assert (
                sample(
                    metrics,
                    "journeywatch_notifier_deliveries_total",
                    target="webhook",
                    outcome="dead_lettered",
                )
                == 1
            )
        assert len(fine.delivered()) == 1
        assert len(broken.requests) >= 2  # retried before giving up
    by_target = {dict(r.headers)["journeywatch-notify-target"].decode(): r for r in records}
    assert set(by_target) == {"webhook-1", "-"}
    failed = by_target["webhook-1"]
    assert failed.value == value
    assert failed.key == KEY
    headers = dict(failed.headers)
    assert headers["journeywatch-dlq-reason"].startswith(b"still failing after 1 s: HTTP 503")
    assert headers["journeywatch-source-topic"] == source.encode()
    assert headers["journeywatch-source-offset"] == b"0"
    assert dict(by_target["-"].headers)["journeywatch-dlq-reason"].startswith(b"not JSON")
