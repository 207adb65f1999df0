"""`python -m journeywatch.<service> --help` prints help instead of serving; bad env is one line."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

SERVICES = ("ingest", "detector", "api")


def _run(module: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", f"journeywatch.{module}", *args],
        capture_output=True,
        text=True,
        timeout=60,  # a server that started instead would hang here
        env={**os.environ, **env},
        check=False,
    )


@pytest.mark.parametrize("service", SERVICES)
def test_help_prints_and_exits(service: str) -> None:
    done = _run(service, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: python -m journeywatch.{service}")
    assert "JOURNEYWATCH_LOG_LEVEL" in done.stdout


@pytest.mark.parametrize("service", SERVICES)
def test_bad_variable_is_one_line_without_traceback(service: str) -> None:
    done = _run(service, JOURNEYWATCH_LOG_LEVEL="verbose")
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"python -m journeywatch.{service}: JOURNEYWATCH_LOG_LEVEL: expected one of DEBUG, "
        "INFO, WARNING, ERROR, CRITICAL, got 'verbose'"
    ]


def test_detector_window_in_minutes() -> None:
    done = _run("detector", JOURNEYWATCH_WINDOW_SECONDS="1m")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.strip() == (
        "python -m journeywatch.detector: JOURNEYWATCH_WINDOW_SECONDS: expected a whole number "
        "of seconds, got '1m'"
    )


def test_detector_stage_is_checked_before_anything_starts() -> None:
    done = _run("detector", "--help")
    assert "--stage {both,sessionize,score}" in done.stdout
    assert "JOURNEYWATCH_DETECTOR_STAGE" in done.stdout
    bad = _run("detector", JOURNEYWATCH_DETECTOR_STAGE="split")
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr
    assert bad.stderr.startswith("python -m journeywatch.detector: JOURNEYWATCH_DETECTOR_STAGE:")
    flag = _run("detector", "--stage", "split")
    assert flag.returncode == 2
    assert "invalid choice: 'split'" in flag.stderr


@pytest.mark.parametrize("service", SERVICES)
def test_bad_journey_file_is_its_problems_without_traceback(service: str, tmp_path: Path) -> None:
    path = tmp_path / "journeys.yaml"
    path.write_text(
        "default_journey: shop\njourneys:\n  shop:\n    stages:\n      - name: browse\n"
        "        touchpoints: [view]\n    steps:\n      - {from: view, to: buy}\n"
    )
    done = _run(service, JOURNEYWATCH_JOURNEYS_FILE=str(path))
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"python -m journeywatch.{service}: {path}:8: journeys.shop.steps[0].to: steps[0] "
        "(view→buy) names unknown touchpoint 'buy'"
    ]
