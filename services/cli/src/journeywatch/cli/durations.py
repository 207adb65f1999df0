"""Human durations for the command line: `90s`, `5m`, `1h30m`, `7d`, or plain seconds."""

from __future__ import annotations

import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_duration(text: str) -> float:
    """Seconds in a duration such as `90`, `90s`, `5m`, `1h30m`, `7d` (raises ValueError).

    >>> parse_duration("1h30m")
    5400.0
    >>> parse_duration("45")
    45.0
    """
    raw = text.strip().lower()
    if not raw:
        raise ValueError("empty duration")
    try:
        return _non_negative(float(raw), text)
    except ValueError:
        pass
    pos, total = 0, 0.0
    for match in _PART.finditer(raw):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(raw) or pos == 0:
        raise ValueError(f"{text!r} is not a duration (use e.g. 90s, 5m, 1h30m, 7d)")
    return _non_negative(total, text)


def format_duration(seconds: float) -> str:
    """Short human form of a duration (`1h30m`, `45s`).

    >>> format_duration(5400)
    '1h30m'
    """
    rest = round(seconds)
    if rest == 0:
        return "0s"
    out = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, rest = divmod(rest, size)
        if count:
            out.append(f"{count}{unit}")
    return "".join(out)


def _non_negative(value: float, text: str) -> float:
    if value < 0 or value != value:
        raise ValueError(f"{text!r}: a duration must be a non-negative number")
    return value
