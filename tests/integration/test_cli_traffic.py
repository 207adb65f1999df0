"""`journeywatch simulate` and `replay` against a real ingest process and the real broker."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from journeywatch.cli.replay import replay
from journeywatch.cli.simulate import SimulateOptions, build_simulator, run_simulation
from journeywatch.cli.simulator import scenario
from journeywatch.shared import topics
from journeywatch.shared.broker import LocalBroker, free_port

pytestmark = pytest.mark.integration

if importlib.util.find_spec("journeywatch.ingest.__main__") is None:
    pytest.skip("journeywatch.ingest has no entry point yet", allow_module_level=True)


@pytest.fixture(scope="module")
def bootstrap_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """This module's own broker (overrides the session one): the simulated traffic and the
    detectors started here must not mix with other tests' topics, and vice versa."""
    log = tmp_path_factory.mktemp("cli-broker") / "tansu.log"
    with LocalBroker(port=free_port(), log_path=log) as running:
        yield running.bootstrap_servers


@pytest.fixture(scope="module")
def ingest_url(bootstrap_servers: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `python -m journeywatch.ingest` on a free port, against the session's broker."""
    port = free_port()
    log = tmp_path_factory.mktemp("ingest") / "ingest.log"
    env = {
        **os.environ,
        "JOURNEYWATCH_KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers,
        "JOURNEYWATCH_INGEST_PORT": str(port),
        "JOURNEYWATCH_INGEST_API_KEYS": "",
        "JOURNEYWATCH_PSEUDONYMIZATION_KEY": "",
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "journeywatch.ingest"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, log.read_text()
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "ingest not ready in 30 s"
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(15)


async def topic_records(bootstrap_servers: str, group: str, wanted: set[str], timeout: float = 30):
    """Records of the touchpoints topic whose event_id is in `wanted` (reads until all seen)."""
    consumer = AIOKafkaConsumer(
        topics.TOUCHPOINTS,
        bootstrap_servers=bootstrap_servers,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    found: dict[str, object] = {}
    deadline = time.monotonic() + timeout
    try:
        while len(found) < len(wanted) and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=500, max_records=5000)).values():
                for record in batch:
                    value = orjson.loads(record.value)
                    if value["event_id"] in wanted:
                        found[value["event_id"]] = (record.key, value, record.headers)
    finally:
        await consumer.stop()
    return found


def options(**overrides) -> SimulateOptions:
    # Yesterday's evening, not "now": the simulator follows a daily cycle (night ≈ 15 % of the
    # evening peak), so a start relative to the wall clock made the volume depend on the hour
    # the suite ran at (290 events at 03:00 UTC against the > 500 asserted below).
    yesterday = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    start = yesterday.replace(hour=18, minute=0, second=0)
    base = SimulateOptions(
        rate=4.0,
        seed=101,
        mode="compressed",
        start=start,
        duration=300.0,
        scenarios=(scenario("payment_outage", offset=120, duration=60),),
        batch_size=200,
        progress=False,
    )
    for key, value in overrides.items():
        setattr(base, key, value)
    return base


async def test_simulate_compressed_through_ingest_lands_every_event_on_the_topic(
    ingest_url: str, bootstrap_servers: str, unique: str
) -> None:
    opts = options(ingest_url=ingest_url)
    expected = list(build_simulator(opts, datetime.now(UTC)).events())
    assert len(expected) > 500
    tally = await run_simulation(opts, announce=lambda line: None)
    assert (tally.sent, tally.accepted, tally.rejected) == (len(expected), len(expected), 0)
    found = await topic_records(
        bootstrap_servers, f"cli-{unique}", {e["event_id"] for e in expected}
    )
    assert len(found) == len(expected)
    sample = expected[len(expected) // 2]
    key, value, _ = found[sample["event_id"]]
    assert key == sample["session_id"].encode()
    assert value["stage"] in ("awareness", "consideration", "purchase", "post_purchase")
    assert value["touchpoint"] == sample["touchpoint"]


async def test_simulate_straight_onto_the_topic_enriches_like_ingest(
    bootstrap_servers: str, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOURNEYWATCH_KAFKA_BOOTSTRAP_SERVERS", bootstrap_servers)
    monkeypatch.delenv("JOURNEYWATCH_PSEUDONYMIZATION_KEY", raising=False)
    opts = options(target="kafka", seed=202, duration=120.0, backfill=True)
    expected = {e["event_id"]: e for e in build_simulator(opts, datetime.now(UTC)).events()}
    tally = await run_simulation(opts, announce=lambda line: None)
    assert tally.accepted == len(expected)
    found = await topic_records(bootstrap_servers, f"cli-{unique}", set(expected))
    assert len(found) == len(expected)
    for event_id, (key, value, headers) in list(found.items())[:50]:
        assert key == expected[event_id]["session_id"].encode()
        assert value["schema_version"] == 1
        assert value["received_at"]
        assert value["stage"]
        # Same default replay id as ingest gives a backfill request without X-JourneyWatch-Replay-Id.
        assert ("journeywatch-backfill", b"backfill") in list(headers)


async def test_simulate_realtime_paces_events_at_their_time(ingest_url: str) -> None:
    start = datetime.now(UTC)
    opts = options(
        ingest_url=ingest_url, mode="realtime", start=start, duration=3.0, rate=40.0, seed=303,
        scenarios=(), flush_interval=0.1,
    )  # fmt: skip
    began = time.monotonic()
    tally = await run_simulation(opts, announce=lambda line: None)
    assert time.monotonic() - began >= 2.0  # waited for event time, not sent at once
    assert tally.accepted == tally.sent > 0


def test_simulate_command_line_to_a_file(tmp_path: Path) -> None:
    out = tmp_path / "week.jsonl"
    result = subprocess.run(
        [
            sys.executable, "-m", "journeywatch.cli.main", "simulate", "--mode", "compressed",
            "--start", "2026-01-05T00:00:00Z", "--duration", "30m", "--rate", "5", "--seed", "7",
            "--scenario", "tracking_outage:web@10m+5m", "--out", str(out),
        ],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = out.read_bytes().splitlines()
    assert len(lines) > 1000
    assert "0 rejected" in result.stdout
    first = orjson.loads(lines[0])
    assert first["occurred_at"].startswith("2026-01-05T00:0")


async def test_replay_sends_history_and_summarises_rejections(
    ingest_url: str, tmp_path: Path
) -> None:
    start = datetime.now(UTC) - timedelta(hours=2)
    history = list(
        build_simulator(options(start=start, duration=600.0, seed=404), datetime.now(UTC)).events()
    )
    old = dict(history[0], event_id="too-old", occurred_at="2020-01-01T00:00:00Z")
    unknown = dict(history[1], event_id="unknown-touchpoint", touchpoint="teleport")
    segment = {
        "type": "track",
        "event": "Order Completed",
        "anonymousId": "anon-1",
        "messageId": "seg-replay-1",
        "timestamp": history[5]["occurred_at"],
        "properties": {"revenue": 12.5},
        "context": {"channel": "web"},
    }
    path = tmp_path / "history.jsonl"
    lines = [orjson.dumps(e) for e in [*history, old, unknown, segment]] + [b"not json"]
    path.write_bytes(b"\n".join(lines) + b"\n")
    said: list[str] = []
    tally, source, anomalies = await replay(
        str(path),
        ingest_url=ingest_url,
        api_url=f"http://127.0.0.1:{free_port()}",  # no api running: tolerated
        settle=0,
        batch_size=100,
        progress=False,
        say=said.append,
    )
    assert tally.accepted == len(history) + 1
    assert tally.rejected == 3
    assert any("occurred_at" in reason for reason in tally.reasons)
    assert any("touchpoint" in reason for reason in tally.reasons)
    assert tally.reasons["(file): line is not valid JSON"] == 1
    assert anomalies is None
    assert any("not counted" in line for line in said)
    assert source.first is not None


async def test_replay_counts_segment_calls_ingest_ignores(ingest_url: str, tmp_path: Path) -> None:
    now = datetime.now(UTC) - timedelta(minutes=5)
    stamp = now.isoformat().replace("+00:00", "Z")
    calls = [
        {
            "type": "track",
            "event": "Order Completed",
            "anonymousId": "anon-ign",
            "messageId": "seg-ign-track",
            "timestamp": stamp,
            "context": {"channel": "web"},
        },
        {"type": "identify", "userId": "u-1", "messageId": "seg-ign-id", "timestamp": stamp},
        {"type": "alias", "userId": "u-1", "previousId": "anon-ign", "messageId": "seg-ign-alias"},
        {
            "type": "track",
            "event": "Coupon Admired",  # no journey maps this name
            "anonymousId": "anon-ign",
            "messageId": "seg-ign-unmapped",
            "timestamp": stamp,
            "context": {"channel": "web"},
        },
    ]
    path = tmp_path / "segment.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(c) for c in calls) + b"\n")
    said: list[str] = []
    tally, _, _ = await replay(
        str(path),
        ingest_url=ingest_url,
        api_url=f"http://127.0.0.1:{free_port()}",
        settle=0,
        progress=False,
        say=said.append,
    )
    assert (tally.sent, tally.accepted, tally.ignored, tally.rejected) == (4, 1, 3, 0)
    assert tally.ignored_reasons == {"identify": 1, "alias": 1, "unmapped_touchpoint": 1}
    assert "4 sent" in said[0]
    assert "1 accepted, 3 ignored, 0 rejected" in said[0]
    assert "  ignored 1× unmapped_touchpoint" in said


def test_replay_of_identify_calls_only_is_a_success(ingest_url: str, tmp_path: Path) -> None:
    path = tmp_path / "identities.jsonl"
    path.write_bytes(
        orjson.dumps({"type": "identify", "userId": "u-2", "messageId": "seg-only-id"}) + b"\n"
    )
    result = subprocess.run(
        [
            sys.executable, "-m", "journeywatch.cli.main", "replay", str(path),
            "--ingest-url", ingest_url, "--api-url", f"http://127.0.0.1:{free_port()}",
            "--settle", "0", "--no-progress",
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "0 accepted, 1 ignored, 0 rejected" in result.stdout
    assert "ignored 1× identify" in result.stdout
