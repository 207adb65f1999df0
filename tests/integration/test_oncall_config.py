"""The shipped Prometheus and Alertmanager configs pass the real tools: promtool and amtool."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.integration.oncall_support import (
    ALERTMANAGER_CONFIG,
    DEPLOY,
    PROMETHEUS_CONFIG,
    RULES_DIR,
    require_prometheus,
)

pytestmark = pytest.mark.integration

RULE_TESTS_DIR = DEPLOY / "prometheus" / "tests"


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture(scope="module", autouse=True)
def _tools() -> None:
    require_prometheus()


def test_promtool_check_config() -> None:
    proc = run("promtool", "check", "config", PROMETHEUS_CONFIG)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # The config's relative rule_files glob really finds the shipped rules.
    assert "SUCCESS: 1 rule files found" in proc.stdout + proc.stderr


def test_promtool_check_rules() -> None:
    proc = run("promtool", "check", "rules", *sorted(RULES_DIR.glob("*.yml")))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_promtool_rule_unit_tests() -> None:
    """deploy/prometheus/tests: every alert fires on given series and resolves."""
    proc = run("promtool", "test", "rules", *sorted(RULE_TESTS_DIR.glob("*.yml")))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_alert_has_a_promtool_unit_test() -> None:
    alerts = {
        rule["alert"]
        for path in RULES_DIR.glob("*.yml")
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    tested = {
        case["alertname"]
        for path in RULE_TESTS_DIR.glob("*.yml")
        for test in yaml.safe_load(path.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")  # a case that expects the alert to fire
    }
    assert alerts - tested == set()


def test_amtool_check_config() -> None:
    proc = run("amtool", "check-config", ALERTMANAGER_CONFIG)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["severity=critical", "alertname=JourneyWatchCriticalAnomalyOpen"], "pager"),
        (["severity=warning", "alertname=JourneyWatchConsumerLagGrowing"], "chat"),
        (["alertname=SomethingWithoutSeverity"], "chat"),
    ],
)
def test_amtool_routes(labels: list[str], receiver: str) -> None:
    proc = run(
        "amtool",
        "config",
        "routes",
        "test",
        f"--config.file={ALERTMANAGER_CONFIG}",
        f"--verify.receivers={receiver}",
        *labels,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
