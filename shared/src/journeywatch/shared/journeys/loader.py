"""Load journey definitions from YAML or TOML, with errors that name the file, line and key."""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from journeywatch.shared.journeys.model import JourneyCatalog, JourneyConfigError

BUNDLED_JOURNEYS = "ecommerce.yaml"


def load_journeys(path: Path | None = None) -> JourneyCatalog:
    """Load and validate a journey file; None loads the bundled e-commerce journey."""
    if path is None:
        text = (
            resources.files("journeywatch.shared.journeys").joinpath(BUNDLED_JOURNEYS).read_text()
        )
        return _parse(text, f"<bundled {BUNDLED_JOURNEYS}>", toml=False)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise JourneyConfigError(f"{path}: cannot read journey file: {exc.strerror}") from exc
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
    except tomllib.TOMLDecodeError as exc:
        raise JourneyConfigError(f"{source}: invalid TOML: {exc}") from exc
    if not isinstance(data, dict):
        raise JourneyConfigError(f"{source}: expected a mapping with 'journeys' at the top level")
    try:
        return JourneyCatalog.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = tuple(error["loc"])
            key = ".".join(str(part) for part in loc) or "(top level)"
            line = _line_of(node, loc)
            where = f"{source}:{line}" if line else source
            problems.append(f"{where}: {key}: {error['msg']}")
        raise JourneyConfigError(
            "invalid journey configuration:\n  " + "\n  ".join(problems)
        ) from exc


def _line_of(node: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
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
