"""Sending simulated/replayed events: retries, splitting, rejections, pacing, file formats (no I/O)."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from journeywatch.cli.main import build_parser
from journeywatch.cli.replay import Source, is_segment, read_items
from journeywatch.cli.simulate import parse_start, pump
from journeywatch.cli.sinks import (
    BACKFILL_HEADER,
    FileSink,
    IngestSink,
    Pipeline,
    SinkError,
    Tally,
)


def ingest_answering(*responses: httpx.Response, seen: list[httpx.Request] | None = None):
    queue = list(responses)
    seen = seen if seen is not None else []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if len(queue) > 1:
            return queue.pop(0)
        return queue[0]

    return httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://ingest")


def accepted(count: int, rejected: list[dict[str, Any]] | None = None) -> httpx.Response:
    return httpx.Response(202, json={"accepted": count, "rejected": rejected or []})


EVENTS = [{"touchpoint": "product_view", "n": i} for i in range(10)]


async def test_ingest_sink_retries_503_with_retry_after_and_never_drops() -> None:
    seen: list[httpx.Request] = []
    busy = httpx.Response(503, headers={"Retry-After": "0.05"}, json={"detail": "broker down"})
    client = ingest_answering(busy, busy, accepted(10), seen=seen)
    sink = IngestSink("http://ingest", client=client)
    started = time.monotonic()
    await sink.send(EVENTS)
    assert time.monotonic() - started >= 0.1
    assert len(seen) == 3
    assert all(orjson.loads(r.content)["events"] == EVENTS for r in seen)
    assert (sink.tally.sent, sink.tally.accepted, sink.tally.retries) == (10, 10, 2)


async def test_ingest_sink_retries_connection_errors() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise httpx.ConnectError("refused", request=request)
        return accepted(10)

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://ingest")
    sink = IngestSink("http://ingest", client=client)
    await sink.send(EVENTS)
    assert sink.tally.accepted == 10
    assert calls == 2


async def test_ingest_sink_splits_a_batch_that_is_too_large() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        events = orjson.loads(request.content)["events"]
        if len(events) > 3:
            return httpx.Response(413, json={"detail": "too large"})
        return accepted(len(events))

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://ingest")
    sink = IngestSink("http://ingest", client=client)
    await sink.send(EVENTS)
    assert (sink.tally.sent, sink.tally.accepted) == (10, 10)


async def test_rejections_are_counted_and_grouped_by_reason() -> None:
    too_old = {"field": "occurred_at", "problem": "is more than 2592000 s in the past"}
    unknown = {"field": "touchpoint", "problem": "'x' is not a touchpoint"}
    partly = accepted(
        7,
        [
            {"index": 0, "event_id": None, "errors": [too_old]},
            {"index": 1, "event_id": None, "errors": [too_old]},
            {"index": 2, "event_id": None, "errors": [unknown]},
        ],
    )
    all_bad = httpx.Response(
        422, json={"detail": "all rejected", "rejected": [{"index": 0, "errors": [unknown]}]}
    )
    sink = IngestSink("http://ingest", client=ingest_answering(partly, all_bad))
    await sink.send(EVENTS)
    await sink.send(EVENTS[:1])
    assert (sink.tally.sent, sink.tally.accepted, sink.tally.rejected) == (11, 7, 4)
    assert sink.tally.reasons.most_common() == [
        ("occurred_at: is more than 2592000 s in the past", 2),
        ("touchpoint: 'x' is not a touchpoint", 2),
    ]


@pytest.mark.parametrize("status", [400, 401, 403, 404])
async def test_a_refusal_for_good_stops_with_a_clear_error(status: int) -> None:
    sink = IngestSink(
        "http://ingest", client=ingest_answering(httpx.Response(status, json={"detail": "no"}))
    )
    with pytest.raises(SinkError, match=f"ingest answered {status}"):
        await sink.send(EVENTS)


async def test_backfill_and_key_headers_and_segment_endpoint() -> None:
    seen: list[httpx.Request] = []
    sink = IngestSink(
        "http://ingest",
        api_key="k1",
        backfill=True,
        replay_id="replay-1",
        segment=True,
        client=ingest_answering(accepted(10), seen=seen),
    )
    await sink.send(EVENTS)
    request = seen[0]
    assert request.url.path == "/v1/batch"
    assert orjson.loads(request.content)["batch"] == EVENTS
    assert request.headers[BACKFILL_HEADER] == "1"
    assert request.headers["X-JourneyWatch-Replay-Id"] == "replay-1"
    assert request.headers["Authorization"] == "Bearer k1"


class SlowSink:
    def __init__(self) -> None:
        self.tally = Tally()
        self.in_flight = 0
        self.most = 0
        self.batches: list[tuple[float, Sequence[dict[str, Any]]]] = []

    async def send(self, batch: Sequence[dict[str, Any]]) -> None:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        self.batches.append((time.time(), list(batch)))
        await asyncio.sleep(0.01)
        self.in_flight -= 1
        self.tally.sent += len(batch)
        self.tally.accepted += len(batch)

    async def aclose(self) -> None:
        pass


async def test_pipeline_bounds_batches_in_flight_and_delivers_everything() -> None:
    sink = SlowSink()
    pipeline = Pipeline(sink, concurrency=3)
    timed = ((0.0, {"n": i}) for i in range(1000))
    handed = await pump(timed, pipeline, paced=False, batch_size=50)
    await pipeline.drain()
    assert handed == 1000
    assert sink.tally.accepted == 1000
    assert sink.most == 3


async def test_paced_pump_sends_no_event_before_its_time() -> None:
    sink = SlowSink()
    pipeline = Pipeline(sink, concurrency=2)
    now = time.time()
    times = [now - 5.0, now - 1.0] + [now + 0.05 * i for i in range(1, 9)]
    handed = await pump(((t, {"t": t}) for t in times), pipeline, paced=True, flush_interval=0.05)
    await pipeline.drain()
    assert handed == len(times)
    for sent_at, batch in sink.batches:
        assert all(event["t"] <= sent_at + 0.01 for event in batch)
    assert sink.batches[0][0] - now < 0.1  # history goes out at once


async def test_pump_stops_when_asked() -> None:
    sink = SlowSink()
    pipeline = Pipeline(sink)
    stop = asyncio.Event()
    future = time.time() + 60
    task = asyncio.create_task(
        pump(((future + i, {}) for i in range(10)), pipeline, paced=True, stop=stop)
    )
    await asyncio.sleep(0.05)
    stop.set()
    assert await asyncio.wait_for(task, 1.0) == 0


async def test_file_sink_writes_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    sink = FileSink(str(path))
    await sink.send(EVENTS[:3])
    await sink.aclose()
    assert [orjson.loads(line) for line in path.read_bytes().splitlines()] == EVENTS[:3]


# -- replay input ---------------------------------------------------------------------------


def items_of(text: str) -> tuple[list[dict[str, Any]], Source]:
    source = Source()
    return list(read_items(io.BytesIO(text.encode()), source)), source


def test_reads_json_lines_skipping_blank_and_counting_bad_lines() -> None:
    items, source = items_of(
        '{"touchpoint": "purchase", "occurred_at": "2026-01-01T10:00:00Z"}\n'
        "\n"
        "not json\n"
        "[1, 2]\n"
        '{"type": "track", "event": "Order Completed", "timestamp": "2026-01-01T09:00:00Z"}\n'
    )
    assert [i.get("touchpoint") or i.get("event") for i in items] == ["purchase", "Order Completed"]
    assert source.unreadable == {"line is not valid JSON": 1, "line is not a JSON object": 2}
    assert source.first == datetime(2026, 1, 1, 9, tzinfo=UTC)
    assert source.last == datetime(2026, 1, 1, 10, tzinfo=UTC)


def test_reads_a_segment_batch_document_and_a_json_array() -> None:
    batch = {
        "batch": [{"type": "page", "name": "Home"}, {"type": "track", "event": "Cart Viewed"}],
        "context": {"channel": "web"},
    }
    items, _ = items_of(orjson.dumps(batch, option=orjson.OPT_INDENT_2).decode())
    assert [i["type"] for i in items] == ["page", "track"]
    assert all(i["context"] == {"channel": "web"} for i in items)
    items, _ = items_of('[\n{"touchpoint": "purchase"},\n{"touchpoint": "ad_click"}\n]')
    assert len(items) == 2


@pytest.mark.parametrize(
    ("item", "segment"),
    [
        ({"touchpoint": "purchase", "session_id": "s"}, False),
        ({"type": "track", "event": "Order Completed"}, True),
        ({"type": "screen", "name": "Cart", "anonymousId": "a"}, True),
        ({"messageId": "m1", "event": "Product Viewed"}, True),
    ],
)
def test_segment_calls_are_told_apart_from_contract_events(
    item: dict[str, Any], segment: bool
) -> None:
    assert is_segment(item) is segment


# -- command line ---------------------------------------------------------------------------


def test_simulate_options_parse() -> None:
    args = build_parser().parse_args(
        [
            "simulate",
            "--mode",
            "compressed",
            "--duration",
            "7d",
            "--start=now-8d",
            "--scenario",
            "payment_outage@2h+15m",
            "--scenario",
            "tracking_outage:email@3h",
            "--target",
            "kafka",
        ]
    )
    assert args.duration == 7 * 86400
    assert [s.name for s in args.scenario] == ["payment_outage", "tracking_outage"]
    assert args.target == "kafka"
    assert parse_start(args.start, datetime(2026, 1, 9, tzinfo=UTC)) == datetime(
        2026, 1, 1, tzinfo=UTC
    )


def test_bad_scenario_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["simulate", "--scenario", "meteor@1h"])
    assert exc.value.code == 2
    assert "unknown scenario 'meteor'" in capsys.readouterr().err


async def test_ingest_sink_counts_ignored_segment_calls_from_the_body_or_the_header() -> None:
    seen: list[httpx.Request] = []
    detailed = httpx.Response(
        200,
        headers={"X-JourneyWatch-Ignored": "2"},
        json={
            "success": True,
            "accepted": 1,
            "ignored": [
                {"index": 0, "event_id": "m0", "reason": "identify"},
                {"index": 2, "event_id": "m2", "reason": "unmapped_touchpoint"},
            ],
            "rejected": [],
        },
    )
    sink = IngestSink("http://ingest", segment=True, client=ingest_answering(detailed, seen=seen))
    await sink.send([{"type": "identify"}, {"type": "track"}, {"type": "track"}])
    assert seen[0].url.path == "/v1/batch"
    assert seen[0].headers["Prefer"] == "return=representation"
    assert (sink.tally.sent, sink.tally.accepted, sink.tally.ignored, sink.tally.rejected) == (
        3,
        1,
        2,
        0,
    )
    assert sink.tally.ignored_reasons == {"identify": 1, "unmapped_touchpoint": 1}
    # A proxy that strips the detailed body still passes the count header through.
    plain = httpx.Response(200, headers={"X-JourneyWatch-Ignored": "4"}, json={"success": True})
    sink = IngestSink("http://ingest", segment=True, client=ingest_answering(plain))
    await sink.send([{"type": "group"}] * 4)
    assert (sink.tally.ignored, sink.tally.ignored_reasons["(not given)"]) == (4, 4)


def test_summary_shows_ignored_calls_with_their_reasons() -> None:
    from journeywatch.cli.simulate import summary_lines

    tally = Tally(sent=10, accepted=7, rejected=1, ignored=2)
    tally.ignored_reasons.update({"identify": 1, "alias": 1})
    tally.reasons["touchpoint: unknown"] += 1
    lines = summary_lines(tally, 2.0)
    assert lines[0] == "events: 10 sent in 2.0s (5/s), 7 accepted, 2 ignored, 1 rejected"
    assert "  ignored 1× identify" in lines
    assert "  ignored 1× alias" in lines
    assert "  rejected 1× touchpoint: unknown" in lines
    # Without ignored calls (contract-v1 traffic), the line reads as before.
    assert summary_lines(Tally(sent=4, accepted=4), 1.0) == [
        "events: 4 sent in 1.0s (4/s), 4 accepted, 0 rejected"
    ]


def test_sinks_docstring_examples() -> None:
    import doctest

    import journeywatch.cli.sinks

    result = doctest.testmod(journeywatch.cli.sinks)
    assert result.attempted > 0
    assert result.failed == 0
