"""Generate docs/CONFIGURATION.md from the services' settings classes (`python -m journeywatch.cli.configdoc`)."""

from __future__ import annotations

import sys
from enum import Enum
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


# Read by `journeywatch run` itself (the orchestrator and its demo traffic), not by a settings
# class: (variable, default, meaning). The demo's defaults come from the option table.
COMMAND_LINE: tuple[tuple[str, str, str], ...] = (
    ("JOURNEYWATCH_SIMULATE", "1", "`0`, `false`, `no` or `off`: `journeywatch run` sends no demo "
     "traffic (= `--no-simulate`)."),
    ("JOURNEYWATCH_DEMO_RATE", "", "Demo traffic right now, in events/s (`--rate`); the daily "
     "cycle shapes the history before it."),
    ("JOURNEYWATCH_DEMO_BACKLOG", "", "Event-time history sent first, as fast as the stack takes "
     "it, so the detector has warmed up (`--backlog`, a duration: `45m`, `2h`)."),
    ("JOURNEYWATCH_DEMO_INCIDENT", "", "`NAME[:CHANNEL]` of the demo incident, or `none` "
     "(`--incident`; names: `journeywatch simulate --help`)."),
    ("JOURNEYWATCH_DEMO_INCIDENT_AFTER", "", "When the demo incident starts, after the live "
     "traffic starts (`--incident-after`)."),
    ("JOURNEYWATCH_DEMO_INCIDENT_DURATION", "", "How long the demo incident lasts "
     "(`--incident-duration`)."),
    ("JOURNEYWATCH_DEMO_SEED", "", "Seed of the demo traffic (`--seed`): same seed, same traffic."),
    ("JOURNEYWATCH_API_KEY", "unset", "Key `simulate`, `replay` and the demo send to ingest as a "
     "Bearer token (`--api-key`); unset: the first of `JOURNEYWATCH_INGEST_API_KEYS` for the "
     "demo, none for the commands."),
    ("JOURNEYWATCH_RUN_READY_TIMEOUT", "90", "Seconds each service may take to become ready."),
    ("JOURNEYWATCH_RUN_MAX_RESTARTS", "5", "Restarts of one crashed service allowed within the "
     "window (0: none; then `run` stops everything and exits 1)."),
    ("JOURNEYWATCH_RUN_RESTART_WINDOW", "5m", "The window those restarts are counted in."),
    ("JOURNEYWATCH_RUN_RESTART_BACKOFF", "1s", "Pause before the first restart within the "
     "window; doubles each time, at most 30 s."),
)  # fmt: skip


def _plain(value: object) -> str:
    """A default as a person would type it into the variable (no Python reprs)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple | list | set | frozenset):
        return ",".join(_plain(item) for item in value)
    if isinstance(value, Enum):
        return str(value.value)
    return str(value)


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    value = info.get_default(call_default_factory=True)
    if value is None or value == ():
        return "unset"
    if hasattr(value, "get_secret_value"):
        return "(secret)"
    if value == "":
        return "empty"
    return f"`{_plain(value)}`"


def _command_line_rows() -> list[str]:
    from journeywatch.cli.main import ENV_DEFAULTS

    demo = {variable: fallback for variable, fallback, _ in ENV_DEFAULTS.values()}
    rows = []
    for variable, default, meaning in COMMAND_LINE:
        shown = default or demo[variable]
        cell = shown if shown == "unset" else f"`{shown}`"
        rows.append(f"| `{variable}` | {cell} | {meaning} |")
    return rows


def render() -> str:
    """The whole CONFIGURATION.md text."""
    lines = [
        "# Configuration",
        "",
        "Every setting is an environment variable (prefix `JOURNEYWATCH_`), read once by each",
        "service's composition root; a bad value stops the service with one line naming the",
        "variable, the expected form and the value (exit 2). Generated from the settings classes by",
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
    lines += [
        "## The command line (`journeywatch run`, `simulate`, `replay`)",
        "",
        "Read by the commands themselves; an option given on the command line wins over its "
        "variable.",
        "A bad value stops the command with one line naming the variable (exit 2).",
        "",
        "| variable | default | meaning |",
        "|---|---|---|",
        *_command_line_rows(),
        "",
    ]
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
