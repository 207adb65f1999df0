"""The traffic simulator: seeded e-commerce sessions and injectable incident scenarios."""

from journeywatch.cli.simulator.model import (
    SHOP_CHANNEL_MIX,
    Funnel,
    Profile,
    Simulator,
    daily_factor,
    mean_events_per_session,
    shop_profile,
    touchpoints_per_session,
    weekly_factor,
)
from journeywatch.cli.simulator.scenarios import KINDS, Effects, Scenario, parse_scenario, scenario

__all__ = [
    "KINDS",
    "SHOP_CHANNEL_MIX",
    "Effects",
    "Funnel",
    "Profile",
    "Scenario",
    "Simulator",
    "daily_factor",
    "mean_events_per_session",
    "parse_scenario",
    "scenario",
    "shop_profile",
    "touchpoints_per_session",
    "weekly_factor",
]
