"""Every member ships a license and metadata (issue 12): the LICENSE file, and the installed
distributions carry License-Expression, a summary and a homepage."""

from __future__ import annotations

import tomllib
from importlib.metadata import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MEMBERS = sorted(
    [
        REPO / "shared",
        *(p for p in (REPO / "services").iterdir() if (p / "pyproject.toml").exists()),
    ]
)


def test_license_file_is_the_apache_2_text() -> None:
    text = (REPO / "LICENSE").read_text()
    assert "Apache License" in text
    assert "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text


def test_every_member_is_listed() -> None:
    names = {p.name for p in MEMBERS}
    assert {"shared", "ingest", "detector", "api", "notifier", "cli"} <= names


@pytest.mark.parametrize("member", MEMBERS, ids=lambda p: p.name)
def test_member_metadata(member: Path) -> None:
    project = tomllib.loads((member / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"
    assert project["description"]
    assert project["urls"]["Homepage"].startswith("https://")
    installed = metadata(project["name"])  # what `make install` built from that file
    assert installed["License-Expression"] == "Apache-2.0"
    assert installed["Summary"] == project["description"]
