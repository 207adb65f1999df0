"""Ingest limits over a real socket: an over-limit body always gets its 413, big heads get 431."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
import pytest
import uvicorn

from journeywatch.ingest.__main__ import server_config
from journeywatch.ingest.settings import IngestSettings
from journeywatch.shared.broker import free_port
from tests.integration.ingest_support import event
from tests.unit.test_ingest_http import build

pytestmark = pytest.mark.integration

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    """The ingest app (in-memory sink) served by uvicorn exactly as `python -m` serves it."""
    settings = IngestSettings(ingest_port=free_port(), ingest_max_drain_bytes=8 * MIB)
    app, _ = build(ingest_max_drain_bytes=8 * MIB)
    server = uvicorn.Server(server_config(settings, app))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive(), "ingest did not start"
        assert time.monotonic() < deadline, "ingest did not start"
        time.sleep(0.05)
    yield settings.ingest_port
    server.should_exit = True
    thread.join(10)


def big_batch() -> bytes:
    """A 2.4 MB batch of well-formed events (the limit is 1 MiB)."""
    one = event(properties={"note": "x" * 900})
    body = orjson.dumps({"events": [one] * 2400})
    assert 2_300_000 < len(body) < 2_600_000
    return body


def exchange(port: int, head: bytes, body: bytes = b"", *, chunked: bool = False) -> bytes:
    """Send a request the way a slow client does (64 KiB pieces with pauses) and read the answer.

    A reset while sending or reading is returned as the error's name, so a test sees it."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        try:
            sock.sendall(head)
            for start in range(0, len(body), 65536):
                piece = body[start : start + 65536]
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
                time.sleep(0.01)  # the server has long decided by now: it must not close on us
            if chunked:
                sock.sendall(b"0\r\n\r\n")
            answer = b""
            while b"\r\n\r\n" not in answer or not answer.endswith(b"}"):
                data = sock.recv(65536)
                if not data:
                    break
                answer += data
        except OSError as exc:
            return type(exc).__name__.encode()
    return answer


def post_head(length: int | None, *extra: bytes) -> bytes:
    framing = b"Transfer-Encoding: chunked" if length is None else b"Content-Length: %d" % length
    lines = [
        b"POST /v1/events/batch HTTP/1.1",
        b"Host: ingest",
        b"Content-Type: application/json",
        b"Connection: close",  # the server closes after answering: nothing may be left unread
        framing,
        *extra,
    ]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def status(answer: bytes) -> str:
    return answer.split(b"\r\n", 1)[0].decode(errors="replace")


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_an_over_limit_body_always_gets_413_under_concurrent_clients(
    port: int, chunked: bool
) -> None:
    body = big_batch()
    head = post_head(None if chunked else len(body))
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: exchange(port, head, body, chunked=chunked), range(8)))
    assert [status(a) for a in answers] == ["HTTP/1.1 413 Request Entity Too Large"] * 8
    problem: dict[str, Any] = orjson.loads(answers[0].split(b"\r\n\r\n", 1)[1])
    assert problem["status"] == 413
    assert "1048576 bytes" in problem["detail"]
    small = orjson.dumps({"events": [event()]})
    assert status(exchange(port, post_head(len(small)), small)) == "HTTP/1.1 202 Accepted"


def test_a_body_beyond_the_drain_bound_is_refused_at_once(port: int) -> None:
    # Declared 20 MiB (drain bound 8 MiB): answered from the headers, before any body is sent.
    answer = exchange(port, post_head(20 * MIB))
    assert status(answer) == "HTTP/1.1 413 Request Entity Too Large"
    assert b"connection: close" in answer.lower()


def test_expect_100_continue_gets_413_without_sending_the_body(port: int) -> None:
    answer = exchange(port, post_head(2 * MIB, b"Expect: 100-continue"))
    assert status(answer) == "HTTP/1.1 413 Request Entity Too Large"
    assert b"100 Continue" not in answer


def get_with_headers(port: int, *headers: bytes) -> str:
    head = b"\r\n".join([b"GET /healthz HTTP/1.1", b"Host: ingest", *headers]) + b"\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        try:
            sock.sendall(head)
            return status(sock.recv(65536))
        except OSError as exc:
            return type(exc).__name__


def test_request_heads_are_bounded_with_431(port: int) -> None:
    assert get_with_headers(port, b"X-Big: " + b"a" * 200_000) == (
        "HTTP/1.1 431 Request Header Fields Too Large"
    )
    many = [b"X-H%d: %s" % (i, b"v" * 100) for i in range(1000)]  # 100 KB in small headers
    assert get_with_headers(port, *many) == "HTTP/1.1 431 Request Header Fields Too Large"
    assert get_with_headers(port, b"Cookie: " + b"c" * 8000) == "HTTP/1.1 200 OK"


def test_the_bound_is_per_request_on_a_kept_alive_connection(port: int) -> None:
    # Two pipelined requests of 40 KB heads each: 80 KB on the connection, each under 64 KiB.
    one = b"GET /healthz HTTP/1.1\r\nHost: ingest\r\nX-A: " + b"a" * 40_000 + b"\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(one + one)
        answers = b""
        deadline = time.monotonic() + 30
        while answers.count(b"HTTP/1.1 200 OK") < 2 and time.monotonic() < deadline:
            answers += sock.recv(65536)
    assert answers.count(b"HTTP/1.1 200 OK") == 2
