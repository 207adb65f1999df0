"""The Dockerfile, without Docker: what it copies exists, every member is installed (regular, not
editable, pinned by constraints.txt), the runtime user is not root, and the modules the compose
services run are in the installed sources."""

from __future__ import annotations

import fnmatch
import re
import shlex
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        result.append((keyword.upper(), rest.strip()))
    return result


def dockerignore_patterns() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]


def ignored(path: str) -> bool:
    """Docker's rule: the last matching pattern wins; `!` re-includes."""
    result = False
    for pattern in dockerignore_patterns():
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(
            fnmatch.fnmatch(p, pattern) or fnmatch.fnmatch(p, f"**/{pattern}") for p in prefixes
        ):
            result = not negate
    return result


def members() -> list[str]:
    makefile = (REPO / "Makefile").read_text()
    return re.search(r"^MEMBERS := (.+)$", makefile, flags=re.MULTILINE).group(1).split()  # type: ignore[union-attr]


def copied_sources() -> list[str]:
    sources: list[str] = []
    for keyword, args in instructions():
        if keyword != "COPY":
            continue
        words = shlex.split(args)
        if any(w.startswith("--from") for w in words):
            continue
        sources.extend(w for w in words[:-1] if not w.startswith("--"))
    return sources


def test_multi_stage_with_non_root_runtime_user() -> None:
    steps = instructions()
    froms = [i for i, (k, _) in enumerate(steps) if k == "FROM"]
    assert len(froms) >= 2
    final_stage = steps[froms[-1] :]
    users = [args for k, args in final_stage if k == "USER"]
    assert users, "the runtime stage sets a USER"
    assert users[-1].split(":")[0] not in {"root", "0"}
    assert any(k == "COPY" and "--from=" in args for k, args in final_stage)


def test_copy_sources_exist_and_are_not_dockerignored() -> None:
    sources = copied_sources()
    assert sources
    for source in sources:
        path = source.rstrip("/")
        assert (REPO / path).exists(), f"COPY {source}: not in the repo"
        assert not ignored(path), f"COPY {source}: excluded by .dockerignore"


def test_every_member_is_copied_and_installed_regularly() -> None:
    run = " ".join(args for k, args in instructions() if k == "RUN")
    sources = {s.rstrip("/") for s in copied_sources()}
    for member in members():
        assert f"{member}/pyproject.toml" in sources or member in sources, member
        assert f"{member}/src" in sources or member in sources, member
        assert f"./{member}" in run.split(), f"{member} is not pip-installed"
    assert "pip install -c constraints.txt" in run
    assert " -e " not in f" {run} "
    assert "--editable" not in run


def test_dockerignore_keeps_local_state_out() -> None:
    for path in (".git", ".venv", "var", "services/api/src/journeywatch/api/__pycache__"):
        assert ignored(path), path
    assert not ignored("shared/src/journeywatch/shared/journeys/ecommerce.yaml")


def test_compose_modules_exist_in_the_installed_sources() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    roots = [REPO / m / "src" for m in members()]
    for name, service in compose["services"].items():
        command = service.get("command")
        if not (isinstance(command, list) and command[:2] == ["python", "-m"]):
            continue
        module = command[2].replace(".", "/")
        assert any((root / module / "__main__.py").is_file() for root in roots), (
            f"{name}: python -m {command[2]} has no __main__.py in any member"
        )
