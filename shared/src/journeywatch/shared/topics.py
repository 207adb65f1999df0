"""Kafka topic names: the product's external contract (see docs/events.md)."""

from typing import Final

TOUCHPOINTS: Final = "journeywatch.touchpoints"
TOUCHPOINTS_DLQ: Final = "journeywatch.touchpoints.dlq"
ANOMALIES: Final = "journeywatch.anomalies"
FEEDBACK: Final = "journeywatch.feedback"

ALL: Final = (TOUCHPOINTS, TOUCHPOINTS_DLQ, ANOMALIES, FEEDBACK)

# Notifications that kept failing (docs/NOTIFICATIONS.md); created by the notifier, which is
# optional, so it is not in ALL (the topics every stack creates and the AsyncAPI document lists).
NOTIFICATIONS_DLQ: Final = "journeywatch.notifications.dlq"

# The detector's internal topic between its stages (stage 1 "sessionize" → stage 2 "score"),
# keyed by journey; not part of the external contract, so not in ALL (docs/ARCHITECTURE.md,
# "Scale-out"). Created by the detector stages with JOURNEYWATCH_DETECTOR_PARTIALS_PARTITIONS.
DETECTOR_PARTIALS: Final = "journeywatch.detector.partials"

# Kafka record header marking replayed history (value: the replay id); see docs/SIMULATOR.md.
BACKFILL_HEADER: Final = "journeywatch-backfill"
