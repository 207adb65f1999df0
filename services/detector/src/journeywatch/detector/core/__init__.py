"""The pure detector core: event-time windows, sessions, online River models, incident lifecycle.

No Kafka, SQL or HTTP here: the runner feeds events in and publishes/stores what comes out.
"""

from journeywatch.detector.core.config import DETECTOR_VERSION, CoreConfig, DetectorOutput
from journeywatch.detector.core.detector import JourneyDetector
from journeywatch.detector.core.scoring import (
    MODEL_VERSION,
    OnlineScorer,
    SeasonalBaseline,
    SeriesKind,
    SeriesModel,
    score_from_z,
)

__all__ = [
    "DETECTOR_VERSION",
    "MODEL_VERSION",
    "CoreConfig",
    "DetectorOutput",
    "JourneyDetector",
    "OnlineScorer",
    "SeasonalBaseline",
    "SeriesKind",
    "SeriesModel",
    "score_from_z",
]
