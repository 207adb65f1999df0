"""Stage 2's copy of the feedback topic: every command read, per journey, for the journeys owned."""

from __future__ import annotations

import logging

from pydantic import ValidationError

from journeywatch.detector.score_state import JourneyScore, feedback_key
from journeywatch.shared.anomalies import FeedbackCommand
from journeywatch.shared.journeys import JourneyCatalog

log = logging.getLogger(__name__)


class FeedbackLog:
    """Every feedback command a stage-2 process read, the first of each key, per journey.

    A command's journey is only known once decoded, so every score process reads the whole
    feedback topic (a small one: one message per operator verdict) and keeps it here; a journey
    this process takes on later (restored from a row, or its first partial) is handed what it
    has not applied yet (:meth:`pending`).

    Parameters
    ----------
    catalog
        The journeys: a command of another journey is refused.
    """

    def __init__(self, catalog: JourneyCatalog) -> None:
        self.catalog = catalog
        self.by_journey: dict[str, dict[tuple[str, str], FeedbackCommand]] = {}
        self.refused = 0  # not a command, or of a journey the catalog lacks

    def add(self, value: bytes) -> FeedbackCommand | None:
        """Decode and keep a message; returns the command, or None if refused or a repeat."""
        try:
            command = FeedbackCommand.model_validate_json(value)
        except ValidationError as exc:
            self.refused += 1
            log.warning("ignoring invalid feedback message (%d error(s))", exc.error_count())
            return None
        if command.journey not in self.catalog.journeys:
            self.refused += 1
            log.warning("ignoring feedback of unknown journey %r", command.journey)
            return None
        commands = self.by_journey.setdefault(command.journey, {})
        key = feedback_key(command)
        if key in commands:
            return None  # once per key: the first one is the one applied
        commands[key] = command
        return command

    def pending(self, journey: JourneyScore) -> list[FeedbackCommand]:
        """The journey's commands not applied to it yet, in the order they were read."""
        commands = self.by_journey.get(journey.journey, {})
        return [c for key, c in commands.items() if key not in journey.feedback_seen]
