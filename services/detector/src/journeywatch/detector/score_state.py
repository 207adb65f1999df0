"""Stage 2's per-journey state (a merger and a scorer) and its partition state row's encoding."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from journeywatch.detector.core import CoreConfig
from journeywatch.detector.core.detector import STATE_CODEC
from journeywatch.detector.core.merger import PartialMerger
from journeywatch.detector.core.scorer import PaneScorer
from journeywatch.shared.anomalies import FeedbackCommand
from journeywatch.shared.journeys import JourneyCatalog

ROW_FORMAT: Final = 2
"""Layout of a stage-2 row's state (``pack_row``): a row of another layout is not restored.

2: each journey also records the feedback it applied (``feedback_seen``).
"""


class RowFormatError(ValueError):
    """A stage-2 state row this version cannot restore (another layout)."""


def feedback_key(command: FeedbackCommand) -> tuple[str, str]:
    """(anomaly, verdict) — (anomaly, ``"acknowledge"`` for an acknowledgement): applied once."""
    return command.anomaly_id, command.verdict.value if command.verdict else command.action


class JourneyScore:
    """One journey's stage-2 state: its partials' merger, its scorer and the feedback applied.

    Parameters
    ----------
    catalog, config, fingerprint
        The journeys, the core configuration and the partial fingerprint (stage 1's).
    journey
        The journey.
    partitions
        Source (touchpoints) partitions its partials come from (the first partial says).
    """

    def __init__(
        self,
        catalog: JourneyCatalog,
        config: CoreConfig,
        fingerprint: str,
        journey: str,
        partitions: int,
    ) -> None:
        self.journey = journey
        self.partitions = partitions
        self.merger = PartialMerger(
            journey,
            partitions,
            float(config.window_seconds),
            config.panes_per_window,
            float(config.allowed_lateness_seconds),
            config.idle_partition_windows,
            fingerprint=fingerprint,
        )
        self.scorer = PaneScorer(catalog, config, journey=journey)
        # Feedback applied to the scorer, by ``feedback_key``: saved with it in the same row, so
        # a successor restoring the row skips exactly what the row already reflects.
        self.feedback_seen: set[tuple[str, str]] = set()

    def apply_feedback(self, command: FeedbackCommand) -> bool:
        """Apply an operator's command to the scorer once per key; returns whether it was applied.

        Acknowledgements are keyed too (the scorer ignores them): every process re-reads the
        feedback topic from its beginning, and a takeover must not count them again.
        """
        key = feedback_key(command)
        if key in self.feedback_seen:
            return False
        self.feedback_seen.add(key)
        self.scorer.apply_feedback(command)
        return True

    def snapshot(self) -> dict[str, Any]:
        """The journey's state (live references: pack it before changing more)."""
        return {
            "partitions": self.partitions,
            "merger": self.merger.snapshot(),
            "scorer": self.scorer.snapshot(),
            "feedback_seen": [list(key) for key in sorted(self.feedback_seen)],
        }

    def restore(self, saved: Mapping[str, Any]) -> None:
        """Continue from :meth:`snapshot` values."""
        self.merger.restore(saved["merger"])
        self.scorer.restore(saved["scorer"])
        self.feedback_seen = {(str(a), str(v)) for a, v in saved["feedback_seen"]}


def pack_row(journeys: Mapping[str, JourneyScore]) -> bytes:
    """Encode the state of a partials partition's journeys (``core.detector.STATE_CODEC``)."""
    return STATE_CODEC.pack(
        {
            "format": ROW_FORMAT,
            "journeys": {name: js.snapshot() for name, js in sorted(journeys.items())},
        }
    )


def unpack_row(
    data: bytes, catalog: JourneyCatalog, config: CoreConfig, fingerprint: str
) -> dict[str, JourneyScore]:
    """Decode :func:`pack_row` bytes into journey states (RowFormatError: another layout).

    A journey the catalog no longer has is another configuration too (the fingerprint covers
    the catalog, so it is only met in a forged or foreign row).
    """
    decoded = STATE_CODEC.unpack(data)
    if not isinstance(decoded, dict) or decoded.get("format") != ROW_FORMAT:
        raise RowFormatError("not a stage-2 state row of this version")
    out: dict[str, JourneyScore] = {}
    for name, saved in decoded["journeys"].items():
        if name not in catalog.journeys:
            raise RowFormatError(f"a row of journey {name!r}, not in the catalog")
        js = JourneyScore(catalog, config, fingerprint, name, int(saved["partitions"]))
        js.restore(saved)
        out[name] = js
    return out
