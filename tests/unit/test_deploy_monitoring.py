"""Static checks of the monitoring config: alert rules follow conventions and point at runbook
sections that exist; every metric in the rules and the Grafana dashboard is a real metric name."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
RULES_DIR = REPO / "deploy" / "prometheus" / "rules"
DASHBOARDS_DIR = REPO / "deploy" / "grafana" / "dashboards"
DATASOURCES_DIR = REPO / "deploy" / "grafana" / "provisioning" / "datasources"
RUNBOOK = REPO / "docs" / "RUNBOOK.md"
HELPERS = REPO / "docs" / "HELPERS.md"

# Series Prometheus itself makes; any other name must be one of ours.
PROMETHEUS_BUILTINS = {"up", "ALERTS", "ALERTS_FOR_STATE"}
PROMQL_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right",
    "and", "or", "unless", "offset", "bool", "inf", "nan",
}  # fmt: skip
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def documented_metric_names() -> set[str]:
    """The metric names listed in docs/HELPERS.md's "Prometheus metric names" section."""
    text = HELPERS.read_text()
    section = text.split("## Prometheus metric names", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"\b(journeywatch_[a-z0-9_]+)", section))


def metric_names_in(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (functions, keywords and label names removed)."""
    expr = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)  # string literals
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges and subqueries
    # Label lists (`sum by (job) (...)` leaves `sum (...)`, still a call).
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    expr = re.sub(r"\$\{?\w+\}?", "", expr)  # Grafana variables
    names = set()
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", expr):
        name, call = match.group(1), match.group(2)
        if call or name in PROMQL_KEYWORDS or re.fullmatch(r"\d+[smhdwy]", name):
            continue
        names.add(name)
    return names


def base_metric(name: str, known: set[str]) -> str:
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix) and name.removesuffix(suffix) in known:
            return name.removesuffix(suffix)
    return name


def alert_rules() -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = []
    for path in sorted(RULES_DIR.glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            rules.extend(rule for rule in group["rules"] if "alert" in rule)
    return rules


def github_anchors(markdown: str) -> set[str]:
    """Anchors GitHub generates for the headings of a Markdown document."""
    anchors = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*$", markdown, flags=re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


def dashboard_panels() -> list[tuple[str, dict[str, Any]]]:
    panels = []
    for path in sorted(DASHBOARDS_DIR.glob("*.json")):
        stack = list(json.loads(path.read_text())["panels"])
        while stack:
            panel = stack.pop()
            stack.extend(panel.get("panels", []))
            panels.append((path.name, panel))
    return panels


def test_metric_name_extraction() -> None:
    expr = (
        'sum by (job, le) (rate(journeywatch_x_seconds_bucket{status=~"5.."}[5m])) '
        "/ on (job) group_left max(up offset 10m) or absent(ALERTS) > 0.05 and $__rate_interval"
    )
    assert metric_names_in(expr) == {"journeywatch_x_seconds_bucket", "up", "ALERTS"}


def test_helpers_lists_metric_names() -> None:
    names = documented_metric_names()
    assert "journeywatch_detector_open_anomalies" in names
    assert len(names) >= 20


ALERTS = alert_rules()


def test_rules_exist() -> None:
    assert {rule["alert"] for rule in ALERTS} >= {
        "JourneyWatchCriticalAnomalyOpen",
        "JourneyWatchDetectorDown",
        "JourneyWatchConsumerLagGrowing",
        "JourneyWatchIngestRejectsHigh",
        "JourneyWatchIngest5xx",
        "JourneyWatchDLQNonEmpty",
        "JourneyWatchDataQuality",
        "JourneyWatchApi5xx",
    }
    assert len({rule["alert"] for rule in ALERTS}) == len(ALERTS), "duplicate alert names"


@pytest.mark.parametrize("rule", ALERTS, ids=[r["alert"] for r in ALERTS])
def test_alert_rule_conventions(rule: dict[str, Any]) -> None:
    assert re.fullmatch(r"JourneyWatch[A-Z][A-Za-z0-9]+", rule["alert"])
    assert re.fullmatch(r"\d+[smh]", str(rule.get("for", ""))), "every alert has a for:"
    assert rule["labels"]["severity"] in {"critical", "warning"}
    annotations = rule["annotations"]
    assert annotations["summary"].strip()
    assert annotations["description"].strip()
    assert annotations["runbook_url"] == f"docs/RUNBOOK.md#{rule['alert'].lower()}"


@pytest.mark.parametrize("rule", ALERTS, ids=[r["alert"] for r in ALERTS])
def test_runbook_section_for_every_alert(rule: dict[str, Any]) -> None:
    text = RUNBOOK.read_text()
    anchor = rule["annotations"]["runbook_url"].split("#", 1)[1]
    assert anchor in github_anchors(text)
    section = text.split(f"## {rule['alert']}\n", 1)[1].split("\n## ", 1)[0]
    for part in ("What it means", "First checks", "Likely causes", "Resolve"):
        assert f"**{part}" in section, f"{rule['alert']}: runbook section lacks {part!r}"


@pytest.mark.parametrize("rule", ALERTS, ids=[r["alert"] for r in ALERTS])
def test_rule_metric_names_are_documented(rule: dict[str, Any]) -> None:
    known = documented_metric_names()
    for name in metric_names_in(rule["expr"]):
        assert base_metric(name, known) in known | PROMETHEUS_BUILTINS, name


def test_anomaly_alerts_carry_labels_and_api_link() -> None:
    for rule in ALERTS:
        if "journeywatch_detector_open_anomalies" not in rule["expr"]:
            continue
        assert "by (journey, stage, type)" in rule["expr"]
        url = rule["annotations"]["api_url"]
        assert url.startswith("http://127.0.0.1:8000/v1/anomalies?")
        assert "journey={{ $labels.journey }}" in url
        assert "stage={{ $labels.stage }}" in url


def test_dashboards_are_valid_and_use_the_provisioned_datasource() -> None:
    uids = set()
    for source in DATASOURCES_DIR.glob("*.yml"):
        uids |= {ds["uid"] for ds in yaml.safe_load(source.read_text())["datasources"]}
    dashboards = sorted(DASHBOARDS_DIR.glob("*.json"))
    assert dashboards
    seen = set()
    for path in dashboards:
        dashboard = json.loads(path.read_text())
        assert dashboard["uid"] not in seen
        seen.add(dashboard["uid"])
        assert dashboard["title"]
    for name, panel in dashboard_panels():
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] in uids, (name, panel["title"])
        assert panel["targets"], (name, panel["title"])
        grid = panel["gridPos"]
        assert grid["x"] >= 0
        assert grid["x"] + grid["w"] <= 24


def test_dashboard_panels_use_documented_metric_names() -> None:
    known = documented_metric_names()
    used = set()
    for name, panel in dashboard_panels():
        for target in panel.get("targets", []):
            for metric in metric_names_in(target["expr"]):
                base = base_metric(metric, known)
                assert base in known | PROMETHEUS_BUILTINS, (name, panel["title"], metric)
                used.add(base)
    # The panels the on-call brief asks for are there.
    assert {
        "journeywatch_ingest_events_accepted_total",
        "journeywatch_ingest_events_rejected_total",
        "journeywatch_detector_consumer_lag_messages",
        "journeywatch_detector_open_anomalies",
        "journeywatch_detector_stage_conversion_rate",
        "journeywatch_detector_stage_abandonment_rate",
        "journeywatch_detector_window_close_delay_seconds",
    } <= used
