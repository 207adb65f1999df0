"""`journeywatch run` starts the notifier only when a notification target is configured."""

from __future__ import annotations

from pathlib import Path

import pytest

from journeywatch.cli.run import STOP_ORDER, StackConfig, service_specs


def test_no_target_no_notifier(tmp_path: Path) -> None:
    config = StackConfig.from_env({}, tmp_path)
    assert not config.notifier
    assert "notifier" not in [s.name for s in service_specs(config, python="py")]


@pytest.mark.parametrize(
    "variable",
    [
        "JOURNEYWATCH_NOTIFY_WEBHOOK_URLS",
        "JOURNEYWATCH_NOTIFY_SLACK_WEBHOOK_URL",
        "JOURNEYWATCH_NOTIFY_PAGERDUTY_ROUTING_KEY",
    ],
)
def test_any_target_starts_the_notifier(tmp_path: Path, variable: str) -> None:
    env = {variable: "https://example.com/x", "JOURNEYWATCH_NOTIFIER_METRICS_PORT": "19103"}
    config = StackConfig.from_env(env, tmp_path)
    assert config.notifier
    spec = next(s for s in service_specs(config, python="py") if s.name == "notifier")
    assert list(spec.argv) == ["py", "-m", "journeywatch.notifier"]
    assert spec.ready_url == "http://127.0.0.1:19103/metrics"
    assert spec.restartable
    assert "notifier" in STOP_ORDER


def test_blank_target_is_not_a_target(tmp_path: Path) -> None:
    assert not StackConfig.from_env({"JOURNEYWATCH_NOTIFY_WEBHOOK_URLS": "  "}, tmp_path).notifier


def test_a_bad_notifier_variable_stops_run_before_anything_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from journeywatch.cli.run import check_environment

    monkeypatch.setenv("JOURNEYWATCH_NOTIFY_MIN_SEVERITY", "urgent")
    problems = check_environment({"JOURNEYWATCH_NOTIFY_MIN_SEVERITY": "urgent"}, tmp_path)
    assert [p for p in problems if "NOTIFY" in p] == [
        "JOURNEYWATCH_NOTIFY_MIN_SEVERITY: input should be 'info', 'warning' or 'critical', "
        "got 'urgent'"
    ]
