"""Generate docs/CONFIGURATION.md from the services' settings classes (`python -m journeywatch.cli.configdoc`)."""

from __future__ import annotations

import sys
from pathlib import Path

from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

from journeywatch.api.settings import ApiSettings
from journeywatch.detector.settings import DetectorSettings
from journeywatch.ingest.settings import IngestSettings
from journeywatch.notifier.settings import NotifierSettings
from journeywatch.shared.settings import ENV_PREFIX, CommonSettings

SECTIONS: tuple[tuple[str, type[BaseSettings]], ...] = (
    ("Every service (Kafka, database, journeys, logging)", CommonSettings),
    ("ingest (`python -m journeywatch.ingest`)", IngestSettings),
    ("detector (`python -m journeywatch.detector`)", DetectorSettings),
    ("api (`python -m journeywatch.api`)", ApiSettings),
    ("notifier (`python -m journeywatch.notifier`)", NotifierSettings),
)


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    value = info.get_default(call_default_factory=True)
    if value is None or value == ():
        return "unset"
    if hasattr(value, "get_secret_value"):
        return "(secret)"
    return f"`{value}`"


def render() -> str:
    """The whole CONFIGURATION.md text."""
    lines = [
        "# Configuration",
        "",
        "Every setting is an environment variable (prefix `JOURNEYWATCH_`), read once by each",
        "service's composition root. Generated from the settings classes by",
        "`python -m journeywatch.cli.configdoc > docs/CONFIGURATION.md`; a test keeps it current.",
        "Secrets (keys, passwords) are `SecretStr` and never logged.",
        "",
    ]
    common = set(CommonSettings.model_fields)
    for title, cls in SECTIONS:
        fields = {
            name: info
            for name, info in cls.model_fields.items()
            if cls is CommonSettings or name not in common
        }
        lines += [f"## {title}", "", "| variable | default | meaning |", "|---|---|---|"]
        for name, info in fields.items():
            meaning = (info.description or "").replace("|", "\\|").replace("\n", " ")
            lines.append(f"| `{ENV_PREFIX}{name.upper()}` | {_default(info)} | {meaning} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    """Print the document (or write it to the path given as the only argument)."""
    text = render()
    if len(sys.argv) > 1:
        Path(sys.argv[1]).write_text(text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
