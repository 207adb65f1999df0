"""Journey files as people write them: every error has its file, line and key; examples load."""

from pathlib import Path

import pytest

from journeywatch.shared.journeys import (
    EXAMPLES,
    JourneyConfigError,
    example_path,
    load_journeys,
)

HEAD = "default_journey: shop\njourneys:\n  shop:\n"
STAGES = (
    "    stages:\n"
    "      - name: browse\n"
    "        touchpoints: [view, search]\n"
    "      - name: buy\n"
    "        touchpoints: [pay, paid]\n"
)


def _problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "journeys.yaml"
    path.write_text(text)
    with pytest.raises(JourneyConfigError) as info:
        load_journeys(path)
    return [line.strip().removeprefix(f"{path}:") for line in str(info.value).splitlines()[1:]]


def test_subscription_example_defines_a_whole_funnel() -> None:
    assert EXAMPLES == ("subscription.yaml",)
    catalog = load_journeys(example_path("subscription.yaml"))
    journey = catalog.get(None)
    assert journey.name == "subscription"
    assert journey.stage_names == ("discovery", "signup", "onboarding", "checkout", "retention")
    assert [step.name for step in journey.steps] == [
        "pricing_view→signup_started",
        "signup_started→email_verified",
        "email_verified→trial_started",
        "trial_started→plan_selected",
        "plan_selected→payment_method_added",
        "payment_method_added→subscription_activated",
    ]
    assert journey.steps[-1].horizon_seconds == 120
    assert journey.resolve("Subscription Started") == "subscription_activated"
    assert {g.name: g.within_seconds for g in journey.conversions}["trial_to_paid"] == 14 * 86400


def test_step_to_an_unknown_touchpoint_points_at_the_step_key(tmp_path: Path) -> None:
    text = (
        HEAD + STAGES + "    steps:\n      - {from: view, to: pay}\n      - {from: pay, to: payd}\n"
    )
    assert _problems(tmp_path, text) == [
        "11: journeys.shop.steps[1].to: steps[1] (pay→payd) names unknown touchpoint 'payd'"
    ]


def test_backwards_step_and_misspelled_key(tmp_path: Path) -> None:
    text = HEAD + STAGES + "    steps:\n      - {from: pay, to: view, horizon: 60}\n"
    assert _problems(tmp_path, text) == [
        "10: journeys.shop.steps[0].horizon: unknown key (docs/JOURNEYS.md lists the keys)"
    ]
    text = HEAD + STAGES + "    steps:\n      - {from: pay, to: view}\n"
    assert _problems(tmp_path, text) == [
        "10: journeys.shop.steps[0].to: steps[0] (pay→view) goes backwards: stage 'browse' "
        "comes before 'buy'"
    ]


def test_touchpoint_in_two_stages_points_at_the_second(tmp_path: Path) -> None:
    text = HEAD + STAGES.replace("[pay, paid]", "[pay, view]")
    assert _problems(tmp_path, text) == [
        "8: journeys.shop.stages[1].touchpoints[1]: touchpoint 'view' is in both stage "
        "'browse' and stage 'buy'"
    ]


def test_duplicate_yaml_key_is_an_error_not_a_silent_override(tmp_path: Path) -> None:
    text = HEAD + STAGES + "    aliases:\n      Paid: paid\n      Paid: pay\n"
    assert _problems(tmp_path, text) == [
        "11: journeys.shop.aliases.Paid: duplicate key (the later one would silently win)"
    ]


def test_missing_key_and_bad_horizon(tmp_path: Path) -> None:
    text = HEAD + STAGES + "    abandonment:\n      - name: unpaid\n        started_by: pay\n"
    assert _problems(tmp_path, text) == [
        "10: journeys.shop.abandonment[0].completed_by: required key is missing"
    ]
    text = HEAD + STAGES + "    steps:\n      - {from: view, to: pay, horizon_seconds: 2d}\n"
    problems = _problems(tmp_path, text)
    assert problems == [
        "10: journeys.shop.steps[0].horizon_seconds: Input should be a valid integer, unable "
        "to parse string as an integer, got '2d'"
    ]


def test_default_journey_that_does_not_exist(tmp_path: Path) -> None:
    text = HEAD.replace("default_journey: shop", "default_journey: store") + STAGES
    assert _problems(tmp_path, text) == [
        "1: default_journey: default_journey 'store' is not among the journeys (shop)"
    ]


def test_toml_errors_name_the_key(tmp_path: Path) -> None:
    path = tmp_path / "journeys.toml"
    path.write_text(
        'default_journey = "shop"\n[journeys.shop]\n'
        '[[journeys.shop.stages]]\nname = "browse"\ntouchpoints = ["view"]\n'
        '[journeys.shop.aliases]\n"Viewed" = "seen"\n'
    )
    with pytest.raises(JourneyConfigError) as info:
        load_journeys(path)
    assert str(info.value).splitlines()[1].strip() == (
        f"{path}: journeys.shop.aliases.Viewed: alias 'Viewed' maps to unknown touchpoint 'seen'"
    )
