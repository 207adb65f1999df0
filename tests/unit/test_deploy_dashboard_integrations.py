"""The overview dashboard graphs issue 12's signals: ignored Segment calls and the notifier."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DASHBOARD = (
    Path(__file__).resolve().parents[2] / "deploy/grafana/dashboards/journeywatch-overview.json"
)


def panels() -> list[dict[str, Any]]:
    return [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] != "row"]


def exprs_of(title_part: str) -> list[str]:
    found = [p for p in panels() if title_part in p["title"]]
    assert len(found) == 1, title_part
    return [t["expr"] for t in found[0]["targets"]]


def test_ignored_events_are_graphed_beside_accepted_and_rejected() -> None:
    exprs = exprs_of("Events accepted / ignored / rejected")
    assert any("journeywatch_ingest_events_ignored_total" in e and "(reason)" in e for e in exprs)
    assert any("journeywatch_ingest_events_rejected_total" in e for e in exprs)


def test_notifier_deliveries_and_latency_are_graphed() -> None:
    deliveries = exprs_of("Notifier deliveries")
    assert any("journeywatch_notifier_deliveries_total" in e and "outcome" in e for e in deliveries)
    latency = exprs_of("Notification latency")
    assert any("journeywatch_notifier_lag_seconds_bucket" in e for e in latency)
    assert any("journeywatch_notifier_delivery_seconds_bucket" in e for e in latency)


def test_panels_do_not_overlap() -> None:
    cells: set[tuple[int, int]] = set()
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        g = panel["gridPos"]
        mine = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not cells & mine, panel["title"]
        cells |= mine
