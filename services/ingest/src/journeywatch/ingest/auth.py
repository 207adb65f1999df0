"""API-key and Segment write-key checks (constant time, keys never logged)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable

from pydantic import SecretStr
from starlette.datastructures import Headers

from journeywatch.ingest.errors import Forbidden, Unauthenticated


class KeyChecker:
    """Accepts any of the configured keys; with no keys configured, every request is allowed."""

    def __init__(self, keys: Iterable[SecretStr], *, basic: bool) -> None:
        # Compare SHA-256 digests so neither length nor content leaks through timing.
        self._digests = tuple(_digest(key.get_secret_value()) for key in keys)
        self._basic = basic

    @property
    def enabled(self) -> bool:
        """Whether requests must carry a key."""
        return bool(self._digests)

    def check(self, headers: Headers, body_key: str | None = None) -> None:
        """Raise Unauthenticated (no key sent) or Forbidden (not a configured key).

        `body_key` is a key sent in the body (Segment's `writeKey`), used when the headers
        carry none.
        """
        if not self._digests:
            return
        presented = self.presented(headers) or body_key
        if presented is None:
            challenge = 'Basic realm="journeywatch"' if self._basic else "Bearer"
            how = (
                "HTTP Basic with the write key as username, `writeKey` in the body, a Bearer "
                "token or X-API-Key"
                if self._basic
                else "`Authorization: Bearer KEY` or `X-API-Key: KEY`"
            )
            raise Unauthenticated(
                f"this endpoint needs a key: send {how}",
                headers={"WWW-Authenticate": challenge},
            )
        candidate = _digest(presented)
        match = False
        for digest in self._digests:  # no early exit: constant time in the number of keys
            match |= hmac.compare_digest(candidate, digest)
        if not match:
            raise Forbidden("the key sent is not valid for this endpoint")

    def presented(self, headers: Headers) -> str | None:
        """The key carried by the request, if any."""
        api_key = headers.get("x-api-key")
        if api_key:
            return api_key.strip() or None
        authorization = headers.get("authorization", "")
        scheme, _, value = authorization.partition(" ")
        scheme, value = scheme.lower(), value.strip()
        if scheme == "bearer" and value:
            return value
        if self._basic and scheme == "basic" and value:
            try:
                decoded = base64.b64decode(value, validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                return None
            username, _, password = decoded.partition(":")
            return username or password or None
        return None


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()
