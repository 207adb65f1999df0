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

# Kafka record header marking replayed history (value: the replay id); see docs/SIMULATOR.md.
BACKFILL_HEADER: Final = "journeywatch-backfill"
