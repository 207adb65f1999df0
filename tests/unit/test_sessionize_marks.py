"""Stage 1's hold reports (partial version 3): partials carry ``held``, a ``mark`` when it changes."""

from __future__ import annotations

from datetime import UTC, datetime

from journeywatch.detector.core.config import CoreConfig
from journeywatch.detector.core.partials import Partial, decode_partial, encode_partial
from journeywatch.detector.sessionize import SessionizerSet
from journeywatch.shared.events import Channel
from journeywatch.shared.journeys import load_journeys
from journeywatch.shared.records import TouchpointRecord

T0 = 1_770_000_000
NOW = datetime.fromtimestamp(T0, UTC)


def _event(sid: str, second: float) -> TouchpointRecord:
    at = datetime.fromtimestamp(T0 + second, UTC)
    return TouchpointRecord(schema_version=1, event_id=f"{sid}{second}", occurred_at=at,
                            received_at=at, journey="ecommerce", stage="awareness",
                            touchpoint="landing_view", session_id=sid, channel=Channel.WEB)  # fmt: skip


def _set(unread: set[int]) -> SessionizerSet:
    stage1 = SessionizerSet(load_journeys(), CoreConfig(panes_per_window=1), fingerprint="cfg")
    for p in (0, 1):
        stage1.by_partition[p] = stage1.fresh(p, 2)
    stage1.unread = unread.__contains__
    return stage1


def _take(stage1: SessionizerSet) -> list[Partial]:
    out, stage1.pending = stage1.pending, []
    return [decode_partial(encode_partial(p)) for p in out]  # what stage 2 reads


def test_partials_carry_held_and_a_mark_reports_each_change_between_panes() -> None:
    unread = {0, 1}
    stage1 = _set(unread)
    stage1.advance(NOW)
    assert _take(stage1) == []  # no event yet: nothing to report (never seen by stage 2)
    stage1.observe(_event("a", 1), 0)
    stage1.observe(_event("b", 2), 1)
    stage1.advance(NOW)
    first = _take(stage1)
    assert [(p.partition, p.kind, p.held, p.frontier) for p in first] == [
        (0, "mark", True, T0 + 1.0),
        (1, "mark", True, T0 + 2.0),
    ]
    stage1.advance(NOW)
    assert _take(stage1) == []  # unchanged: nothing more
    stage1.observe(_event("c", 70), 0)  # partition 0 crosses 60 s + 5 s: its panes carry held
    unread.discard(1)  # partition 1 read to its end, quiet: a mark says it may be idle
    stage1.advance(NOW)
    second = _take(stage1)
    assert [(p.partition, p.kind, p.held) for p in second] == [
        (0, "spec", True),
        (0, "final", True),
        (1, "mark", False),
    ]
    assert all(p.v == 3 for p in first + second)
    assert second[2].rows == ()
    unread.clear()  # partition 0 too: no pane to carry it, so a mark
    unread.add(1)  # and partition 1 has records again
    stage1.advance(NOW)
    assert [(p.partition, p.kind, p.held) for p in _take(stage1)] == [
        (0, "mark", False),
        (1, "mark", True),
    ]
