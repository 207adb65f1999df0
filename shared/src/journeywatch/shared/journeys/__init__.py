"""Journey definitions: stages, touchpoints, conversion goals, abandonment rules and aliases."""

from journeywatch.shared.journeys.loader import BUNDLED_JOURNEYS, load_journeys
from journeywatch.shared.journeys.model import (
    AbandonmentRule,
    ConversionGoal,
    Journey,
    JourneyCatalog,
    JourneyConfigError,
    Stage,
    Step,
    UnknownTouchpoint,
)

__all__ = [
    "BUNDLED_JOURNEYS",
    "AbandonmentRule",
    "ConversionGoal",
    "Journey",
    "JourneyCatalog",
    "JourneyConfigError",
    "Stage",
    "Step",
    "UnknownTouchpoint",
    "load_journeys",
]
