"""`journeywatch journeys validate` and `simulate --journeys`: a team's own journey file."""

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from journeywatch.cli.journeys import validate_command
from journeywatch.cli.simulate import SimulateOptions, build_simulator
from journeywatch.cli.simulator import Simulator, scenario
from journeywatch.ingest.validation import Accepted, EventValidator
from journeywatch.shared.journeys import example_path, load_journeys

EXAMPLE = example_path("subscription.yaml")
START = datetime(2026, 1, 5, 9, tzinfo=UTC)
NOW = datetime(2026, 1, 5, 12, tzinfo=UTC)


def test_validate_prints_a_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert validate_command(EXAMPLE) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{EXAMPLE}: valid, 1 journey (default subscription)"
    assert out[1] == (
        "subscription: 5 stages, 17 touchpoints, 6 steps, 2 goals, 2 abandonment rules, 15 aliases"
    )
    assert out[2] == (
        "  stages: discovery (4) → signup (3) → onboarding (3) → checkout (3) → retention (4)"
    )
    assert "    payment_method_added→subscription_activated within 2m" in out
    assert "  goal trial_to_paid: trial_started → subscription_activated within 14d" in out


def test_validate_prints_each_problem_with_file_line_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(
        EXAMPLE.read_text().replace("to: subscription_activated, horizon", "to: paid, horizon")
    )
    assert validate_command(path) == 1
    err = capsys.readouterr().err.splitlines()
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if "to: paid" in text)
    assert err == [
        f"{path}:{line}: journeys.subscription.steps[5].to: steps[5] "
        "(payment_method_added→paid) names unknown touchpoint 'paid'",
        f"{path}: 1 problem",
    ]


def test_validate_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert validate_command(tmp_path / "nope.yaml") == 1
    assert (
        "nope.yaml: cannot read journey file: No such file or directory" in capsys.readouterr().err
    )


def _simulate(**kwargs: object) -> list[dict[str, object]]:
    options = SimulateOptions(
        rate=1.0,
        rate_unit="sessions",
        mode="compressed",
        start=START,
        duration=3600,
        journeys_file=EXAMPLE,
        **kwargs,  # type: ignore[arg-type]
    )
    return list(build_simulator(options, NOW).events())


def test_simulated_sessions_walk_the_custom_journey_and_pass_ingest() -> None:
    events = _simulate(seed=4)
    journey = load_journeys(EXAMPLE).get(None)
    touchpoints = Counter(str(e["touchpoint"]) for e in events)
    assert {str(e["journey"]) for e in events} == {"subscription"}
    assert set(touchpoints) <= set(journey.stage_of)
    # every step of the funnel happens, each less often than the one before
    funnel = [journey.steps[0].from_touchpoint, *(s.to_touchpoint for s in journey.steps)]
    counts = [touchpoints[tp] for tp in funnel]
    assert all(c > 0 for c in counts), counts
    assert counts[1:] == sorted(counts[1:], reverse=True), counts
    validator = EventValidator(
        load_journeys(EXAMPLE), max_event_age_seconds=10**9, max_event_future_seconds=10**9
    )
    received = datetime(2026, 1, 5, 12, 30, tzinfo=UTC)
    results = [validator.validate(e, i, received) for i, e in enumerate(events[:2000])]
    assert all(isinstance(r, Accepted) for r in results)


def test_payment_outage_hits_the_last_step_of_a_custom_journey() -> None:
    normal = Counter(str(e["touchpoint"]) for e in _simulate(seed=5))
    outage = [scenario("payment_outage", offset=0, duration=3600, channel=None)]
    broken = Counter(str(e["touchpoint"]) for e in _simulate(seed=5, scenarios=outage))
    assert broken["subscription_activated"] == 0 < normal["subscription_activated"]
    assert broken["payment_method_added"] > 0.8 * normal["payment_method_added"]


def test_rate_in_events_counts_the_custom_journeys_events() -> None:
    options = SimulateOptions(
        rate=5.0, mode="compressed", start=START, duration=1800, journeys_file=EXAMPLE, seed=2
    )
    events = list(build_simulator(options, NOW).events())
    assert 0.8 * 9000 < len(events) < 1.2 * 9000  # the daily cycle is ~1 at 09:00-09:30


def test_scenarios_that_need_the_shop_are_refused() -> None:
    journey = load_journeys(EXAMPLE).get(None)
    with pytest.raises(ValueError, match="bot_surge needs the built-in e-commerce journey"):
        Simulator(START, 1.0, scenarios=[scenario("bot_surge", offset=0)], definition=journey)


def test_unknown_journey_name() -> None:
    with pytest.raises(ValueError, match=r"no journey 'signup' \(it defines subscription\)"):
        _simulate(journey="signup")
