"""uvicorn's httptools protocol with a bound on the request head: 431 past a size, not memory."""

from __future__ import annotations

from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

DEFAULT_MAX_HEADER_BYTES = 64 * 1024
# After a 431, what the client still sends is read and dropped, up to this many bytes or
# seconds, before closing: closing with unread data makes the kernel send a reset, and a client
# that is still writing would then lose the 431 it was sent.
DRAIN_BYTES = 4 * 1024 * 1024
DRAIN_SECONDS = 5.0


class HeadTooLarge(Exception):
    """Raised from a parser callback to stop parsing a request whose head is over the bound."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """httptools buffers a request line and headers of any size; this answers 431 instead.

    Two checks, because httptools reports a header only once its value is complete: the
    parsed size (request target + names + values) when each part arrives, and the raw bytes
    received while a head is still incomplete, so one endless header cannot fill the memory
    either. Past the bound the connection answers `431 Request Header Fields Too Large`, reads
    and drops what the client still sends for a moment, and closes; the application never
    sees the request.
    """

    max_head_bytes: ClassVar[int] = DEFAULT_MAX_HEADER_BYTES

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        self._head_raw = 0  # bytes received since the current head began (approximate)
        self._head_parsed = 0  # request target + header names and values, as parsed
        self._rejected = False
        self._drained = 0

    def data_received(self, data: bytes) -> None:
        """Feed the parser; answer 431 once the head in progress is past the bound."""
        if self._rejected:
            self._drained += len(data)
            if self._drained > DRAIN_BYTES:
                self.transport.close()
            return
        if self._in_head:
            self._head_raw += len(data)
        super().data_received(data)  # a callback's HeadTooLarge ends in send_400_response
        if self._in_head and not self._rejected and self._head_raw > self.max_head_bytes:
            self._reject()

    def on_message_begin(self) -> None:
        self._head_parsed = 0
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)  # ": " and CRLF, as on the wire
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_raw = 0
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True  # a pipelined request's head may follow

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a parser error; a head over the bound gets 431 instead."""
        if self._head_parsed > self.max_head_bytes:
            self._reject()
        else:
            super().send_400_response(msg)

    def _count(self, size: int) -> None:
        self._head_parsed += size
        if self._head_parsed > self.max_head_bytes:
            raise HeadTooLarge  # httptools stops parsing and re-raises it from feed_data

    def _reject(self) -> None:
        self._rejected = True
        if self.transport.is_closing():
            return
        message = f"request headers larger than {self.max_head_bytes} bytes"
        self.logger.warning("Rejected request: %s.", message)
        content = [STATUS_LINE[431]]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend(
            [
                b"content-type: text/plain; charset=utf-8\r\n",
                b"content-length: " + str(len(message)).encode("ascii") + b"\r\n",
                b"connection: close\r\n",
                b"\r\n",
                message.encode("ascii"),
            ]
        )
        self.transport.write(b"".join(content))
        if self.transport.can_write_eof():
            self.transport.write_eof()  # the client reads the 431 and closes its side
            self.loop.call_later(DRAIN_SECONDS, self.transport.close)
        else:
            self.transport.close()


def bounded_http(max_head_bytes: int) -> type[BoundedHttpToolsProtocol]:
    """The protocol class to pass as `uvicorn.Config(http=…)` for a given head bound."""
    return type(
        "BoundedHttpToolsProtocol",
        (BoundedHttpToolsProtocol,),
        {"max_head_bytes": max_head_bytes, "__module__": __name__},
    )


__all__ = ["DEFAULT_MAX_HEADER_BYTES", "BoundedHttpToolsProtocol", "HeadTooLarge", "bounded_http"]
