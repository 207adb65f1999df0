"""The pure detector core: event-time windows, sessions, online River models, incident lifecycle.

No Kafka, SQL or HTTP here: the runner feeds events in and publishes/stores what comes out.
"""

from journeywatch.detector.core.calibration import (
    TailCalibrator,
    expected_false_alerts_per_day,
    p_threshold_for_budget,
    score_from_evidence,
)
from journeywatch.detector.core.config import DETECTOR_VERSION, CoreConfig, DetectorOutput
from journeywatch.detector.core.detector import JourneyDetector
from journeywatch.detector.core.scoring import (
    MODEL_VERSION,
    Assessment,
    OnlineScorer,
    PointScore,
    ProfileBaseline,
    SeasonalBaseline,
    SeriesKind,
    SeriesModel,
    score_from_z,
)
from journeywatch.detector.core.sequential import Cusum

__all__ = [
    "DETECTOR_VERSION",
    "MODEL_VERSION",
    "Assessment",
    "CoreConfig",
    "Cusum",
    "DetectorOutput",
    "JourneyDetector",
    "OnlineScorer",
    "PointScore",
    "ProfileBaseline",
    "SeasonalBaseline",
    "SeriesKind",
    "SeriesModel",
    "TailCalibrator",
    "expected_false_alerts_per_day",
    "p_threshold_for_budget",
    "score_from_evidence",
    "score_from_z",
]
