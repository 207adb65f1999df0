"""The command line's rough edges: help everywhere, one-line errors, env defaults, --version."""

import argparse
from collections.abc import Iterator
from pathlib import Path

import pytest

from journeywatch.cli.main import EnvError, apply_env_defaults, build_parser, check_ports, main


def _parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def test_every_option_has_help_text() -> None:
    missing = [
        f"{parser.prog} {action.option_strings or action.dest}"
        for parser in _parsers(build_parser())
        for action in parser._actions
        if not isinstance(action, argparse._SubParsersAction) and not action.help
    ]
    assert missing == []


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (
            ["--log-level", "verbose", "simulate"],
            "journeywatch: --log-level: expected one of DEBUG, INFO, WARNING, ERROR, CRITICAL, "
            "got 'verbose' (see journeywatch --help)",
        ),
        (
            ["simulate", "--rate", "abc"],
            "journeywatch simulate: --rate: expected a positive number, got 'abc' "
            "(see journeywatch simulate --help)",
        ),
        (
            ["simulate", "--concurrency", "0"],
            "journeywatch simulate: --concurrency: expected a whole number of at least 1, "
            "got '0' (see journeywatch simulate --help)",
        ),
        (
            ["replay", "f.jsonl", "--batch-size", "0"],
            "journeywatch replay: --batch-size: expected a whole number of at least 1, got '0' "
            "(see journeywatch replay --help)",
        ),
        (
            ["run", "--backlog", "ages"],
            "journeywatch run: --backlog: expected a duration such as 90s, 5m, 1h30m or 7d, "
            "got 'ages' (see journeywatch run --help)",
        ),
    ],
)
def test_bad_option_is_one_line(
    argv: list[str], line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(argv)
    assert exc.value.code == 2
    assert capsys.readouterr().err.splitlines() == [line]


def test_run_defaults_come_from_the_environment() -> None:
    args = build_parser().parse_args(["run", "--seed", "7"])
    apply_env_defaults(
        args, {"JOURNEYWATCH_DEMO_RATE": "40", "JOURNEYWATCH_DEMO_BACKLOG": "2h", "X": "y"}
    )
    assert (args.rate, args.seed, args.backlog, args.incident_after) == (40.0, 7, 7200.0, 60.0)
    assert args.incident == "payment_outage:mobile"
    assert args.log_level == "INFO"


def test_an_option_wins_over_its_variable() -> None:
    args = build_parser().parse_args(["run", "--rate", "5"])
    apply_env_defaults(args, {"JOURNEYWATCH_DEMO_RATE": "abc"})
    assert args.rate == 5.0


@pytest.mark.parametrize(
    ("variable", "value", "line"),
    [
        ("JOURNEYWATCH_DEMO_RATE", "abc", "expected a positive number, got 'abc'"),
        ("JOURNEYWATCH_DEMO_SEED", "x1", "expected a whole number, got 'x1'"),
        ("JOURNEYWATCH_DEMO_INCIDENT", "meteor", "expected NAME[:CHANNEL] with NAME one of"),
        ("JOURNEYWATCH_LOG_LEVEL", "verbose", "expected one of DEBUG"),
    ],
)
def test_bad_variable_names_itself(variable: str, value: str, line: str) -> None:
    args = build_parser().parse_args(["run"])
    with pytest.raises(EnvError, match=rf"^{variable}: {line}".replace("[", r"\[")):
        apply_env_defaults(args, {variable: value})


def test_main_reports_a_bad_variable_without_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("JOURNEYWATCH_DEMO_RATE", "abc")
    assert main(["run"]) == 2
    assert capsys.readouterr().err == (
        "journeywatch run: JOURNEYWATCH_DEMO_RATE: expected a positive number, got 'abc'\n"
    )


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out == "journeywatch 0.1.0\n"


def test_simulate_takes_a_journey_file(tmp_path: Path) -> None:
    args = build_parser().parse_args(
        ["simulate", "--journeys", str(tmp_path / "j.yaml"), "--journey", "signup"]
    )
    assert (args.journeys, args.journey) == (tmp_path / "j.yaml", "signup")


def test_simulate_refuses_a_bad_journey_file_before_sending(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "j.yaml"
    path.write_text("default_journey: a\njourneys:\n  a:\n    stages: []\n")
    assert main(["simulate", "--journeys", str(path), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"journeywatch simulate: {path}:4: journeys.a.stages: needs at least 1 entry, got none"
    ]
    assert not (tmp_path / "out").exists()


def test_port_variable_behind_a_default_url(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("JOURNEYWATCH_API_PORT", "80OO")
    assert main(["replay", "history.jsonl"]) == 2
    assert capsys.readouterr().err == (
        "journeywatch replay: JOURNEYWATCH_API_PORT: expected a port number (1-65535), got '80OO'\n"
    )
    # an explicit URL makes the variable irrelevant
    args = build_parser().parse_args(["replay", "h.jsonl", "--api-url", "http://x:1"])
    args.ingest_url = "http://x:2"
    check_ports(args, {"JOURNEYWATCH_API_PORT": "80OO"})


def test_run_checks_every_variable_and_the_journey_file_before_starting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from journeywatch.cli.run import check_environment

    monkeypatch.setenv("JOURNEYWATCH_WINDOW_SECONDS", "1m")
    monkeypatch.setenv("JOURNEYWATCH_RUN_RESTART_WINDOW", "soon")
    env = {"JOURNEYWATCH_WINDOW_SECONDS": "1m", "JOURNEYWATCH_RUN_RESTART_WINDOW": "soon"}
    assert check_environment(env, tmp_path) == [
        "JOURNEYWATCH_WINDOW_SECONDS: expected a whole number of seconds, got '1m'"
    ]  # the orchestrator stops at its first bad value, here one the services already named
    monkeypatch.delenv("JOURNEYWATCH_WINDOW_SECONDS")
    assert check_environment({"JOURNEYWATCH_RUN_RESTART_WINDOW": "soon"}, tmp_path) == [
        "JOURNEYWATCH_RUN_RESTART_WINDOW: expected a duration such as 90s, 5m or 1h, got 'soon'"
    ]
    monkeypatch.delenv("JOURNEYWATCH_RUN_RESTART_WINDOW")
    journeys = tmp_path / "j.yaml"
    journeys.write_text(
        "default_journey: b\njourneys:\n  a:\n    stages: [{name: s, touchpoints: [t]}]\n"
    )
    monkeypatch.setenv("JOURNEYWATCH_JOURNEYS_FILE", str(journeys))
    assert check_environment({}, tmp_path) == [
        f"{journeys}:1: default_journey: default_journey 'b' is not among the journeys (a)"
    ]
