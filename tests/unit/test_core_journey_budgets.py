"""The false-alarm budget is per journey: another journey's traffic never moves a journey's thresholds, and per-journey stage-2 scorers give the one process's output."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

import pytest

from journeywatch.detector.core.config import CoreConfig, DetectorOutput
from journeywatch.detector.core.detector import JourneyDetector
from journeywatch.detector.core.merger import PartialMerger
from journeywatch.detector.core.scorer import PaneScorer
from journeywatch.detector.core.sessionizer import Sessionizer
from journeywatch.shared.anomalies import AnomalyType
from journeywatch.shared.events import Touchpoint
from journeywatch.shared.journeys import JourneyCatalog
from tests.unit.detector_streams import NOW, START, Scenario, catalog, constant_rate, generate
from tests.unit.test_core_sessionizer import _interleave, _with_events_left

PARTITIONS = 3
FP = "cfg-1"
CONFIG = CoreConfig(session_timeout_seconds=300, warmup_windows=20, speculative=False)
K = CONFIG.panes_per_window
_SHOP = catalog(abandonment_timeout=240).journeys["ecommerce"]
TWO = JourneyCatalog(
    default_journey="ecommerce",
    journeys={"ecommerce": _SHOP, "outlet": _SHOP.model_copy(update={"name": "outlet"})},
)
"""Two journeys: the shop and a second shop of the same funnel (its own series, its own models)."""


def _shop() -> list[Touchpoint]:
    """45 minutes of the shop, 100 sessions a minute, every mobile purchase failing from minute 33."""
    onset = START + timedelta(minutes=33)
    return generate(
        Scenario(
            rate=constant_rate(100),
            minutes=45,
            seed=11,
            purchase_fails=lambda t, channel: channel == "mobile" and t >= onset,
        )
    )


def _outlet() -> list[Touchpoint]:
    """40 minutes of the outlet (journey ``outlet``), 80 sessions a minute, its web checkout
    failing from minute 30: its own series (as many as the shop's) and its own incident."""
    onset = START + timedelta(minutes=30)
    events = generate(
        Scenario(
            rate=constant_rate(80),
            minutes=40,
            seed=23,
            purchase_fails=lambda t, channel: channel == "web" and t >= onset,
        )
    )
    return [
        ev.model_copy(
            update={
                "journey": "outlet",
                "event_id": f"o-{ev.event_id}",
                "session_id": f"o-{ev.session_id}",
            }
        )
        for ev in events
    ]


def _merged(*streams: list[Touchpoint]) -> list[Touchpoint]:
    return sorted(
        (ev for stream in streams for ev in stream), key=lambda ev: (ev.occurred_at, ev.event_id)
    )


@dataclass
class Outputs:
    """Changes and window metric points, per journey, in the order they came out."""

    changes: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    points: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def add(self, out: DetectorOutput) -> None:
        for c in out.changes:
            self.changes.setdefault(c.anomaly.journey, []).append(c.model_dump())
        for p in out.metric_points:
            self.points.setdefault(p.journey, []).append(p.model_dump())


def _one_process(events: list[Touchpoint]) -> Outputs:
    """The one-process detector of the two-journey catalog over a time-ordered stream, one
    partition, advanced at every minute of event time (no event is late: the output is the
    events' alone, whatever else the stream carries)."""
    detector = JourneyDetector(TWO, CONFIG)
    out = Outputs()
    minute = None
    for event in events:
        at = int(event.occurred_at.timestamp() // 60)
        if minute is not None and at != minute:
            out.add(detector.advance(NOW))
        minute = at
        detector.observe(event, 0)
    out.add(detector.advance(NOW))
    return out


def test_another_journeys_traffic_does_not_move_a_journeys_thresholds() -> None:
    # The shop alone, then the shop beside the outlet's traffic (as many series again, an
    # incident of its own): the shop's every change (ids, scores, totals) and window metric is
    # the same. With catalog-wide Bonferroni counts the outlet's series raised the shop's
    # touchpoint, step and stage thresholds, and every score read against them moved.
    shop = _shop()
    alone = _one_process(shop)
    beside = _one_process(_merged(shop, _outlet()))
    assert set(alone.changes) == {"ecommerce"}
    assert set(beside.changes) == {"ecommerce", "outlet"}
    assert beside.changes["ecommerce"] == alone.changes["ecommerce"]
    assert beside.points["ecommerce"] == alone.points["ecommerce"]
    opened = {c["anomaly"]["type"] for c in alone.changes["ecommerce"] if c["change"] == "opened"}
    assert AnomalyType.CONVERSION_DROP in opened
    assert len(alone.points["ecommerce"]) > 1000
    # The outlet's own incident is found too.
    outlet = {(c["anomaly"]["type"], c["anomaly"]["channel"]) for c in beside.changes["outlet"]}
    assert any(kind is AnomalyType.CONVERSION_DROP for kind, _ in outlet)


def _stages(
    stream: list[tuple[Touchpoint, int]], config: CoreConfig, every: int
) -> tuple[Outputs, Outputs, list[int]]:
    """The one process, and 3 sessionizers → one merger and one ``PaneScorer`` per journey
    (stage 2's runner), fed the same reads, advanced every ``every`` events."""
    detector = JourneyDetector(TWO, config)
    detector.assign_partitions(range(PARTITIONS))
    stage1 = [Sessionizer(TWO, config, p, PARTITIONS, FP) for p in range(PARTITIONS)]
    mergers = {
        name: PartialMerger(
            name,
            PARTITIONS,
            float(config.window_seconds),
            K,
            float(config.allowed_lateness_seconds),
            config.idle_partition_windows,
            fingerprint=FP,
        )
        for name in TWO.journeys
    }
    scorers = {name: PaneScorer(TWO, config, journey=name) for name in TWO.journeys}
    facade, scored = Outputs(), Outputs()
    merges = [0]
    unread_at: Callable[[int], set[int]] = _with_events_left(stream)

    def advance(read: int) -> None:
        held = unread_at(read)
        detector.hold_partitions(held)
        facade.add(detector.advance(NOW))
        for merger in mergers.values():
            merger.hold(held)
        for sz in stage1:
            for partial in sz.advance(NOW):
                mergers[partial.journey].accept(partial)
        for name, merger in mergers.items():
            batch = merger.ready()
            merges[0] += len(batch)
            scored.add(scorers[name].accept(batch, NOW))

    for i, (event, p) in enumerate(stream, 1):
        detector.observe(event, p)
        stage1[p].observe(event, p)
        if i % every == 0:
            advance(i)
    advance(len(stream))
    return facade, scored, merges


@pytest.mark.parametrize("every", [37, 300])
def test_per_journey_scorers_give_the_one_process_output_for_both_journeys(every: int) -> None:
    # Both journeys carry traffic (and an incident each), read from 3 partitions in bursts with
    # events out of order. Stage 2 scores each journey in its own PaneScorer (maybe in another
    # process): every change and window metric point of each journey is the one process's, in
    # the same order.
    stream = list(_interleave(_merged(_shop(), _outlet()), 11))
    facade, scored, merges = _stages(stream, CONFIG, every)
    assert merges[0] > 400
    assert set(facade.changes) == {"ecommerce", "outlet"}
    for journey in ("ecommerce", "outlet"):
        assert scored.points[journey] == facade.points[journey]
        assert scored.changes[journey] == facade.changes[journey]
        assert len(facade.points[journey]) > 1000
        opened = {c["anomaly"]["type"] for c in facade.changes[journey] if c["change"] == "opened"}
        assert AnomalyType.CONVERSION_DROP in opened


def _without_contributors(changes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {**c, "anomaly": {**c["anomaly"], "contributors": None, "summary": None}} for c in changes
    ]


def test_past_the_dimension_value_cap_only_contributors_can_differ() -> None:
    # A cap of 3 values a dimension: the stream's 3 channels fit, its 4 devices and 4 countries
    # do not, so each process pools its own first-come 4th value as "__other__" (the one process
    # in arrival order, stage 1 per partition, the scorer in merge order). Several value
    # combinations then share one slot combination: the scorer sums their rows as the one
    # process does (it kept the last one: the first window's touchpoint count read 61 for 88).
    # Every window metric point is the one process's; of the changes, only the contributors
    # (and the summary naming them) may differ.
    config = replace(CONFIG, max_dimension_values=3)
    stream = list(_interleave(_shop(), 11))
    facade, scored, _ = _stages(stream, config, 37)
    assert scored.points["ecommerce"] == facade.points["ecommerce"]
    assert len(facade.points["ecommerce"]) > 1000
    changes = facade.changes["ecommerce"]
    assert _without_contributors(scored.changes["ecommerce"]) == _without_contributors(changes)
    pooled = {
        (c["dimension"], c["value"])
        for change in changes
        for c in change["anomaly"]["contributors"]
    }
    assert {("device", "__other__"), ("country", "__other__")} <= pooled
