"""Prometheus metrics of the detector (names are part of the on-call contract in deploy/prometheus)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class DetectorMetrics:
    """All detector metrics on one registry (one per runner, so tests can run several)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events_processed = Counter(
            "journeywatch_detector_events_processed_total",
            "Touchpoints applied to the state.",
            registry=r,
        )
        self.consumer_lag = Gauge(
            "journeywatch_detector_consumer_lag_messages",
            "Messages between the consumer position and the partition high-water mark.",
            ["partition"],
            registry=r,
        )
        self.late_events = Counter(
            "journeywatch_detector_late_events_total",
            "Events older than the watermark (beyond allowed lateness).",
            registry=r,
        )
        self.dlq_events = Counter(
            "journeywatch_detector_dlq_events_total",
            "Undecodable or invalid messages sent to the dead-letter topic.",
            ["reason"],
            registry=r,
        )
        self.active_sessions = Gauge(
            "journeywatch_detector_active_sessions", "Sessions held in memory.", registry=r
        )
        self.window_close_delay = Histogram(
            "journeywatch_detector_window_close_delay_seconds",
            "Wall-clock time between a window's end and its closing.",
            buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 3600, float("inf")),
            registry=r,
        )
        self.open_anomalies = Gauge(
            "journeywatch_detector_open_anomalies",
            "Open incidents (backfill excluded).",
            ["journey", "stage", "type", "severity"],
            registry=r,
        )
        self.anomaly_changes = Counter(
            "journeywatch_detector_anomaly_changes_total",
            "Anomaly lifecycle changes published.",
            ["type", "change"],
            registry=r,
        )
        self.stage_conversion_rate = Gauge(
            "journeywatch_detector_stage_conversion_rate",
            "Latest closed window's conversion rate to the next stage.",
            ["journey", "stage"],
            registry=r,
        )
        self.stage_abandonment_rate = Gauge(
            "journeywatch_detector_stage_abandonment_rate",
            "Latest closed window's abandonment rate.",
            ["journey", "stage"],
            registry=r,
        )
        self.ready = Gauge(
            "journeywatch_detector_ready", "1 when consuming and persisting normally.", registry=r
        )
        self.backfill = Gauge(
            "journeywatch_detector_backfill", "1 while a backfill replay runs.", registry=r
        )
        self.checkpoint_seconds = Histogram(
            "journeywatch_detector_checkpoint_duration_seconds",
            "Time to snapshot and store the detector state.",
            registry=r,
        )
        self.checkpoint_bytes = Gauge(
            "journeywatch_detector_checkpoint_bytes", "Size of the latest checkpoint.", registry=r
        )
        self.feedback_applied = Counter(
            "journeywatch_detector_feedback_applied_total",
            "Acknowledge / feedback commands applied from journeywatch.feedback.",
            ["action", "verdict"],
            registry=r,
        )
        self.permanent_errors = Counter(
            "journeywatch_detector_permanent_errors_total",
            "Writes the database rejected for good (constraint, data, schema); the detector halts.",
            ["stage"],
            registry=r,
        )
        self.halted = Gauge(
            "journeywatch_detector_halted",
            "1 when a permanent error stopped consuming until a restart.",
            registry=r,
        )
        self.broker_up = Gauge(
            "journeywatch_detector_broker_up",
            "1 when the broker answered the latest end-offsets probe.",
            registry=r,
        )
        self.broker_up.set(1)
        # The two stages (docs/RELIABILITY.md "The two detector stages"); 0 / absent in one process.
        self.owned_partitions = Gauge(
            "journeywatch_detector_owned_partitions",
            "Partitions of its source topic this process owns (a stage's share of the group).",
            registry=r,
        )
        self.partials_sent = Counter(
            "journeywatch_detector_partials_sent_total",
            "Stage 1: partials acknowledged by journeywatch.detector.partials.",
            registry=r,
        )
        self.partition_rows = Counter(
            "journeywatch_detector_partition_rows_total",
            "Per-partition state rows: written, fenced (another owner took the partition) or "
            "failed (a best-effort save on revoke).",
            ["result"],
            registry=r,
        )
        self.partials_read = Counter(
            "journeywatch_detector_partials_read_total",
            "Stage 2: partials read, accepted into a journey's merge or refused (undecodable, "
            "unknown journey).",
            ["result"],
            registry=r,
        )
        self.merge_pending_panes = Gauge(
            "journeywatch_detector_merge_pending_panes",
            "Stage 2: panes of the owned journeys waiting for a source partition's partial.",
            registry=r,
        )
        self.merge_conflicts = Gauge(
            "journeywatch_detector_merge_conflicts",
            "Stage 2: replayed partials whose content differed from the first one (kept); "
            "should stay 0.",
            registry=r,
        )
        self.batch_errors = Counter(
            "journeywatch_detector_batch_retries_total",
            "Batches retried because the database or broker failed.",
            ["stage"],
            registry=r,
        )
