"""A compact labelled run: every incident family once, at its strong intensity, in about a day."""

from __future__ import annotations

import itertools
import random
from typing import Final

from bench.detection_eval.corpus import (
    _FAMILY,
    DAY,
    FIRST_MONDAY,
    HOUR,
    MINUTE,
    VOLUMES,
    Run,
    _build,
)

HISTORY_HOURS: Final = 14.0
"""Clean traffic before the first incident (from 10:00 the day before): the evening peak and the
night are learned before the night failure, the morning before the daytime families."""
SCHEDULE: Final[tuple[tuple[str, float], ...]] = (
    ("night_payment_failure", 2.0),
    ("degradation", 6.5),
    ("step_outage", 10.25),
    ("payment_failure", 12.0),
    ("broken_touchpoint", 14.25),
    ("tracking_stop", 15.75),
    ("campaign", 17.25),
    ("sentiment_wave", 20.0),
    ("bot_surge", 21.75),
)
"""(family, local start hour on the incident day), each ≥ 45 min after the previous one's end
(the 30 min the scoring allows for lingering consequences, plus a margin), inside the hours the
corpus allows for it."""
TAIL: Final = 45 * MINUTE
"""Stream after the last incident's end: its consequences and the last verdicts are published."""


def compact_run(volume: str = "small", seed: int = 1, history_hours: float = HISTORY_HOURS) -> Run:
    """Every family once at its high intensity, on one weekday after `history_hours` of history.

    The corpus runs take days of event time (minutes through the core, too long for a test);
    this one is about 37 hours. Channels and the step-outage variant vary with `seed` as in the
    corpus. Its cached stream is named ``compact-…`` so it never replaces a whole-day run's.

    >>> run = compact_run()
    >>> [i.family for i in run.incidents][:2], {i.level for i in run.incidents}
    (['night_payment_failure', 'degradation'], {'high'})
    >>> round((run.end - run.start) / 3600, 2), run == compact_run()
    (37.0, True)
    """
    if volume not in VOLUMES:
        raise ValueError(f"unknown volume {volume!r}; known: {', '.join(VOLUMES)}")
    rng = random.Random(f"detection-eval-compact:{volume}:{seed}")
    # Tuesday 00:00: a weekday on both days, as most of the corpus.
    day = (FIRST_MONDAY.timestamp() // DAY + 1) * DAY
    start = day - history_hours * HOUR
    incidents = tuple(
        _build(_FAMILY[name], volume, seed, rng, start, day + hour * HOUR - start, level="high")
        for name, hour in SCHEDULE
    )
    for before, after in itertools.pairwise(incidents):
        if after.start - before.end < 45 * MINUTE:
            raise AssertionError(f"{after.family} starts too soon after {before.family}")
    return Run(
        volume=volume,
        seed=seed,
        start=start,
        days=2,
        sessions_per_day=VOLUMES[volume],
        incidents=incidents,
        clean_days=(),
        length=incidents[-1].end + TAIL - start,
        history=history_hours * HOUR,
    )
