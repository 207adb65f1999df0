"""The runner's persist order under a crash at every step: nothing lost on the topic, nothing doubled in the store."""

from __future__ import annotations

import pytest

from tests.unit.detector_streams import catalog
from tests.unit.runner_fakes import (
    QUICK_CONFIG,
    Crash,
    FakeBroker,
    FakePublisher,
    FakeStore,
    Faults,
    drain,
    make_runner,
    quick_stream,
    start,
)

CATALOG = catalog(60)


async def run_through(faults: Faults) -> tuple[FakeStore, FakePublisher, int]:
    """Run the stream once, crashing where `faults` says; restart after a crash; return the end state."""
    broker = FakeBroker()
    # Twenty quiet minutes, a three-minute traffic surge, eight quiet minutes: open → resolve.
    broker.produce(quick_stream(31, surge=(20, 21, 22)))
    store, publisher = FakeStore(faults=faults), FakePublisher(faults=faults)
    restarts = 0
    while True:
        runner, consumer = make_runner(broker, store, publisher, CATALOG, QUICK_CONFIG)
        try:
            await start(runner, consumer)
            await drain(runner, consumer)
            return store, publisher, restarts
        except Crash:
            restarts += 1
            assert restarts < 5


@pytest.fixture(scope="module")
def reference() -> list[tuple[str, int]]:
    import asyncio

    _, publisher, _ = asyncio.run(run_through(Faults()))
    return publisher.topic


def test_the_reference_run_opens_and_resolves_an_incident(reference) -> None:
    sequences: dict[str, list[int]] = {}
    for anomaly_id, seq in reference:
        sequences.setdefault(anomaly_id, []).append(seq)
    assert len(reference) >= 3
    assert any(seqs[0] == 0 and len(seqs) >= 2 for seqs in sequences.values())


POINTS = [
    "before_store",
    "after_store",
    "before_publish",
    "after_publish",
    "before_mark",
    "after_mark",
    "before_commit",
    "after_commit",
]


@pytest.mark.parametrize("at", [1, 2])
@pytest.mark.parametrize("point", POINTS)
async def test_a_crash_at_any_step_loses_and_doubles_nothing(
    point: str, at: int, reference
) -> None:
    faults = Faults(point=point, at=at)
    store, publisher, restarts = await run_through(faults)
    assert faults.fired, faults.hits
    assert restarts == 1
    # Every lifecycle change reached the topic at least once, in order per incident …
    assert set(publisher.topic) == set(reference)
    for anomaly_id in {a for a, _ in reference}:
        seqs = [s for a, s in publisher.topic if a == anomaly_id]
        assert sorted(set(seqs)) == [s for a, s in reference if a == anomaly_id]
    # … the store holds each exactly once, and nothing is left unpublished.
    assert sorted(store.events) == sorted(reference)
    assert len(store.events) == len(set(store.events))
    assert not await store.pending_changes()
