"""Every incident family once, end to end: ingest → broker → detector → GET /v1/anomalies (issue 10).

One stack for the module (ingest, detector and api as processes, as `journeywatch run` starts
them, on this module's Tansu broker and a temporary SQLite database) is fed one compact labelled
stream through `POST /v1/events/batch`: the mid-size shop (≈ 50k sessions/day), 14 h of clean
history, then every family of the incident corpus once at its high intensity (bench/detection_eval
compact_run, seed 1; 37 h of event time, ≈ 377k events). At the small shop's volume the pure core
finds only 2-3 of the 9 there, so the test pays for the mid-size one (≈ 40-80 s here). The same stream also runs
through the pure core in another process, and the stack must find what the core finds.

Families the current detector misses are strict xfails: the moment one is found, its case fails
and the mark must go.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from bench.detection_eval.compact import compact_run
from bench.detection_eval.corpus import FAMILY_NAMES, Incident
from bench.detection_eval.e2e import (
    caught_up,
    core_detections,
    fetch_anomalies,
    from_api,
    running_stack,
    send_run,
    windows_in,
)
from bench.detection_eval.runner import stream
from bench.detection_eval.scoring import MARGIN, Detection, RunResult, score_run

from journeywatch.detector.core import CoreConfig
from journeywatch.shared.broker import LocalBroker, free_port
from tests.conftest import wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    # The first case also sets the stack up (≈ 40-80 s); a 3× slower box must still pass.
    pytest.mark.timeout(600),
]

RUN = compact_run("mid", seed=1)
WINDOW = float(CoreConfig().window_seconds)
SLOWDOWN = 3.0
"""Every deadline is this many times what the step takes on the (loaded) 2-core dev box."""
MISSED_TODAY: dict[str, str] = {}
"""Family → why the detector misses it today (a strict xfail); empty since the finished-cohort
drift test (core.cohort_drift) found the 3-h degradation."""
INCIDENTS = {i.family: i for i in RUN.incidents}


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    """This module's own Tansu broker (overrides the session one, as test_demo_incident does):
    the detector reads the touchpoint topic from its start, and 37 h of March traffic must not
    meet other tests' events there (nor theirs this detector)."""
    log = tmp_path_factory.mktemp("families-broker") / "tansu.log"
    with LocalBroker(port=free_port(), log_path=log) as running:
        yield running


@pytest.fixture(scope="module")
def bootstrap_servers(broker: LocalBroker) -> str:
    """host:port of the module's broker."""
    return broker.bootstrap_servers


@dataclass
class Outcome:
    """What the stack published (from the API) and what the pure core found, both scored."""

    found: list[Detection]
    stack: RunResult
    core: RunResult
    accepted: int
    rejected: int
    seconds: dict[str, float]


@pytest.fixture(scope="module")
async def outcome(bootstrap_servers: str, tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    """Start the stack, send the compact run, wait until the detector has caught up, read
    GET /v1/anomalies; meanwhile the pure core works on the same stream in another process."""
    directory = tmp_path_factory.mktemp("families-e2e")
    cache = directory / "cache"
    seconds: dict[str, float] = {}
    began = time.perf_counter()
    # The stream is simulated once (≈ 15 s, while the services start) and read back by both.
    loop = asyncio.get_running_loop()
    simulated = loop.run_in_executor(None, lambda: sum(1 for _ in stream(RUN, "ecommerce", cache)))
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        async with running_stack(bootstrap_servers, directory) as config:
            seconds["stack_ready"] = time.perf_counter() - began
            events = await simulated
            core = loop.run_in_executor(pool, core_detections, RUN, cache)
            sent = time.perf_counter()
            tally = await send_run(config.url(config.ingest_host, config.ingest_port), RUN, cache)
            seconds["send"] = time.perf_counter() - sent
            assert tally.accepted + tally.rejected == events, tally

            # Every event read and every window judged, with the results stored (see caught_up).
            await wait_until(
                lambda: caught_up(config, tally.accepted, windows_in(RUN)),
                timeout=SLOWDOWN * 60,
                interval=1.0,
            )
            seconds["consumed_after_send"] = time.perf_counter() - sent - seconds["send"]
            items = await fetch_anomalies(
                config.url(config.api_host, config.api_port),
                datetime.fromtimestamp(RUN.start, UTC),
            )
        core_found = await asyncio.wait_for(core, timeout=SLOWDOWN * 90)
    seconds["total"] = time.perf_counter() - began
    found = [from_api(item, WINDOW) for item in items if not item.get("backfill")]
    print(
        f"\nfamilies e2e: {tally.accepted:,} events; "
        + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items())
    )
    return Outcome(
        found=found,
        stack=score_run(RUN, found, WINDOW),
        core=score_run(RUN, core_found, WINDOW),
        accepted=tally.accepted,
        rejected=tally.rejected,
        seconds=seconds,
    )


def _opened(d: Detection) -> str:
    return datetime.fromtimestamp(d.start, UTC).strftime("%H:%M")


def _during(found: list[Detection], incident: Incident) -> str:
    """Every anomaly opening during the incident (± MARGIN), for failure messages."""
    lo, hi = incident.start - MARGIN, incident.end + MARGIN
    seen = [f"{_opened(d)} {d.describe()}" for d in found if lo <= d.start <= hi]
    return "; ".join(seen) or "nothing"


def _right_place(d: Detection, incident: Incident) -> bool:
    """The label's stage; its channel (or an all-channel anomaly whose top contributor it is;
    a site-wide incident: all channels); a named step/touchpoint ending where it breaks."""
    if incident.stage is not None and d.stage != incident.stage:
        return False
    if incident.channel is None:
        if d.channel is not None:
            return False
    elif d.channel != incident.channel and d.top_channel != incident.channel:
        return False
    return not d.step or not incident.touchpoints or d.step[-1] in incident.touchpoints


def test_every_event_is_accepted(outcome: Outcome) -> None:
    assert outcome.rejected == 0
    assert outcome.accepted > 300_000


@pytest.mark.parametrize(
    "family",
    [
        pytest.param(f, marks=pytest.mark.xfail(strict=True, reason=MISSED_TODAY[f]))
        if f in MISSED_TODAY
        else f
        for f in FAMILY_NAMES
    ],
)
def test_the_family_is_detected_end_to_end(outcome: Outcome, family: str) -> None:
    incident = INCIDENTS[family]
    lo, hi = incident.start - MARGIN, incident.end + MARGIN
    matches = [
        d
        for d in outcome.found
        if d.type in incident.accepted and not d.retracted and lo <= d.start <= hi
    ]
    assert matches, (
        f"{incident.describe()}: no {'/'.join(incident.accepted)} anomaly opened in it; "
        f"opened: {_during(outcome.found, incident)}"
    )
    assert any(_right_place(d, incident) for d in matches), (
        f"{incident.describe()} (stage {incident.stage}, step {incident.step}): found only "
        + "; ".join(f"{_opened(d)} {d.describe()} top {d.top_channel}" for d in matches)
    )


def test_the_campaign_raises_no_conversion_anomaly(outcome: Outcome) -> None:
    campaign = INCIDENTS["campaign"]
    lo, hi = campaign.start - MARGIN, campaign.end + MARGIN
    wrong = [
        f"{_opened(d)} {d.describe()}"
        for d in outcome.found
        if d.type in campaign.forbidden and lo <= d.start <= hi
    ]
    assert not wrong, f"{campaign.describe()} converts normally, yet: {wrong}"


def test_the_stack_finds_what_the_pure_core_finds(outcome: Outcome) -> None:
    def verdicts(result: RunResult) -> dict[str, tuple[bool, bool]]:
        return {r.incident.family: (r.detected, r.strict) for r in result.incidents}

    assert verdicts(outcome.stack) == verdicts(outcome.core)
    assert len(outcome.stack.false_alerts) == len(outcome.core.false_alerts)
