"""Journey definitions: the bundled e-commerce journey, alias mapping, and config errors that point at the line."""

from pathlib import Path

import pytest

from journeywatch.shared.journeys import JourneyConfigError, UnknownTouchpoint, load_journeys

CONTRACT_TOUCHPOINTS = [
    "ad_click", "landing_view", "email_open", "product_search", "product_view", "add_to_cart",
    "cart_view", "checkout_started", "payment_submitted", "purchase", "review_submitted",
    "support_contact", "refund_requested",
]  # fmt: skip


def test_bundled_journey_has_contract_stages_and_touchpoints() -> None:
    catalog = load_journeys()
    journey = catalog.get(None)
    assert journey.name == "ecommerce"
    assert journey.stage_names == ("awareness", "consideration", "purchase", "post_purchase")
    for touchpoint in CONTRACT_TOUCHPOINTS:
        assert touchpoint in journey.stage_of
    assert journey.stage_of["add_to_cart"] == "consideration"
    assert journey.stage_of["purchase"] == "purchase"
    assert journey.stage_index["post_purchase"] == 3


@pytest.mark.parametrize(
    ("external", "touchpoint"),
    [
        ("Products Searched", "product_search"),
        ("Product Viewed", "product_view"),
        ("Product Added", "add_to_cart"),
        ("Cart Viewed", "cart_view"),
        ("Checkout Started", "checkout_started"),
        ("Payment Info Entered", "payment_submitted"),
        ("Order Completed", "purchase"),
        ("Order Refunded", "refund_requested"),
        ("order completed", "purchase"),
        ("add_to_cart", "add_to_cart"),
        ("Add To Cart", "add_to_cart"),
    ],
)
def test_segment_names_resolve_through_aliases(external: str, touchpoint: str) -> None:
    assert load_journeys().get("ecommerce").resolve(external) == touchpoint


def test_unknown_touchpoint_is_explained() -> None:
    with pytest.raises(UnknownTouchpoint, match="'Spaceship Launched' is neither a touchpoint"):
        load_journeys().get(None).resolve("Spaceship Launched")


def test_yaml_error_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "journeys.yaml"
    path.write_text("default_journey: shop\njourneys:\n  shop: [unclosed\n")
    with pytest.raises(JourneyConfigError, match=rf"{path}:\d+: invalid YAML"):
        load_journeys(path)


def test_validation_error_names_line_key_and_problem(tmp_path: Path) -> None:
    path = tmp_path / "journeys.yaml"
    path.write_text(
        "default_journey: shop\n"
        "journeys:\n"
        "  shop:\n"
        "    stages:\n"
        "      - name: browse\n"
        "        touchpoints: [view]\n"
        "    conversions:\n"
        "      - name: view_to_buy\n"
        "        from: view\n"
        "        to: buy\n"
    )
    with pytest.raises(JourneyConfigError) as info:
        load_journeys(path)
    message = str(info.value)
    # The line and key of the bad reference itself, not just the journey it is in.
    assert message.splitlines()[1:] == [
        f"  {path}:10: journeys.shop.conversions[0].to: conversion 'view_to_buy' names "
        "unknown touchpoint 'buy'"
    ]


def test_bad_field_points_at_its_line(tmp_path: Path) -> None:
    path = tmp_path / "journeys.yaml"
    path.write_text(
        "default_journey: shop\n"
        "journeys:\n"
        "  shop:\n"
        "    stages:\n"
        "      - name: Browse Stage\n"
        "        touchpoints: [view]\n"
    )
    with pytest.raises(
        JourneyConfigError,
        match=rf"{path}:5: journeys.shop.stages\[0\].name: expected a lowercase name .*"
        r"got 'Browse Stage'",
    ):
        load_journeys(path)


def test_toml_config_loads(tmp_path: Path) -> None:
    path = tmp_path / "journeys.toml"
    path.write_text(
        'default_journey = "shop"\n'
        "[journeys.shop]\n"
        'stages = [{name = "browse", touchpoints = ["view"]}, {name = "buy", touchpoints = ["pay"]}]\n'
        'aliases = {"Order Completed" = "pay"}\n'
    )
    journey = load_journeys(path).get("shop")
    assert journey.resolve("Order Completed") == "pay"
    assert journey.stage_of["pay"] == "buy"


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(JourneyConfigError, match="cannot read journey file"):
        load_journeys(tmp_path / "absent.yaml")


def test_bundled_journey_lists_its_funnel_steps_with_horizons() -> None:
    journey = load_journeys().get(None)
    assert [(s.name, s.horizon_seconds) for s in journey.steps] == [
        ("landing_view→product_view", 600),
        ("product_view→add_to_cart", 1800),
        ("add_to_cart→checkout_started", 1800),
        ("checkout_started→payment_submitted", 900),
        ("payment_submitted→purchase", 300),
    ]


_STEPLESS = """
default_journey: j
journeys:
  j:
    stages:
      - {name: a, touchpoints: [visit, look]}
      - {name: b, touchpoints: [buy]}
    conversions:
      - {name: look_to_buy, from: look, to: buy, within_seconds: 600}
"""


def test_steps_default_to_the_stage_order_and_the_conversion_goals(tmp_path: Path) -> None:
    path = tmp_path / "j.yaml"
    path.write_text(_STEPLESS)
    steps = load_journeys(path).get(None).steps
    assert [(s.name, s.horizon_seconds) for s in steps] == [
        ("visit→buy", 1800),
        ("look→buy", 600),
    ]


@pytest.mark.parametrize(
    ("step", "message"),
    [
        ("{from: visit, to: nope}", "steps[0] (visit→nope) names unknown touchpoint 'nope'"),
        ("{from: look, to: look}", "steps[0] goes from 'look' to itself"),
        ("{from: buy, to: visit}", "goes backwards"),
        ("{from: visit, to: buy, horizon_seconds: 0}", "horizon_seconds"),
    ],
)
def test_invalid_steps_are_named_in_the_error(tmp_path: Path, step: str, message: str) -> None:
    path = tmp_path / "j.yaml"
    path.write_text(_STEPLESS + f"    steps:\n      - {step}\n")
    with pytest.raises(JourneyConfigError) as raised:
        load_journeys(path)
    assert message in str(raised.value)


def test_a_duplicate_step_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "j.yaml"
    path.write_text(
        _STEPLESS + "    steps:\n      - {from: visit, to: buy}\n      - {from: visit, to: buy}\n"
    )
    with pytest.raises(JourneyConfigError, match="defined twice"):
        load_journeys(path)
