"""Which anomaly-topic messages become notifications: lifecycle, severity, journey, backfill, repeats.

Pure (no I/O): the runner feeds it decoded CloudEvents in topic order and delivers what it returns.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

import orjson
from pydantic import ValidationError

from journeywatch.shared.anomalies import (
    CLOUDEVENTS_TYPE_PREFIX,
    Anomaly,
    AnomalyStatus,
    LifecycleChange,
    Severity,
)
from journeywatch.shared.topics import BACKFILL_HEADER

SEVERITY_RANK: Final = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}


class NotificationKind(StrEnum):
    """What a person is told happened to an incident."""

    OPENED = "opened"
    CONFIRMED = "confirmed"
    UPDATED = "updated"
    RESOLVED = "resolved"
    RETRACTED = "retracted"


class Decision(StrEnum):
    """What became of one message (label of journeywatch_notifier_changes_total)."""

    NOTIFY = "notify"
    DUPLICATE = "duplicate"
    BACKFILL = "backfill"
    FILTERED = "filtered"
    UNCHANGED = "unchanged"


class InvalidChange(ValueError):
    """A message on the anomaly topic that is not a CloudEvent of our anomaly contract."""


@dataclass(frozen=True)
class Change:
    """One decoded lifecycle change, with the exact bytes that were on the topic."""

    event_id: str
    change: LifecycleChange
    anomaly: Anomaly
    backfill: bool
    raw: bytes

    @classmethod
    def decode(cls, value: bytes | None, headers: Iterable[tuple[str, bytes]] = ()) -> Change:
        """Parse a CloudEvent as the detector publishes it.

        Backfill is taken from the record header (replayed history), the
        `journeywatchbackfill` extension or the anomaly's own flag: any of them suffices.
        """
        if not value:
            raise InvalidChange("empty message")
        try:
            event = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise InvalidChange(f"not JSON: {exc}") from None
        if not isinstance(event, dict):
            raise InvalidChange("not a JSON object")
        kind = str(event.get("type", ""))
        if not kind.startswith(CLOUDEVENTS_TYPE_PREFIX):
            raise InvalidChange(f"unknown CloudEvent type {kind!r}")
        try:
            change = LifecycleChange(kind.removeprefix(CLOUDEVENTS_TYPE_PREFIX))
            anomaly = Anomaly.model_validate(event.get("data"))
        except (ValueError, ValidationError) as exc:
            raise InvalidChange(f"invalid anomaly change: {exc}".splitlines()[0]) from None
        event_id = event.get("id")
        if not isinstance(event_id, str) or not event_id:
            raise InvalidChange("CloudEvent without an id")
        backfill = (
            bool(event.get("journeywatchbackfill"))
            or anomaly.backfill
            or any(key == BACKFILL_HEADER for key, _ in headers)
        )
        return cls(event_id, change, anomaly, backfill, bytes(value))


@dataclass(frozen=True)
class Notification:
    """A change worth telling people about, and how to describe it."""

    kind: NotificationKind
    change: Change

    @property
    def anomaly(self) -> Anomaly:
        """The incident as of this change."""
        return self.change.anomaly


@dataclass
class _Incident:
    notified: Severity | None  # highest severity a notification was sent for
    provisional: bool


class Router:
    """Decides, in topic order, which changes notify; remembers a bounded number of ids.

    Parameters
    ----------
    min_severity
        Changes of less severe incidents are not notified.
    journeys
        Journeys to notify about; empty: all.
    memory
        CloudEvent ids and incidents remembered (least recently seen forgotten first).

    Examples
    --------
    >>> from datetime import datetime, UTC
    >>> from journeywatch.shared.anomalies import AnomalyChange, AnomalyStatus, AnomalyType, Metric
    >>> t = datetime(2026, 12, 1, 12, tzinfo=UTC)
    >>> a = Anomaly(id="an_1", type=AnomalyType.CONVERSION_DROP, status=AnomalyStatus.OPEN,
    ...     journey="shop", stage="checkout", channel=None, metric=Metric.CONVERSION_RATE,
    ...     window_start=t, window_end=t, observed=0.1, expected=0.5, lower=0.4, upper=0.6,
    ...     score=0.99, severity=Severity.WARNING, opened_at=t, updated_at=t, detected_at=t,
    ...     detector_version="1", model_version="1", provisional=True)
    >>> def change(kind, anomaly, seq):
    ...     raw = AnomalyChange(change=kind, anomaly=anomaly, sequence=seq).to_cloudevent()
    ...     return Change.decode(orjson.dumps(raw))
    >>> router = Router(Severity.WARNING)
    >>> opened = change(LifecycleChange.OPENED, a, 0)
    >>> router.decide(opened)[1].kind
    <NotificationKind.OPENED: 'opened'>
    >>> router.mark_handled(opened.event_id)  # once delivered or dead-lettered
    >>> router.decide(opened)[0]  # the same CloudEvent again
    <Decision.DUPLICATE: 'duplicate'>
    >>> confirmed = a.model_copy(update={"provisional": False})
    >>> router.decide(change(LifecycleChange.UPDATED, confirmed, 1))[1].kind
    <NotificationKind.CONFIRMED: 'confirmed'>
    >>> router.decide(change(LifecycleChange.UPDATED, confirmed, 2))[0]  # severity did not rise
    <Decision.UNCHANGED: 'unchanged'>
    >>> worse = confirmed.model_copy(update={"severity": Severity.CRITICAL})
    >>> router.decide(change(LifecycleChange.UPDATED, worse, 3))[1].kind
    <NotificationKind.UPDATED: 'updated'>
    """

    def __init__(
        self, min_severity: Severity, journeys: Iterable[str] = (), memory: int = 10_000
    ) -> None:
        self._min = SEVERITY_RANK[min_severity]
        self._journeys = frozenset(journeys)
        self._memory = memory
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._incidents: OrderedDict[str, _Incident] = OrderedDict()

    def seen(self, event_id: str) -> bool:
        """True when this CloudEvent id was already handled."""
        return event_id in self._seen

    def mark_handled(self, event_id: str) -> None:
        """Remember a handled CloudEvent id (after delivery or dead-lettering)."""
        self._seen[event_id] = None
        self._seen.move_to_end(event_id)
        while len(self._seen) > self._memory:
            self._seen.popitem(last=False)

    def decide(self, change: Change) -> tuple[Decision, Notification | None]:
        """Classify one change and update what is remembered of its incident.

        An incident first notified when an update lifts it to the minimum severity is told as
        `opened`. One not remembered (forgotten, or opened before this consumer group started)
        is judged on its own severity, as `updated`: at most one extra notification per open
        incident follows a restart.
        """
        if self.seen(change.event_id):
            return Decision.DUPLICATE, None
        if change.backfill:
            return Decision.BACKFILL, None
        anomaly = change.anomaly
        if self._journeys and anomaly.journey not in self._journeys:
            return Decision.FILTERED, None
        rank = SEVERITY_RANK[anomaly.severity]
        known = self._incidents.get(anomaly.id)
        kind: NotificationKind | None = None
        if change.change is LifecycleChange.OPENED:
            kind = NotificationKind.OPENED if rank >= self._min else None
        elif change.change is LifecycleChange.UPDATED:
            if known is None:  # perhaps notified before a restart: not "opened" again
                kind = NotificationKind.UPDATED if rank >= self._min else None
            elif known.notified is None:  # crossed the threshold: news to whoever is told
                kind = NotificationKind.OPENED if rank >= self._min else None
            elif known.provisional and not anomaly.provisional:
                kind = NotificationKind.CONFIRMED
            elif rank > SEVERITY_RANK[known.notified]:
                kind = NotificationKind.UPDATED
        else:
            told = known.notified is not None if known is not None else rank >= self._min
            if told:
                kind = (
                    NotificationKind.RETRACTED if anomaly.provisional else NotificationKind.RESOLVED
                )
        self._remember(anomaly, kind, known)
        if kind is None:
            below = rank < self._min and (known is None or known.notified is None)
            return (Decision.FILTERED if below else Decision.UNCHANGED), None
        return Decision.NOTIFY, Notification(kind, change)

    def _remember(
        self, anomaly: Anomaly, kind: NotificationKind | None, known: _Incident | None
    ) -> None:
        if anomaly.status is AnomalyStatus.RESOLVED:
            self._incidents.pop(anomaly.id, None)
            return
        notified = known.notified if known is not None else None
        if kind is not None and (
            notified is None or SEVERITY_RANK[anomaly.severity] > SEVERITY_RANK[notified]
        ):
            notified = anomaly.severity
        self._incidents[anomaly.id] = _Incident(notified, anomaly.provisional)
        self._incidents.move_to_end(anomaly.id)
        while len(self._incidents) > self._memory:
            self._incidents.popitem(last=False)
