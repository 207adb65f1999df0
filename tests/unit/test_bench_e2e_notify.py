"""bench.e2e's notification phase: deliveries matched to changes on the topic (no I/O)."""

from __future__ import annotations

import doctest
from types import SimpleNamespace

import bench.e2e
from bench.e2e import Observations, notification_latencies


def test_first_delivery_per_cloudevent_counts_and_backfill_is_not_missing() -> None:
    seen = Observations(
        changes={"ce-1": 100.0, "ce-2": 101.0, "ce-3": 102.0, "ce-4": 103.0},
        backfill={"ce-4"},  # backfill never notifies: not a missed delivery
    )
    requests = [
        SimpleNamespace(body=b'{"id": "ce-1"}', at=100.25, status=500),  # failed attempt
        SimpleNamespace(body=b'{"id": "ce-1"}', at=101.5, status=200),  # the retry delivered
        SimpleNamespace(body=b'{"id": "ce-2"}', at=101.125, status=202),
        SimpleNamespace(body=b'{"id": "ce-2"}', at=130.0, status=200),  # redelivery: once
    ]
    latencies, missing = notification_latencies(seen, requests)
    assert sorted(latencies) == [0.125, 1.5]
    assert missing == ["ce-3"]


def test_docstring_examples() -> None:
    result = doctest.testmod(bench.e2e)
    assert result.attempted > 0
    assert result.failed == 0
