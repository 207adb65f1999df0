"""Stage 2's merge of partials (issue 13): readiness over source partitions, idle rule, replays, checkpoints."""

from __future__ import annotations

import doctest
import random
from collections.abc import Iterable

import pytest

from journeywatch.detector.core import merger as merger_module
from journeywatch.detector.core.detector import STATE_CODEC
from journeywatch.detector.core.merger import MergedPane, PartialMerger
from journeywatch.detector.core.partials import (
    Dims,
    PaneSums,
    Partial,
    decode_partial,
    encode_partial,
)

W, K, L = 60.0, 2, 5.0  # 30 s panes, 5 s lateness
PANE = W / K
WEB: Dims = (("channel", "web"),)
MOBILE: Dims = (("channel", "mobile"),)
T0 = 1_770_000_000.0  # a pane boundary (divisible by 30)


def _merger(partitions: int = 3, idle_windows: float = 1000, **kw: object) -> PartialMerger:
    return PartialMerger(
        "ecommerce",
        partitions=partitions,
        window_seconds=W,
        panes_per_window=K,
        allowed_lateness=L,
        idle_partition_windows=idle_windows,
        **kw,  # type: ignore[arg-type]
    )


def _stage1(events: Iterable[float], partition: int, partitions: int = 3) -> list[Partial]:
    """What one source partition's stage 1 emits for the events (seconds after T0, in arrival order).

    Each event counts [touchpoints, its whole seconds mod 7] on ("cart", all) and ("cart", channel).
    ``spec`` when the partition's newest event reaches a pane's end, ``final`` at end + lateness.
    """
    out: list[Partial] = []
    content: dict[int, dict[tuple[str, Dims], list[int]]] = {}
    frontier = first = -1.0
    next_spec = next_final = 0

    def emit(pane: int, kind: str, offset: int) -> None:
        rows = content.get(pane, {})
        out.append(
            Partial(
                fingerprint="cfg",
                partition=partition,
                partitions=partitions,
                journey="ecommerce",
                pane=pane,
                kind=kind,  # type: ignore[arg-type]
                frontier=frontier,
                first_t=first,
                offset=offset,
                rows=tuple((s, d, tuple(c)) for (s, d), c in sorted(rows.items())),
                journey_started=pane == int(first // PANE),
            )
        )

    for offset, dt in enumerate(events):
        t = T0 + dt
        pane = int(t // PANE)
        if offset == 0:
            first = frontier = t
            next_spec = next_final = pane
        assert t >= frontier - L, "the simulator never produces late events"
        assert pane >= next_final
        rows = content.setdefault(pane, {})
        for dims in ((), WEB if offset % 3 else MOBILE):
            row = rows.setdefault(("cart", dims), [0, 0])
            row[0] += 1
            row[1] += int(t) % 7
        frontier = max(frontier, t)
        while (next_spec + 1) * PANE <= frontier:
            emit(next_spec, "spec", offset)
            next_spec += 1
        while (next_final + 1) * PANE + L <= frontier:
            emit(next_final, "final", offset)
            next_final += 1
    return out


def _times(rng: random.Random, start: float, end: float, rate: float) -> list[float]:
    """Event times from ``start`` to ``end`` at ``rate`` a second, disordered by less than L."""
    times = []
    t = start
    while t < end:
        times.append(t)
        t += rng.expovariate(rate)
    return [times[0]] + [max(times[0], x - rng.uniform(0.0, 0.9 * L)) for x in times[1:]]


def _interleave(streams: list[list[Partial]], rng: random.Random) -> list[Partial]:
    """One arrival order: each partition's partials stay in order (they share a partials partition)."""
    queues = [list(s) for s in streams if s]
    out = []
    while queues:
        q = rng.choice(queues)
        out.append(q.pop(0))
        if not q:
            queues.remove(q)
    return out


def _run(merger: PartialMerger, partials: Iterable[Partial]) -> list[MergedPane]:
    out = []
    for partial in partials:
        merger.accept(partial)
        out += merger.ready()
    return out


def _expected(
    streams: dict[int, list[float]], pane: int
) -> dict[tuple[str, Dims], tuple[int, ...]]:
    """Direct per-pane sums of every partition's events (nothing is late in these streams)."""
    rows: dict[tuple[str, Dims], list[int]] = {}
    for events in streams.values():
        for offset, dt in enumerate(events):
            t = T0 + dt
            if int(t // PANE) != pane:
                continue
            for dims in ((), WEB if offset % 3 else MOBILE):
                row = rows.setdefault(("cart", dims), [0, 0])
                row[0] += 1
                row[1] += int(t) % 7
    return {k: tuple(v) for k, v in rows.items()}


@pytest.fixture(scope="module")
def three_partitions() -> tuple[dict[int, list[float]], list[list[Partial]]]:
    rng = random.Random(7)
    events = {p: _times(rng, 0.2 * p, 600.0, rate=0.8 + 0.3 * p) for p in range(3)}
    return events, [_stage1(events[p], p) for p in range(3)]


def test_module_doctests_run() -> None:
    result = doctest.testmod(merger_module)
    assert result.attempted >= 10
    assert result.failed == 0


def test_final_merges_sum_every_partition_and_spec_merges_their_specs(three_partitions) -> None:
    events, streams = three_partitions
    out = _run(_merger(), _interleave(streams, random.Random(1)))
    finals = [m for m in out if m.kind == "final"]
    specs = [m for m in out if m.kind == "spec"]
    first = int(T0 // PANE)
    assert [m.pane for m in finals] == list(range(first, first + 19))  # panes ending ≤ 595 s
    assert [m.pane for m in specs] == list(range(first, first + 19))
    for m in finals:
        assert m.sums.rows == _expected(events, m.pane), m.pane
        assert m.partitions == (0, 1, 2)
        assert m.idle == ()
    assert sum(m.sums.rows[("cart", ())][0] for m in finals) == sum(
        1 for e in events.values() for dt in e if dt < 570.0
    )
    spec_sums = {
        p.pane: p.rows for s in streams for p in s if p.kind == "spec" and p.partition == 0
    }
    assert spec_sums  # spec merges read the spec partials, whatever arrived since
    for m in specs:
        want: dict[tuple[str, Dims], list[int]] = {}
        for s in streams:
            for p in s:
                if p.kind == "spec" and p.pane == m.pane:
                    for stage, dims, c in p.rows:
                        row = want.setdefault((stage, dims), [0, 0])
                        row[0] += c[0]
                        row[1] += c[1]
        assert m.sums.rows == {k: tuple(v) for k, v in want.items()}
    assert finals[0].sums.journey_started
    assert not finals[1].sums.journey_started
    # Some event arrived after its pane's spec in this stream: spec and final differ somewhere.
    assert any(m.sums != f.sums for m, f in zip(specs, finals, strict=True))


def test_outputs_do_not_depend_on_how_partitions_interleave(three_partitions) -> None:
    # No partition is idle here (idle_partition_windows 1000): whether one is depends on how far
    # the others ran ahead of it in arrival, in one process as in two stages.
    _, streams = three_partitions
    reference = _run(_merger(), _interleave(streams, random.Random(0)))
    assert len(reference) == 38
    # Event-time order: a pane's spec (its end) before its final (end + 5 s) before the next spec.
    assert [(m.pane % 1000, m.kind) for m in reference[:4]] == [
        (reference[0].pane % 1000, "spec"),
        (reference[0].pane % 1000, "final"),
        (reference[0].pane % 1000 + 1, "spec"),
        (reference[0].pane % 1000 + 1, "final"),
    ]
    for seed in range(1, 21):
        arrival = _interleave(streams, random.Random(seed))
        assert _run(_merger(), arrival) == reference, seed
        batch = _merger()
        for partial in arrival:
            batch.accept(partial)
        assert batch.ready() == reference, seed  # all at once: the same order


def test_replays_and_exact_duplicates_are_dropped(three_partitions) -> None:
    _, streams = three_partitions
    reference = _run(_merger(), _interleave(streams, random.Random(3)))
    # Partition 1's stage 1 crashed after its 25th partial and replays from its 10th; partition 0's
    # producer retried its 3rd partial (the same bytes, decoded again).
    replayed = [[*streams[0][:3], decode_partial(encode_partial(streams[0][2])), *streams[0][3:]]]
    replayed.append(streams[1][:25] + streams[1][10:])
    replayed.append(streams[2])
    merger = _merger()
    assert _run(merger, _interleave(replayed, random.Random(4))) == reference
    assert merger.state.duplicates == 1 + 15
    assert merger.state.conflicts == 0


def test_a_repeat_with_other_content_counts_as_a_conflict_and_the_first_is_kept() -> None:
    merger = _merger(partitions=1)
    [spec] = [p for p in _stage1([1.0, 2.0, 31.0], 0, partitions=1) if p.kind == "spec"]
    merger.accept(spec)
    merger.accept(spec.replace(rows=(("cart", (), (9, 9)),)))
    [merged] = merger.ready()
    assert merged.sums.rows[("cart", ())] == (2, 1)  # 1 and 2 s after T0 (T0 ≡ 6 mod 7)
    assert (merger.state.duplicates, merger.state.conflicts) == (1, 1)


def test_spec_is_ready_before_final_and_both_come_once() -> None:
    merger = _merger(partitions=2)
    a = _stage1([1.0, 29.0, 30.5, 40.0], 0, partitions=2)
    b = _stage1([2.0, 31.0, 36.0], 1, partitions=2)
    assert [(p.pane - int(T0 // PANE), p.kind) for p in a] == [(0, "spec"), (0, "final")]
    assert [(p.pane - int(T0 // PANE), p.kind) for p in b] == [(0, "spec"), (0, "final")]
    merger.accept(a[0])
    merger.accept(a[1])
    assert merger.ready() == []  # partition 1 has not passed pane 0's end yet
    merger.accept(b[0])
    [spec] = merger.ready()
    assert spec.kind == "spec"
    assert spec.sums.rows[("cart", ())][0] == 3  # 1 s and 29 s of a, 2 s of b
    merger.accept(b[1])
    [final] = merger.ready()
    assert (final.kind, final.pane) == ("final", spec.pane)
    assert final.sums == spec.sums  # nothing arrived for pane 0 after its end
    assert merger.ready() == []
    merger.accept(b[1])
    assert merger.ready() == []
    assert merger.state.duplicates == 1


def test_an_idle_partition_stops_holding_panes_and_its_late_final_adds_only_what_is_new() -> None:
    merger = _merger(partitions=3, idle_windows=2)  # idle 120 s behind the newest partition
    first = int(T0 // PANE)
    # Partition 2 passes pane 0's end (spec at 33 s), takes one more pane-0 event (29 s, inside
    # the lateness) and falls silent before pane 0's final is due (35 s).
    p2 = _stage1([10.0, 20.0, 33.0, 29.0, 200.0], 2)
    assert [(p.pane - first, p.kind) for p in p2[:1]] == [(0, "spec")]
    quiet, resumed = p2[:1], p2[1:]
    busy = {p: _stage1(_times(random.Random(p), 0.5, 300.0, 1.0), p) for p in (0, 1)}
    both = sorted(busy[0] + busy[1], key=lambda x: x.frontier)
    before = [x for x in both if x.frontier < T0 + 150.0]
    after = [x for x in both if x.frontier >= T0 + 150.0]
    out = _run(merger, quiet + before)
    assert [(m.pane - first, m.kind) for m in out] == [(0, "spec")]  # partition 2 holds pane 0
    out = _run(merger, after)
    final0 = out[0]
    assert (final0.pane - first, final0.kind) == (0, "final")
    assert final0.partitions == (0, 1, 2)  # partition 2's spec stands in for its final
    assert final0.idle == (2,)
    assert final0.sums.rows[("cart", ())][0] == 2 + sum(
        x.rows[0][2][0] for x in busy[0] + busy[1] if x.kind == "final" and x.pane == first
    )
    assert all(m.partitions == (0, 1) for m in out[1:])
    assert max(m.pane for m in out if m.kind == "final") - first == 8  # frontier ~300 s
    # Partition 2 comes back at 200 s: its finals of panes 0 and 1 come back as late, holding
    # only what is new (29 s for pane 0; 33 s for pane 1, never sent); empty panes 2-5 are not.
    late = _run(merger, resumed)
    assert [(m.kind, m.pane - first, m.partitions) for m in late] == [
        ("late", 0, (2,)),
        ("late", 1, (2,)),
    ]
    at29, at33 = (1, int(T0 + 29.0) % 7), (1, int(T0 + 33.0) % 7)  # 4th event, 3rd event
    assert late[0].sums.rows == {("cart", ()): at29, ("cart", MOBILE): at29}
    assert late[1].sums.rows == {("cart", ()): at33, ("cart", WEB): at33}
    assert merger.state.lent == {}
    assert merger.live_partitions() == {0, 1, 2}  # 100 s behind: live again


def test_a_never_seen_partition_holds_panes_until_the_stream_is_idle_windows_old() -> None:
    merger = _merger(partitions=3, idle_windows=2)
    first = int(T0 // PANE)
    streams = [_stage1(_times(random.Random(p), 0.0, 500.0, 1.0), p) for p in (0, 1)]
    early = [x for s in streams for x in s if x.frontier <= T0 + 120.0]
    assert _run(merger, sorted(early, key=lambda x: x.frontier)) == []
    assert merger.live_partitions() == {0, 1, 2}
    rest = [x for s in streams for x in s if T0 + 120.0 < x.frontier <= T0 + 400.0]
    out = _run(merger, sorted(rest, key=lambda x: x.frontier))
    assert out[0].pane == first
    assert out[0].idle == (2,)
    assert merger.live_partitions() == {0, 1}
    last = max(m.pane for m in out if m.kind == "final")
    # Partition 2 starts at 400 s: it is live again, has nothing for panes ending before its first
    # event (they do not wait for it), and holds the later ones until it sends them.
    p2 = _stage1([400.0, 404.0, 436.0, 470.0], 2)
    merger.accept(p2[0])
    tail = [x for s in streams for x in s if x.frontier > T0 + 400.0]
    out = _run(merger, sorted(tail, key=lambda x: x.frontier))
    assert merger.live_partitions() == {0, 1, 2}
    finals = [m.pane - first for m in out if m.kind == "final"]
    assert finals == list(range(last - first + 1, 13))  # up to the pane 2 had passed (436 s)
    out = _run(merger, p2[1:])
    assert [(m.pane - first, m.kind) for m in out][:2] == [(13, "final"), (14, "spec")]
    assert out[0].partitions == (0, 1, 2)


def test_snapshot_and_restore_mid_stream_give_the_same_outputs(three_partitions) -> None:
    _, streams = three_partitions
    arrival = _interleave(streams, random.Random(11))
    reference = _run(_merger(), arrival)
    for cut in (1, 17, len(arrival) // 2, len(arrival) - 3):
        first = _merger()
        out = _run(first, arrival[:cut])
        saved = STATE_CODEC.unpack(STATE_CODEC.pack(first.snapshot()))
        second = _merger()
        second.restore(saved)
        assert second.state == first.state
        assert out + _run(second, arrival[cut:]) == reference, cut


def test_a_late_merge_pending_at_the_checkpoint_survives_it() -> None:
    merger = _merger(partitions=2, idle_windows=1)
    first = int(T0 // PANE)
    quiet = _stage1([5.0, 31.0, 29.0, 300.0], 1, partitions=2)
    busy = _stage1(_times(random.Random(5), 0.0, 200.0, 1.0), 0, partitions=2)
    _run(merger, quiet[:1] + busy)
    [final0] = [x for x in quiet if x.kind == "final" and x.pane == first]
    merger.accept(final0)  # late: pane 0 was merged without partition 1 (idle)
    restored = _merger(partitions=2, idle_windows=1)
    restored.restore(STATE_CODEC.unpack(STATE_CODEC.pack(merger.snapshot())))
    [late] = [m for m in restored.ready() if m.kind == "late"]
    assert late.pane == first
    assert late.sums.rows[("cart", ())][0] == 1  # the 29 s event


def test_partials_of_another_configuration_or_journey_are_not_merged() -> None:
    merger = _merger(partitions=1, fingerprint="cfg")
    [spec, final] = _stage1([1.0, 40.0], 0, partitions=1)
    merger.accept(spec.replace(fingerprint="other"))
    merger.accept(final.replace(partitions=2))
    assert merger.state.rejected == 2
    assert merger.ready() == []
    with pytest.raises(ValueError, match="journey 'loans' sent to 'ecommerce'"):
        merger.accept(spec.replace(journey="loans"))
    merger.accept(spec)
    merger.accept(final)
    assert [m.kind for m in merger.ready()] == ["spec", "final"]


def test_an_empty_pane_merges_to_empty_sums() -> None:
    merger = _merger(partitions=1)
    parts = _stage1([1.0, 95.0], 0, partitions=1)  # panes 1 and 2 pass with no events
    out = _run(merger, parts)
    assert [m.sums == PaneSums() for m in out if m.kind == "final"] == [False, True, True]


def test_flow_and_unknown_events_merge_and_come_back_late_as_what_is_new() -> None:
    # Version-2 content: step flow counts and unknown events are summed over partitions, and an
    # idle partition's late final adds only what its lent spec did not have.
    merger = _merger(partitions=2, idle_windows=2)
    pane = int(T0 // PANE)
    step = "product_view→add_to_cart"

    def part(p: int, kind: str, frontier: float, **content: object) -> Partial:
        return Partial(
            fingerprint="cfg", partition=p, partitions=2, journey="ecommerce", pane=pane,
            kind=kind, frontier=T0 + frontier, first_t=T0, offset=0, **content,  # type: ignore[arg-type]
        )  # fmt: skip

    merger.accept(part(0, "spec", 31.0, flow=((step, WEB, 3, 1),), unknown_events=1))
    merger.accept(part(1, "final", 36.0, flow=((step, WEB, 2, 2), (step, (), 1, 0))))
    merger.accept(part(1, "final", 36.0, flow=((step, WEB, 2, 2), (step, (), 1, 0))).replace(
        pane=pane + 8, frontier=T0 + 270.0
    ))  # fmt: skip
    out = merger.ready()
    final = next(m for m in out if m.kind == "final" and m.pane == pane)
    assert final.idle == (0,)  # partition 0 trails by more than 2 windows: its spec stands in
    assert final.sums.flow == {(step, WEB): (5, 3), (step, ()): (1, 0)}
    assert final.sums.unknown_events == 1
    merger.accept(part(0, "final", 280.0, flow=((step, WEB, 4, 1),), unknown_events=3))
    late = [m for m in merger.ready() if m.kind == "late"]
    assert [(m.pane, m.partitions) for m in late] == [(pane, (0,))]
    assert late[0].sums == PaneSums(flow={(step, WEB): (1, 0)}, unknown_events=2)
