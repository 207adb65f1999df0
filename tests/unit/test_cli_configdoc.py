"""docs/CONFIGURATION.md lists the command line's variables too, with defaults as people type them."""

import re

from journeywatch.cli.configdoc import render
from journeywatch.cli.main import ENV_DEFAULTS


def test_command_line_variables_are_documented() -> None:
    text = render()
    for name in (
        "JOURNEYWATCH_SIMULATE",
        "JOURNEYWATCH_API_KEY",
        *(variable for variable, _, _ in ENV_DEFAULTS.values()),
    ):
        assert re.search(rf"^\| `{name}` \| [^|]+ \| [^|]+", text, re.MULTILINE), name


def test_defaults_are_not_python_reprs() -> None:
    text = render()
    defaults = [line.split(" | ")[1] for line in text.splitlines() if line.startswith("| `")]
    assert defaults, "no table rows"
    for default in defaults:
        assert default not in ("`True`", "`False`", "``"), default
        assert not default.startswith(("`(", "`[", "`{")), default
    assert "| `JOURNEYWATCH_DETECTOR_CONTRIBUTOR_DIMENSIONS` | `channel,device,country` |" in text
    assert "| `JOURNEYWATCH_KAFKA_CREATE_TOPICS` | `true` |" in text
    assert "| `JOURNEYWATCH_DEMO_RATE` | `25` |" in text
