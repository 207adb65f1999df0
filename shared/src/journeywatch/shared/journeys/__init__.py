"""Journey definitions: stages, touchpoints, conversion goals, abandonment rules and aliases."""

from journeywatch.shared.journeys.loader import (
    BUNDLED_JOURNEYS,
    EXAMPLES,
    example_path,
    load_journeys,
)
from journeywatch.shared.journeys.model import (
    AbandonmentRule,
    ConversionGoal,
    Journey,
    JourneyCatalog,
    JourneyConfigError,
    JourneyFieldError,
    Stage,
    Step,
    UnknownTouchpoint,
)

__all__ = [
    "BUNDLED_JOURNEYS",
    "EXAMPLES",
    "AbandonmentRule",
    "ConversionGoal",
    "Journey",
    "JourneyCatalog",
    "JourneyConfigError",
    "JourneyFieldError",
    "Stage",
    "Step",
    "UnknownTouchpoint",
    "example_path",
    "load_journeys",
]
