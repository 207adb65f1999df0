"""Synthetic funnel-step streams for the step series' tests (core.steps): one step, window by window.

A test builds its events (``Event``: time, session, touchpoint, channel dimension slot) in a heap
and ``replay`` hands them to a ``StepSeries`` one-minute window at a time, closing each window;
``payment_run`` is the one-channel payment step shared by the low-volume and cycle tests.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Mapping

from journeywatch.detector.core.config import CoreConfig
from journeywatch.detector.core.findings import Finding
from journeywatch.detector.core.steps import (
    JourneySteps,
    StepSeries,
    new_step_times,
    observe_step,
)

W = 60.0  # one-minute windows
DAY = 1440  # windows a day

Event = tuple[float, int, str, int]
"""(event time in seconds, session number, touchpoint, channel dimension slot)."""


def one_step(start: str, end: str, stage: str, horizon: float) -> JourneySteps:
    """Journey ``shop`` with the single funnel step ``start→end`` of ``stage``.

    Parameters
    ----------
    start, end
        The step's touchpoints: a session reaching ``start`` is expected to reach ``end``.
    stage
        The stage the step belongs to.
    horizon
        Seconds within which a completion counts; the step's cohort ages are
        ``ceil(horizon / W) + 1`` windows, as ``JourneySteps.of`` counts them.

    Returns
    -------
    JourneySteps
        The step's definition as ``JourneySteps.of`` would build it.
    """
    return JourneySteps(
        journey="shop",
        names=(f"{start}→{end}",),
        stages=(stage,),
        touchpoints=((start, end),),
        horizon=(horizon,),
        ages=(math.ceil(horizon / W) + 1,),
        roles={start: ((0, False),), end: ((0, True),)},
    )


def replay(
    series: StepSeries,
    step: JourneySteps,
    events: list[Event],
    windows: int,
    channels: Mapping[int, str],
) -> list[tuple[int, Finding]]:
    """Observe ``events`` (a heap) window by window and close each of the first ``windows``.

    Parameters
    ----------
    series
        The step series (of ``step`` only).
    step
        Its step definition (roles and horizon of the touchpoints).
    events
        A heap of ``Event``; consumed.
    windows
        How many one-minute windows to close, from window 0.
    channels
        Channel dimension slot → channel name.

    Returns
    -------
    list[tuple[int, Finding]]
        Every finding with the window that raised it, in order.
    """
    times: dict[int, list[float]] = {}
    found: list[tuple[int, Finding]] = []
    for w in range(windows):
        while events and events[0][0] < (w + 1) * W:
            at, sid, tp, dim = heapq.heappop(events)
            step_t = times.get(sid)
            if step_t is None:  # with the attempt test on, sessions track their open attempt
                step_t = times[sid] = new_step_times(1, series.attempt_test is not None)
            observe_step(
                series.state, step_t, step.roles[tp], step.horizon, at, w, W, 0, (dim,),
                series.config.step_attempt_retries,
            )  # fmt: skip
        closed = series.close(w, lambda dims: channels[dims[0]], lambda *_: False)
        found += [(w, f) for f in closed]
    return found


PAYMENT = one_step("payment_submitted", "purchase", "purchase", 300.0)


def payment_run(
    config: CoreConfig,
    days: int,
    per_hour: float,
    seed: int,
    fail: float = 0.13,
    outage: tuple[int, int, float] | None = None,
) -> tuple[StepSeries, list[tuple[int, Finding]]]:
    """The ``PAYMENT`` step on one channel (web) over ``days``.

    Parameters
    ----------
    config
        The core configuration of the step series.
    days
        Days of one-minute windows.
    per_hour
        Payments an hour (Poisson arrivals); each completes 20–90 s later unless it fails.
    seed
        The stream's random seed.
    fail
        The share of payments failing.
    outage
        (first window, last window, failure share): more fail inside it.

    Returns
    -------
    tuple[StepSeries, list[tuple[int, Finding]]]
        The series after the last window and every finding with its window.
    """
    rng = random.Random(seed)
    series = StepSeries(config, [PAYMENT])
    events: list[Event] = []
    t, session = 0.0, 0
    while t < days * DAY * W:
        t += rng.expovariate(per_hour / 3600.0)
        session += 1
        heapq.heappush(events, (t, session, "payment_submitted", 1))
        w = int(t // W)
        failing = outage[2] if outage is not None and outage[0] <= w <= outage[1] else fail
        if rng.random() >= failing:
            heapq.heappush(events, (t + rng.uniform(20.0, 90.0), session, "purchase", 1))
    return series, replay(series, PAYMENT, events, days * DAY, {1: "web"})


OLD_BUDGET = 0.1
"""``CoreConfig.false_alarms_per_day`` before session 20 (0.25 since): the tests that pin windows,
delays and values of a mechanism measured at it keep it, so they keep testing that mechanism
rather than the budget (a looser budget moves an alarm a window sooner)."""
