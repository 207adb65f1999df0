"""`journeywatch run`: starts the stack, restarts crashed services, stops in order, no orphans."""

from __future__ import annotations

import asyncio
import importlib.util
import io
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from journeywatch.cli.run import Console, RestartPolicy, ServiceSpec, Stack, StackError
from journeywatch.shared.broker import LocalBroker, free_port
from tests.conftest import wait_until
from tests.integration.run_support import Run, end_and_committed, metric, send_events

pytestmark = pytest.mark.integration

SERVICES = ("journeywatch.ingest", "journeywatch.detector", "journeywatch.api")


def alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def group_members(pgids: set[int]) -> list[int]:
    """Live processes whose process group is one of `pgids`."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if fields[0] != "Z" and int(fields[2]) in pgids:
            members.append(int(entry))
    return members


# -- the orchestrator with stand-in children (no services needed) ---------------------------

STUBBORN = """
import signal, subprocess, sys, time
helper = subprocess.Popen(["sleep", "300"])
print("helper", helper.pid, flush=True)
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))  # exits, leaving its helper behind
while True:
    time.sleep(0.1)
"""

CRASHES = "import sys, time; print('working', flush=True); time.sleep(0.5); sys.exit(3)"


async def test_stop_kills_the_whole_process_group_of_a_child() -> None:
    out = io.StringIO()
    stack = Stack(dict(os.environ), Console(out))
    child = await stack.start(ServiceSpec("stubborn", [sys.executable, "-c", STUBBORN]))
    deadline = time.monotonic() + 10
    while "helper" not in out.getvalue():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    helper = int(re.search(r"helper (\d+)", out.getvalue()).group(1))  # type: ignore[union-attr]
    assert alive(helper)
    await stack.stop_all(())
    assert not alive(child.pid)
    await wait_until(lambda: not alive(helper), timeout=10)  # SIGKILLed with its group
    assert "stopped stubborn (exit code 0)" in out.getvalue()


async def test_a_dying_child_is_reported() -> None:
    out = io.StringIO()
    stack = Stack(dict(os.environ), Console(out))
    await stack.start(ServiceSpec("crasher", [sys.executable, "-c", CRASHES]))
    sleeper = await stack.start(ServiceSpec("sleeper", ["sleep", "300"], stop_timeout=5))
    await asyncio.wait_for(stack.died.wait(), 10)
    assert [c.spec.name for c in stack.dead()] == ["crasher"]
    assert "crasher (pid" in out.getvalue()
    assert "exited unexpectedly with code 3" in out.getvalue()
    assert " crasher | working" in out.getvalue()
    await stack.stop_all(("sleeper",))
    assert not alive(sleeper.pid)


async def test_readiness_wait_fails_fast_when_the_child_dies() -> None:
    stack = Stack(dict(os.environ), Console(io.StringIO()))
    child = await stack.start(
        ServiceSpec("crasher", [sys.executable, "-c", CRASHES], ready_port=free_port())
    )
    from journeywatch.cli.run import StackError

    with pytest.raises(StackError, match="crasher exited with code 3 while starting"):
        await stack.wait_ready(child, 20, asyncio.Event())
    await stack.stop_all(())


CRASHES_ONCE = """
import pathlib, sys, time
marker = pathlib.Path(sys.argv[1])
if not marker.exists():
    marker.write_text("crashed")
    print("crashing", flush=True)
    sys.exit(7)
print("up", flush=True)
while True:
    time.sleep(0.1)
"""

FAST = RestartPolicy(max_restarts=2, window=60, backoff=0.05)


async def test_a_crashed_service_is_restarted_and_stays_up(tmp_path: Path) -> None:
    out = io.StringIO()
    stack = Stack(dict(os.environ), Console(out))
    argv = [sys.executable, "-c", CRASHES_ONCE, str(tmp_path / "marker")]
    first = await stack.start(ServiceSpec("flaky", argv, restartable=True, stop_timeout=5))
    stop = asyncio.Event()
    supervisor = asyncio.create_task(stack.supervise(stop, FAST, ready_timeout=20))
    deadline = time.monotonic() + 30
    while "flaky is back" not in out.getvalue() or " flaky | up" not in out.getvalue():
        assert not supervisor.done(), out.getvalue()
        assert time.monotonic() < deadline, out.getvalue()
        await asyncio.sleep(0.05)
    [second] = stack.children
    assert second.pid != first.pid
    assert second.running
    assert "flaky (pid" in out.getvalue()
    assert "exited unexpectedly with code 7" in out.getvalue()
    assert "restarting flaky in 0.05s (restart 1 of at most 2 within 1m)" in out.getvalue()
    stop.set()
    await asyncio.wait_for(supervisor, 10)  # returns, no error
    await stack.stop_all(())
    assert not alive(second.pid)


async def test_a_service_that_keeps_dying_is_given_up_loudly() -> None:
    out = io.StringIO()
    stack = Stack(dict(os.environ), Console(out))
    await stack.start(ServiceSpec("crasher", [sys.executable, "-c", CRASHES], restartable=True))
    sleeper = await stack.start(ServiceSpec("sleeper", ["sleep", "300"], stop_timeout=5))
    with pytest.raises(
        StackError, match=r"crasher died 3 times within 1m \(2 of 2 restarts used\); giving up"
    ):
        await asyncio.wait_for(stack.supervise(asyncio.Event(), FAST, ready_timeout=20), 60)
    text = out.getvalue()
    assert text.count("exited unexpectedly with code 3") == 3
    assert "restart 2 of at most 2" in text
    assert "restart 3" not in text
    assert sleeper.running  # giving up is the caller's to act on: it stops the stack
    await stack.stop_all(())
    assert not alive(sleeper.pid)


async def test_a_dead_child_that_cannot_resume_stops_the_stack() -> None:
    stack = Stack(dict(os.environ), Console(io.StringIO()))
    await stack.start(ServiceSpec("broker", [sys.executable, "-c", CRASHES]))
    with pytest.raises(StackError, match="broker died; stopping the stack"):
        await asyncio.wait_for(stack.supervise(asyncio.Event(), FAST, ready_timeout=20), 30)
    await stack.stop_all(())


# -- the real stack ---------------------------------------------------------------------------


def _missing_services() -> list[str]:
    return [m for m in SERVICES if importlib.util.find_spec(f"{m}.__main__") is None]


@pytest.fixture(scope="module")
def bootstrap_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """This module's own broker (overrides the session one): the simulated traffic and the
    detectors started here must not mix with other tests' topics, and vice versa."""
    log = tmp_path_factory.mktemp("cli-broker") / "tansu.log"
    with LocalBroker(port=free_port(), log_path=log) as running:
        yield running.bootstrap_servers


@pytest.fixture
def stack_env(bootstrap_servers: str, tmp_path: Path) -> dict[str, str]:
    missing = _missing_services()
    if missing:
        pytest.skip(f"service entry points not there yet: {', '.join(missing)}")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("JOURNEYWATCH_") or k.startswith("JOURNEYWATCH_TEST_")
    }
    env.update(
        JOURNEYWATCH_KAFKA_BOOTSTRAP_SERVERS=bootstrap_servers,
        JOURNEYWATCH_INGEST_PORT=str(free_port()),
        JOURNEYWATCH_API_PORT=str(free_port()),
        JOURNEYWATCH_DETECTOR_METRICS_PORT=str(free_port()),
        JOURNEYWATCH_DETECTOR_GROUP_ID=f"run-test-{tmp_path.name}",
        JOURNEYWATCH_SIMULATE="0",
        JOURNEYWATCH_LOG_FORMAT="json",
    )
    return env


@pytest.mark.slow
def test_run_starts_everything_and_sigterm_leaves_no_orphan(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    run = Run(stack_env, tmp_path)
    try:
        run.wait_for("running; Ctrl-C stops everything", 120)
        pids = run.pids()
        assert set(pids) >= {"migrate", "ingest", "detector", "api"}
        assert f"127.0.0.1:{stack_env['JOURNEYWATCH_API_PORT']}/" in run.text
        assert (tmp_path / "var" / "journeywatch.db").exists()  # the default SQLite under var/
        children = {pids[name] for name in ("ingest", "detector", "api")}
        assert all(alive(pid) for pid in children)
        run.process.send_signal(signal.SIGTERM)
        assert run.process.wait(120) == 0, run.text[-5000:]
    finally:
        run.kill()
    run.wait_for("stopped everything (exit 0)", 5)
    order = [m[1] for m in re.finditer(r"stopped (\w+) \(exit code", run.text)]
    assert order == ["ingest", "detector", "api"]
    assert not [pid for pid in children if alive(pid)]
    assert group_members(children) == []


@pytest.mark.slow
def test_run_restarts_killed_services_and_the_detector_processes_new_events(
    stack_env: dict[str, str], bootstrap_servers: str, tmp_path: Path
) -> None:
    """kill -9 of the detector and the api: both come back, the broker and ingest stay up, and
    every event sent afterwards is processed. (This stopped the stack with exit 1 before.)"""
    group = stack_env["JOURNEYWATCH_DETECTOR_GROUP_ID"]
    ingest = f"http://127.0.0.1:{stack_env['JOURNEYWATCH_INGEST_PORT']}"
    api = f"http://127.0.0.1:{stack_env['JOURNEYWATCH_API_PORT']}/readyz"
    detector = f"http://127.0.0.1:{stack_env['JOURNEYWATCH_DETECTOR_METRICS_PORT']}/metrics"
    processed = "journeywatch_detector_events_processed_total"
    run = Run(stack_env, tmp_path)
    try:
        run.wait_for("running; Ctrl-C stops everything", 120)
        before, _ = end_and_committed(bootstrap_servers, group)  # other tests' events
        assert send_events(ingest, 300) == 300
        run.wait_until(lambda: metric(detector, processed) >= 300, 120, "first 300 processed")
        pids = run.pids()
        os.kill(pids["detector"], signal.SIGKILL)
        os.kill(pids["api"], signal.SIGKILL)
        run.wait_for("detector is back", 180)
        run.wait_for("api is back", 180)
        assert run.pids()["detector"] != pids["detector"]
        assert run.pids()["api"] != pids["api"]
        assert alive(pids["ingest"])
        assert httpx.get(api, timeout=10).status_code == 200
        assert send_events(ingest, 400) == 400
        # The new process handles the 400 (and may replay what the killed one had not
        # committed); the group's committed offsets reach the end of the topic.
        run.wait_until(lambda: metric(detector, processed) >= 400, 180, "next 400 processed")
        _wait_committed(run, bootstrap_servers, group, lambda e, c: e == c == before + 700, 120)
        # Both HTTP services bound their request heads (431), as served by `python -m`.
        for url in (api, f"{ingest}/readyz"):
            big = httpx.get(url, headers={"X-Big": "a" * 200_000}, timeout=10)
            assert big.status_code == 431, url
        run.process.send_signal(signal.SIGTERM)
        assert run.process.wait(150) == 0, run.tail(5000)
    finally:
        run.kill()
    assert run.text.count("exited unexpectedly with code -9 (SIGKILL)") == 2
    assert "restarting api in 1s (restart 1 of at most 5 within 5m)" in run.text
    assert "restarting detector in 1s (restart 1 of at most 5 within 5m)" in run.text
    assert "stopped everything (exit 0)" in run.text
    children = {pid for name, pid in run.pids().items() if name != "migrate"} | set(pids.values())
    assert group_members(children) == []


@pytest.mark.slow
def test_run_gives_up_loudly_and_stops_everything(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**stack_env, "JOURNEYWATCH_RUN_MAX_RESTARTS": "0"}  # the next death is one too many
    run = Run(env, tmp_path)
    try:
        run.wait_for("running; Ctrl-C stops everything", 120)
        pids = run.pids()
        os.kill(pids["api"], signal.SIGKILL)
        assert run.process.wait(120) == 1
    finally:
        run.kill()
    assert "error: api died once within 5m (0 of 0 restarts used); giving up" in run.text
    assert "restarting api" not in run.text
    others = {pids["ingest"], pids["detector"]}
    assert group_members(others) == []


@pytest.mark.slow
def test_run_sends_demo_history_then_live_traffic(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    env = {
        **stack_env,
        "JOURNEYWATCH_SIMULATE": "1",
        "JOURNEYWATCH_DEMO_BACKLOG": "3m",
        "JOURNEYWATCH_DEMO_INCIDENT_AFTER": "2s",
        "JOURNEYWATCH_DEMO_RATE": "20",
    }
    run = Run(env, tmp_path)
    try:
        run.wait_for("running; Ctrl-C stops everything", 120)
        run.wait_for("payment_outage on mobile", 90)
        ingest = f"http://127.0.0.1:{env['JOURNEYWATCH_INGEST_PORT']}/metrics"
        deadline = time.monotonic() + 180  # a deadline, not a rate: slow machines get there
        accepted = 0.0
        while accepted < 1000 and time.monotonic() < deadline:  # the 3 minutes of history
            text = httpx.get(ingest, timeout=5).text
            accepted = sum(
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith("journeywatch_ingest_events_accepted_total{")
            )
            time.sleep(0.5)
        assert accepted >= 1000
        run.process.send_signal(signal.SIGINT)
        assert run.process.wait(120) == 0, run.text[-5000:]
    finally:
        run.kill()
    summary = re.search(
        r"simulate \| events: (\d+) sent .*?(\d+) accepted, (\d+) rejected", run.text
    )
    assert summary is not None, run.text[-3000:]
    assert int(summary[1]) == int(summary[2]) >= 1000
    assert summary[3] == "0"
    assert run.text.index("stopped demo traffic") < run.text.index("stopped ingest")


def test_run_refuses_a_busy_port_clearly(stack_env: dict[str, str], tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        env = {**stack_env, "JOURNEYWATCH_API_PORT": str(busy.getsockname()[1])}
        result = subprocess.run(
            [sys.executable, "-m", "journeywatch.cli.main", "run"],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert result.returncode == 1
    assert "is already in use" in result.stdout
    assert "JOURNEYWATCH_API_PORT" in result.stdout
    assert "started ingest" not in result.stdout


@pytest.mark.slow
def test_ctrl_c_during_start_up_stops_cleanly(stack_env: dict[str, str], tmp_path: Path) -> None:
    run = Run(stack_env, tmp_path)
    try:
        run.wait_for("started api", 120)
        run.process.send_signal(signal.SIGINT)
        assert run.process.wait(120) == 0, run.text[-5000:]
    finally:
        run.kill()
    children = {pid for name, pid in run.pids().items() if name != "migrate"}
    assert group_members(children) == []


def _config(tmp_path: Path, **env: str):
    from journeywatch.cli.run import StackConfig

    base = {
        "JOURNEYWATCH_INGEST_PORT": str(free_port()),
        "JOURNEYWATCH_API_PORT": str(free_port()),
        "JOURNEYWATCH_DETECTOR_METRICS_PORT": str(free_port()),
    }
    return StackConfig.from_env({**base, **env}, tmp_path)


async def test_busy_local_broker_port_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    from journeywatch.cli import run as run_module

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        monkeypatch.setattr(run_module, "LOCAL_BROKER_PORT", busy.getsockname()[1])
        stack = Stack(dict(os.environ), Console(io.StringIO()))
        with pytest.raises(run_module.StackError, match="JOURNEYWATCH_KAFKA_BOOTSTRAP_SERVERS"):
            await run_module.start_stack(stack, _config(tmp_path), asyncio.Event())
    assert stack.children == []


async def test_no_bundled_broker_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from journeywatch.cli import run as run_module
    from journeywatch.shared.broker import BrokerUnavailable

    def unavailable():
        raise BrokerUnavailable("the bundled broker ships for Linux x86_64/aarch64 and macOS arm64")

    monkeypatch.setattr(run_module, "LOCAL_BROKER_PORT", free_port())
    monkeypatch.setattr(run_module, "broker_spec", unavailable)
    stack = Stack(dict(os.environ), Console(io.StringIO()))
    with pytest.raises(run_module.StackError, match="ships for Linux"):
        await run_module.start_stack(stack, _config(tmp_path), asyncio.Event())


def test_config_defaults_follow_the_contract(tmp_path: Path) -> None:
    from journeywatch.cli.run import StackConfig, child_environment

    config = StackConfig.from_env({}, tmp_path)
    assert config.bootstrap_servers is None
    assert config.database_url == f"sqlite+aiosqlite:///{tmp_path}/var/journeywatch.db"
    assert (config.ingest_port, config.api_port, config.metrics_port) == (8001, 8000, 9102)
    assert (config.window_seconds, config.simulate) == (60, True)
    assert not StackConfig.from_env({"JOURNEYWATCH_SIMULATE": "0"}, tmp_path).simulate
    assert config.restart_policy == RestartPolicy(max_restarts=5, window=300.0, backoff=1.0)
    tuned = StackConfig.from_env(
        {"JOURNEYWATCH_RUN_MAX_RESTARTS": "2", "JOURNEYWATCH_RUN_RESTART_WINDOW": "1m",
         "JOURNEYWATCH_RUN_RESTART_BACKOFF": "500ms"},
        tmp_path,
    )  # fmt: skip
    assert tuned.restart_policy == RestartPolicy(max_restarts=2, window=60.0, backoff=0.5)
    assert [tuned.restart_policy.delay(n) for n in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    env = child_environment(config, {"PATH": "/bin"}, console_tty=False)
    assert env["JOURNEYWATCH_KAFKA_BOOTSTRAP_SERVERS"] == "127.0.0.1:9092"
    assert env["JOURNEYWATCH_DATABASE_URL"] == config.database_url
    assert "JOURNEYWATCH_LOG_FORMAT" not in env


# -- restart scenarios ----------------------------------------------------------------------


def _processed(env: dict[str, str]) -> float:
    url = f"http://127.0.0.1:{env['JOURNEYWATCH_DETECTOR_METRICS_PORT']}/metrics"
    return metric(url, "journeywatch_detector_events_processed_total")


def _ingest(env: dict[str, str]) -> str:
    return f"http://127.0.0.1:{env['JOURNEYWATCH_INGEST_PORT']}"


def _stop(run: Run, sig: signal.Signals = signal.SIGINT) -> None:
    run.process.send_signal(sig)
    assert run.process.wait(150) == 0, run.tail(5000)


def _wait_committed(
    run: Run, servers: str, group: str, done: Callable[[int, int], bool], timeout: float
) -> None:
    """Poll (records on the touchpoint topic, the group's committed offsets) until `done`."""
    seen: list[tuple[int, int]] = []

    def check() -> bool:
        seen.append(end_and_committed(servers, group))
        return done(*seen[-1])

    try:
        run.wait_until(check, timeout, "the detector's group committed offsets")
    except AssertionError as exc:
        raise AssertionError(f"(end, committed) seen last: {seen[-3:]}\n{exc}") from None


def _run_on_a_fresh_broker(env: dict[str, str], cwd: Path, events: int) -> Run:
    """One `journeywatch run` on a new, empty broker: send `events`, see them all processed."""
    with LocalBroker(port=free_port(), log_path=cwd / f"tansu-{free_port()}.log") as broker:
        env = {**env, "JOURNEYWATCH_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers}
        run = Run(env, cwd)
        try:
            run.wait_for("running; Ctrl-C stops everything", 120)
            assert send_events(_ingest(env), events) == events
            run.wait_until(lambda: _processed(env) >= events, 120, "all events processed")
            group = env["JOURNEYWATCH_DETECTOR_GROUP_ID"]
            _wait_committed(
                run, broker.bootstrap_servers, group, lambda e, c: e == c == events, 120
            )
            _stop(run)
        finally:
            run.kill()
    return run


@pytest.mark.slow
def test_a_second_run_on_one_var_processes_everything_the_new_broker_holds(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    """`make run` twice: the in-memory broker starts empty, var/ keeps the detector's checkpoint
    (offsets and watermark of the old topic). Every event of the new broker is processed."""
    _run_on_a_fresh_broker(stack_env, tmp_path, 500)
    second = _run_on_a_fresh_broker(stack_env, tmp_path, 500)  # same cwd: same var/
    assert second.text.count("checkpoint offsets are beyond the end") == 1, second.tail(5000)


@pytest.mark.slow
def test_ctrl_c_during_a_burst_then_restart_loses_nothing(
    stack_env: dict[str, str], bootstrap_servers: str, tmp_path: Path
) -> None:
    """Ctrl-C while ingest is taking a burst; the next run (same broker, same var/) processes
    every event ingest accepted: the group's committed offsets reach the end of the topic."""
    group = stack_env["JOURNEYWATCH_DETECTOR_GROUP_ID"]
    run = Run(stack_env, tmp_path)
    accepted = 0
    try:
        run.wait_for("running; Ctrl-C stops everything", 120)
        stop_burst = threading.Event()

        def burst() -> None:
            nonlocal accepted
            while not stop_burst.is_set():
                try:
                    accepted += send_events(_ingest(stack_env), 200, retry_for=0)
                except (AssertionError, httpx.HTTPError):
                    return  # ingest is stopping: what it accepted so far counts

        sender = threading.Thread(target=burst, daemon=True)
        sender.start()
        run.wait_until(lambda: accepted >= 1000, 120, "burst under way")
        run.process.send_signal(signal.SIGINT)  # while the burst goes on
        assert run.process.wait(150) == 0, run.tail(5000)
        stop_burst.set()
        sender.join(60)
    finally:
        run.kill()
    assert "stopped ingest" in run.text
    end, _ = end_and_committed(bootstrap_servers, group)
    assert end >= accepted  # everything ingest acknowledged is on the topic
    again = Run(stack_env, tmp_path)
    try:
        again.wait_for("running; Ctrl-C stops everything", 120)
        _wait_committed(again, bootstrap_servers, group, lambda e, c: c == e >= end, 180)
        _stop(again)
    finally:
        again.kill()
    # Same broker: the checkpoint belongs to this topic and is resumed, not discarded.
    assert "checkpoint offsets are beyond the end" not in again.text, again.tail(5000)
