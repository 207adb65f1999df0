"""`journeywatch journeys validate FILE`: what is wrong with a journey file, or what it defines."""

from __future__ import annotations

import sys
from pathlib import Path

from journeywatch.cli.durations import format_duration
from journeywatch.shared.journeys import Journey, JourneyCatalog, JourneyConfigError, load_journeys


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def journey_lines(journey: Journey) -> list[str]:
    """A journey in a few lines: counts, the stages in order, the steps with their horizons.

    >>> from journeywatch.shared.journeys import load_journeys
    >>> journey_lines(load_journeys().get(None))[0]
    'ecommerce: 4 stages, 19 touchpoints, 5 steps, 3 goals, 3 abandonment rules, 28 aliases'
    """
    touchpoints = sum(len(stage.touchpoints) for stage in journey.stages)
    lines = [
        f"{journey.name}: {_plural(len(journey.stages), 'stage')}, "
        f"{_plural(touchpoints, 'touchpoint')}, {_plural(len(journey.steps), 'step')}, "
        f"{_plural(len(journey.conversions), 'goal')}, "
        f"{_plural(len(journey.abandonment), 'abandonment rule')}, "
        f"{_plural(len(journey.aliases), 'alias')}".replace("aliass", "aliases")
    ]
    lines.append(
        "  stages: "
        + " → ".join(f"{stage.name} ({len(stage.touchpoints)})" for stage in journey.stages)
    )
    origin = "configured" if journey.steps_ is not None else "derived from stages and goals"
    lines.append(f"  steps ({origin}):")
    lines += [f"    {s.name} within {format_duration(s.horizon_seconds)}" for s in journey.steps]
    for goal in journey.conversions:
        lines.append(
            f"  goal {goal.name}: {goal.from_touchpoint} → {goal.to_touchpoint} "
            f"within {format_duration(goal.within_seconds)}"
        )
    for rule in journey.abandonment:
        lines.append(
            f"  abandonment {rule.name}: {rule.started_by} without "
            f"{' or '.join(rule.completed_by)} for {format_duration(rule.timeout_seconds)}"
        )
    return lines


def summary(catalog: JourneyCatalog, source: str) -> list[str]:
    """What a valid journey file defines."""
    lines = [
        f"{source}: valid, {_plural(len(catalog.journeys), 'journey')} "
        f"(default {catalog.default_journey})"
    ]
    for journey in catalog.journeys.values():
        lines += journey_lines(journey)
    return lines


def validate_command(path: Path) -> int:
    """Print the problems (stderr, exit 1) or the summary (stdout, exit 0)."""
    try:
        catalog = load_journeys(path)
    except JourneyConfigError as exc:
        lines = str(exc).splitlines()
        # The loader's header line says nothing the FILE:LINE lines don't; keep those only.
        problems = [line.strip() for line in lines[1:]] or lines
        for line in problems:
            print(line, file=sys.stderr)
        print(f"{path}: {_plural(len(problems), 'problem')}", file=sys.stderr)
        return 1
    for line in summary(catalog, str(path)):
        print(line)
    return 0
