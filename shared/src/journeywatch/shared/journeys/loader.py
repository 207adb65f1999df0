"""Load journey definitions from YAML or TOML, with errors that name the file, line and key."""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from journeywatch.shared.journeys.model import JourneyCatalog, JourneyConfigError, JourneyFieldError

BUNDLED_JOURNEYS = "ecommerce.yaml"
EXAMPLES = ("subscription.yaml",)
"""Worked examples shipped under `journeys/examples/` (docs/JOURNEYS.md)."""

Loc = tuple[int | str, ...]


def example_path(name: str) -> Path:
    """Path of a shipped example journey file, e.g. ``example_path("subscription.yaml")``."""
    root = resources.files("journeywatch.shared.journeys").joinpath("examples", name)
    return Path(str(root))


def load_journeys(path: Path | None = None) -> JourneyCatalog:
    """Load and validate a journey file; None loads the bundled e-commerce journey.

    Raises JourneyConfigError whose message has one line per problem, each
    ``FILE:LINE: KEY.PATH: what is wrong`` (TOML files have no line numbers).
    """
    if path is None:
        text = (
            resources.files("journeywatch.shared.journeys").joinpath(BUNDLED_JOURNEYS).read_text()
        )
        return _parse(text, f"<bundled {BUNDLED_JOURNEYS}>", toml=False)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise JourneyConfigError(f"{path}: cannot read journey file: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise JourneyConfigError(f"{path}: not a UTF-8 text file ({exc.reason})") from exc
    return _parse(text, str(path), toml=path.suffix.lower() == ".toml")


def _parse(text: str, source: str, *, toml: bool) -> JourneyCatalog:
    node: yaml.Node | None = None
    try:
        if toml:
            data: Any = tomllib.loads(text)
        else:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
            data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{source}:{mark.line + 1}" if mark else source
        raise JourneyConfigError(f"{where}: invalid YAML: {exc.problem}") from exc
    except yaml.YAMLError as exc:
        raise JourneyConfigError(f"{source}: invalid YAML: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise JourneyConfigError(f"{source}: invalid TOML: {exc}") from exc
    if not isinstance(data, dict):
        raise JourneyConfigError(
            f"{source}:1: expected a mapping with 'default_journey' and 'journeys' at the top level"
        )
    # YAML lets a repeated key silently replace the first one; a journey file never means that.
    duplicates = [
        f"{source}:{line}: {key}: duplicate key (the later one would silently win)"
        for line, key in _duplicate_keys(node, ())
    ]
    if duplicates:
        raise JourneyConfigError("invalid journey configuration:\n  " + "\n  ".join(duplicates))
    try:
        return JourneyCatalog.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc: Loc = tuple(error["loc"])
            found = (error.get("ctx") or {}).get("error")
            if isinstance(found, JourneyFieldError):
                loc += found.loc
            key = _dotted(loc) or "(top level)"
            line = _line_of(node, loc)
            where = f"{source}:{line}" if line else source
            problems.append(f"{where}: {key}: {_problem(error)}")
        raise JourneyConfigError(
            "invalid journey configuration:\n  " + "\n  ".join(problems)
        ) from exc


def _dotted(loc: Loc) -> str:
    """``journeys.shop.steps[2].from`` for a location path."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _problem(error: Any) -> str:
    """Pydantic's message, in the words of a journey file."""
    kind, value = error["type"], error.get("input")
    if kind == "extra_forbidden":
        return "unknown key (docs/JOURNEYS.md lists the keys)"
    if kind == "missing":
        return "required key is missing"
    if kind == "too_short":
        ctx = error.get("ctx") or {}
        least, actual = ctx.get("min_length", 1), ctx.get("actual_length", 0)
        return (
            f"needs at least {least} {'entry' if least == 1 else 'entries'}, got {actual or 'none'}"
        )
    if kind == "string_pattern_mismatch":
        return (
            "expected a lowercase name (a-z, 0-9 and _, starting with a letter, at most 63), "
            f"got {value!r}"
        )
    message = str(error["msg"]).removeprefix("Value error, ")
    if "input" in error and not isinstance(value, dict | list) and "got" not in message:
        message += f", got {value!r}"
    return message


def _duplicate_keys(node: yaml.Node | None, path: Loc) -> list[tuple[int, str]]:
    """(line, dotted key) of every key that appears twice in the same YAML mapping."""
    found: list[tuple[int, str]] = []
    if isinstance(node, yaml.MappingNode):
        seen: set[object] = set()
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else str(key.start_mark)
            if name in seen:
                found.append((key.start_mark.line + 1, _dotted((*path, name))))
            seen.add(name)
            found.extend(_duplicate_keys(value, (*path, name)))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            found.extend(_duplicate_keys(item, (*path, index)))
    return found


def _line_of(node: yaml.Node | None, loc: Loc) -> int | None:
    """The 1-based line of the deepest YAML key or item on the error's path."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            pair = next(((k, v) for k, v in node.value if k.value == part), None)
            if pair is None:
                break
            line, node = pair[0].start_mark.line + 1, pair[1]
        elif (
            isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value)
        ):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line
