"""API keys with scopes: parsed from settings, held only as sha256 digests, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Final, Literal

Scope = Literal["read", "write"]
SCOPES: Final[frozenset[str]] = frozenset({"read", "write"})
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


@dataclass(frozen=True)
class ApiKey:
    """One accepted key: its sha256 digest and the scopes it grants."""

    digest: bytes
    scopes: frozenset[str]

    @property
    def label(self) -> str:
        """A short, non-secret name for logs."""
        return "key-" + self.digest.hex()[:8]


def digest(key: str) -> bytes:
    """sha256 of a presented key."""
    return hashlib.sha256(key.encode()).digest()


def parse_api_keys(raw: str | None) -> tuple[ApiKey, ...]:
    """Parse `KEY:SCOPES;…`. KEY is plaintext, `sha256:<hex>` or a bare 64-hex digest."""
    keys: list[ApiKey] = []
    for entry in (raw or "").replace("\n", ";").split(";"):
        entry = entry.strip()
        if not entry:
            continue
        key, sep, scope_text = entry.rpartition(":")
        if not sep or not key or key == "sha256":
            key, scope_text = entry, "read"
        scopes = frozenset(s.strip() for s in scope_text.split(",") if s.strip())
        unknown = scopes - SCOPES
        if unknown or not scopes:
            raise ValueError(
                f"JOURNEYWATCH_API_KEYS: unknown scope(s) {sorted(unknown)} (allowed: read, write)"
            )
        if key.startswith("sha256:") and _HEX64.match(key[7:]):
            raw_digest = bytes.fromhex(key[7:])
        elif _HEX64.match(key):
            raw_digest = bytes.fromhex(key)
        else:
            raw_digest = digest(key)
        if "write" in scopes:  # a key that may write may also read
            scopes = scopes | {"read"}
        keys.append(ApiKey(raw_digest, scopes))
    return tuple(keys)


class Authenticator:
    """Checks a presented key against every configured digest without early exit."""

    def __init__(self, keys: tuple[ApiKey, ...]) -> None:
        self.keys = keys

    @property
    def enabled(self) -> bool:
        """False when no keys are configured (the API then runs open)."""
        return bool(self.keys)

    def identify(self, presented: str | None) -> ApiKey | None:
        """The matching key, or None; timing does not depend on which key (if any) matched."""
        if presented is None:
            return None
        candidate = digest(presented)
        found: ApiKey | None = None
        for key in self.keys:
            if hmac.compare_digest(candidate, key.digest) and found is None:
                found = key
        return found
