"""Which anomaly changes notify: lifecycle kinds, severity and journey filters, backfill, repeats."""

from __future__ import annotations

import orjson
import pytest

from journeywatch.notifier.routing import (
    Change,
    Decision,
    InvalidChange,
    NotificationKind,
    Router,
)
from journeywatch.shared import topics
from journeywatch.shared.anomalies import AnomalyStatus, LifecycleChange, Severity
from tests.integration.notifier_support import anomaly, cloudevent

OPENED, UPDATED, RESOLVED = (
    LifecycleChange.OPENED,
    LifecycleChange.UPDATED,
    LifecycleChange.RESOLVED,
)


def handle(router: Router, change: LifecycleChange, sequence: int, **fields: object) -> object:
    """Decide and, as the runner does after delivery, remember the CloudEvent id."""
    status = AnomalyStatus.RESOLVED if change is RESOLVED else AnomalyStatus.OPEN
    c = Change.decode(cloudevent(change, anomaly(status=status, **fields), sequence))  # type: ignore[arg-type]
    decision, notification = router.decide(c)
    router.mark_handled(c.event_id)
    return notification.kind if notification is not None else decision


def test_full_lifecycle_of_a_provisional_incident() -> None:
    router = Router(Severity.WARNING)
    assert handle(router, OPENED, 0, provisional=True) is NotificationKind.OPENED
    assert handle(router, UPDATED, 1) is NotificationKind.CONFIRMED
    assert handle(router, UPDATED, 2) is Decision.UNCHANGED  # same severity: quiet
    assert handle(router, UPDATED, 3, severity=Severity.CRITICAL) is NotificationKind.UPDATED
    assert handle(router, UPDATED, 4, severity=Severity.WARNING) is Decision.UNCHANGED  # falls
    assert handle(router, RESOLVED, 5, severity=Severity.WARNING) is NotificationKind.RESOLVED


def test_a_provisional_incident_resolved_is_retracted() -> None:
    router = Router(Severity.WARNING)
    assert handle(router, OPENED, 0, provisional=True) is NotificationKind.OPENED
    assert handle(router, RESOLVED, 1, provisional=True) is NotificationKind.RETRACTED


def test_severity_filter_and_escalation_above_it() -> None:
    router = Router(Severity.WARNING)
    assert handle(router, OPENED, 0, severity=Severity.INFO) is Decision.FILTERED
    assert handle(router, UPDATED, 1, severity=Severity.INFO) is Decision.FILTERED
    # The first notification is the one that reaches the threshold: news to the reader …
    assert handle(router, UPDATED, 2, severity=Severity.WARNING) is NotificationKind.OPENED
    assert handle(router, UPDATED, 3, severity=Severity.WARNING) is Decision.UNCHANGED
    # … and its resolve follows, whatever the severity at the end.
    assert handle(router, RESOLVED, 4, severity=Severity.INFO) is NotificationKind.RESOLVED


def test_an_incident_never_notified_resolves_quietly() -> None:
    router = Router(Severity.CRITICAL)
    assert handle(router, OPENED, 0, severity=Severity.WARNING) is Decision.FILTERED
    assert handle(router, RESOLVED, 1, severity=Severity.WARNING) is Decision.FILTERED


def test_unknown_incident_is_judged_on_its_own_severity() -> None:
    """Opened before this consumer group started (or forgotten): one notification, then quiet."""
    router = Router(Severity.WARNING)
    assert handle(router, UPDATED, 4) is NotificationKind.UPDATED
    assert handle(router, UPDATED, 5) is Decision.UNCHANGED
    fresh = Router(Severity.WARNING)
    assert handle(fresh, RESOLVED, 9) is NotificationKind.RESOLVED


def test_journey_filter() -> None:
    router = Router(Severity.INFO, journeys=("ecommerce",))
    assert handle(router, OPENED, 0, journey="support", id="an_s") is Decision.FILTERED
    assert handle(router, OPENED, 0, journey="ecommerce") is NotificationKind.OPENED


def test_repeated_cloudevent_is_dropped_but_only_after_it_was_handled() -> None:
    router = Router(Severity.WARNING)
    c = Change.decode(cloudevent(OPENED, anomaly(), 0))
    assert router.decide(c)[0] is Decision.NOTIFY
    router.mark_handled(c.event_id)
    assert router.decide(c)[0] is Decision.DUPLICATE


def test_dedupe_memory_is_bounded() -> None:
    router = Router(Severity.WARNING, memory=3)
    for i in range(5):
        router.mark_handled(f"e{i}")
    assert not router.seen("e0")
    assert not router.seen("e1")
    assert router.seen("e2")
    assert router.seen("e4")
    for i in range(10):  # incidents too
        handle(router, OPENED, 0, id=f"an_{i}")
    assert len(router._incidents) == 3


@pytest.mark.parametrize("how", ["extension", "anomaly", "header"])
def test_backfill_never_notifies(how: str) -> None:
    a = anomaly(backfill=how == "anomaly")
    event = orjson.loads(cloudevent(OPENED, a, 0))
    if how == "extension":
        event["journeywatchbackfill"] = True
    headers = [(topics.BACKFILL_HEADER, b"replay-1")] if how == "header" else []
    c = Change.decode(orjson.dumps(event), headers)
    assert c.backfill
    assert Router(Severity.INFO).decide(c) == (Decision.BACKFILL, None)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"", "empty"),
        (b"{not json", "not JSON"),
        (b"[1]", "not a JSON object"),
        (b'{"type": "com.example.other", "id": "x"}', "unknown CloudEvent type"),
        (b'{"type": "io.journeywatch.anomaly.opened", "id": "x", "data": {}}', "invalid"),
        (b'{"type": "io.journeywatch.anomaly.reopened", "id": "x", "data": {}}', "invalid"),
    ],
)
def test_invalid_messages_are_refused_with_a_reason(value: bytes, reason: str) -> None:
    with pytest.raises(InvalidChange, match=reason):
        Change.decode(value)


def test_decode_keeps_the_exact_bytes_and_id() -> None:
    raw = cloudevent(OPENED, anomaly(id="an_x"), 0)
    c = Change.decode(raw)
    assert c.raw == raw
    assert c.event_id == "an_x:0"
    assert c.change is OPENED
