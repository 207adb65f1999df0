"""Kafka topic names: the product's external contract (see docs/events.md)."""

from typing import Final

TOUCHPOINTS: Final = "journeywatch.touchpoints"
TOUCHPOINTS_DLQ: Final = "journeywatch.touchpoints.dlq"
ANOMALIES: Final = "journeywatch.anomalies"
FEEDBACK: Final = "journeywatch.feedback"

ALL: Final = (TOUCHPOINTS, TOUCHPOINTS_DLQ, ANOMALIES, FEEDBACK)

# Kafka record header marking replayed history (value: the replay id); see docs/SIMULATOR.md.
BACKFILL_HEADER: Final = "journeywatch-backfill"
