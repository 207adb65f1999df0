"""Content-Encoding of request bodies: gzip and deflate, decompressed under a size cap."""

from __future__ import annotations

import zlib
from typing import Final

from journeywatch.ingest.errors import InvalidEncoding, PayloadTooLarge, UnsupportedEncoding

# zlib window bits: gzip wrapper, zlib wrapper (RFC 1950, what HTTP calls "deflate"), raw
# deflate (RFC 1951, which some clients send as "deflate" all the same).
_GZIP: Final = 16 + zlib.MAX_WBITS
_ZLIB: Final = zlib.MAX_WBITS
_RAW: Final = -zlib.MAX_WBITS
_CHUNK: Final = 64 * 1024
SUPPORTED: Final = ("gzip", "x-gzip", "deflate", "identity")


def decode_body(body: bytes, content_encoding: str | None, limit: int) -> bytes:
    """The body with its Content-Encoding undone, at most `limit` bytes once decoded.

    Parameters
    ----------
    body
        The bytes as received (already bounded by the same limit).
    content_encoding
        The request's Content-Encoding header: `gzip`, `x-gzip`, `deflate`, `identity`, or a
        comma-separated list of them applied in order.
    limit
        Largest decoded size; beyond it PayloadTooLarge (413). The output is produced in
        bounded steps and never grows past `limit + 1` bytes, so a decompression bomb
        (a few KiB that inflate to GiB) costs no more memory than an honest body.

    Examples
    --------
    >>> import gzip
    >>> decode_body(gzip.compress(b'{"a": 1}'), "gzip", 1024)
    b'{"a": 1}'
    >>> decode_body(zlib.compress(b"[]"), "deflate", 1024)
    b'[]'
    >>> decode_body(gzip.compress(b"0" * 5000), "gzip", 1024)
    Traceback (most recent call last):
    ...
    journeywatch.ingest.errors.PayloadTooLarge: the decompressed body exceeds the limit of 1024 bytes
    """
    if not content_encoding:
        return body
    codings = [c.strip().lower() for c in content_encoding.split(",") if c.strip()]
    for coding in reversed(codings):  # the last coding listed was applied last
        if coding == "identity":
            continue
        if coding in ("gzip", "x-gzip"):
            body = _inflate(body, _GZIP, limit, coding)
        elif coding == "deflate":
            try:
                body = _inflate(body, _ZLIB, limit, coding)
            except InvalidEncoding:
                body = _inflate(body, _RAW, limit, coding)
        else:
            raise UnsupportedEncoding(
                f"Content-Encoding {coding!r} is not supported; send gzip, deflate or identity",
                headers={"Accept-Encoding": "gzip, deflate"},
            )
    return body


def _inflate(data: bytes, wbits: int, limit: int, coding: str) -> bytes:
    decompressor = zlib.decompressobj(wbits)
    out = bytearray()
    pending = data
    try:
        while True:
            # max_length bounds each step's output; the rest of the input waits in
            # unconsumed_tail, so memory stays bounded by the limit whatever the ratio.
            out += decompressor.decompress(pending, min(_CHUNK, limit + 1 - len(out)))
            if len(out) > limit:
                raise PayloadTooLarge(f"the decompressed body exceeds the limit of {limit} bytes")
            pending = decompressor.unconsumed_tail
            if not pending:
                break
        out += decompressor.flush(limit + 1 - len(out))
    except zlib.error as exc:
        raise InvalidEncoding(f"the body is not valid {coding} data: {exc}") from None
    if len(out) > limit:
        raise PayloadTooLarge(f"the decompressed body exceeds the limit of {limit} bytes")
    if not decompressor.eof:
        raise InvalidEncoding(f"the {coding} body is truncated")
    if decompressor.unused_data and wbits == _GZIP:
        # Concatenated gzip members are legal (RFC 1952 §2.2); decode the next one too.
        rest = _inflate(decompressor.unused_data, wbits, limit - len(out), coding)
        out += rest
    return bytes(out)
