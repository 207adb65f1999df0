"""Journey definitions: stages, touchpoints, conversion goals, abandonment rules and aliases."""

from journeywatch.shared.journeys.model import (
    AbandonmentRule,
    ConversionGoal,
    Journey,
    JourneyCatalog,
    JourneyConfigError,
    Stage,
    UnknownTouchpoint,
)
from journeywatch.shared.journeys.loader import BUNDLED_JOURNEYS, load_journeys

__all__ = [
    "BUNDLED_JOURNEYS",
    "AbandonmentRule",
    "ConversionGoal",
    "Journey",
    "JourneyCatalog",
    "JourneyConfigError",
    "Stage",
    "UnknownTouchpoint",
    "load_journeys",
]
