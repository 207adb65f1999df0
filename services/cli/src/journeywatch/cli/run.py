"""`journeywatch run` (what `make run` calls): the whole local stack in the foreground.

Broker (unless external Kafka is configured) → migrations → ingest, detector, api → demo
traffic with an incident. Every child runs in its own process group, so a Ctrl-C in the
terminal reaches only this orchestrator, which then stops the children in a fixed order:
simulator, ingest, detector (SIGTERM: it flushes, commits and checkpoints), api, broker.
A service that dies (ingest, detector, api) is restarted with backoff, at most
`RestartPolicy.max_restarts` times within its window; after that, or if the broker or a
one-shot step dies, everything is stopped and the exit status is non-zero. The broker is never
stopped because a service crashed: with the in-memory broker that would lose every event not
yet consumed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, TextIO

import httpx

from journeywatch.cli.durations import format_duration, parse_duration

LOCAL_BROKER_HOST: Final = "127.0.0.1"
LOCAL_BROKER_PORT: Final = 9092


class StackError(RuntimeError):
    """The stack cannot start or a child died; the message says which and why."""


@dataclass(frozen=True)
class ServiceSpec:
    """A child process: its command, how to tell it is ready, how long it may take to stop."""

    name: str
    argv: Sequence[str]
    ready_url: str | None = None
    ready_any_response: bool = False  # e.g. a Prometheus exporter: any HTTP answer will do
    ready_port: int | None = None  # plain TCP check (the broker)
    stop_timeout: float = 30.0
    restartable: bool = False  # a service that resumes on its own (not the in-memory broker)


@dataclass(frozen=True)
class RestartPolicy:
    """How often a crashed service is restarted before `journeywatch run` gives up.

    At most `max_restarts` restarts of one service within `window` seconds; the n-th of them
    waits `backoff * 2**(n-1)` seconds (at most `max_backoff`), so a service that crashes at
    once on every start does not spin, and one that crashed once long ago starts afresh.

    >>> RestartPolicy(max_restarts=3, window=60, backoff=1).delay(2)
    4.0
    """

    max_restarts: int = 5
    window: float = 300.0
    backoff: float = 1.0
    max_backoff: float = 30.0

    def delay(self, earlier: int) -> float:
        """Seconds to wait before a restart that follows `earlier` restarts within the window."""
        return float(min(self.max_backoff, self.backoff * 2**earlier))


@dataclass
class Child:
    """A running child process (leader of its own process group) and its log pump."""

    spec: ServiceSpec
    process: asyncio.subprocess.Process
    pump: asyncio.Task[None]
    stopping: bool = False

    @property
    def pid(self) -> int:
        """Process id (= process group id)."""
        return self.process.pid

    @property
    def running(self) -> bool:
        """Whether the process has not exited yet."""
        return self.process.returncode is None


@dataclass
class Console:
    """Prefixed, line-atomic output of the orchestrator and its children."""

    stream: TextIO = field(default_factory=lambda: sys.stdout)
    width: int = 9

    def line(self, name: str, text: str) -> None:
        """One line with the child's name as prefix."""
        self.stream.write(f"{name:>{self.width}} | {text}\n")
        self.stream.flush()

    def say(self, text: str) -> None:
        """A line from the orchestrator itself."""
        self.line("run", text)


class Stack:
    """Starts children in their own process groups and stops them in order, leaving no orphans."""

    def __init__(self, env: Mapping[str, str], console: Console | None = None):
        self.env = dict(env)
        self.console = console or Console()
        self.children: list[Child] = []
        self.died = asyncio.Event()  # set when a child exits while not being stopped
        self.restarts: dict[str, list[float]] = {}  # service name → monotonic restart times

    async def start(self, spec: ServiceSpec) -> Child:
        """Start a child with its own process group; its output is logged with its name."""
        try:
            process = await asyncio.create_subprocess_exec(
                *spec.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
                limit=1 << 20,  # log lines up to 1 MiB
            )
        except OSError as exc:
            raise StackError(f"cannot start {spec.name} ({spec.argv[0]}): {exc}") from exc
        child = Child(spec, process, asyncio.create_task(asyncio.sleep(0)))
        child.pump = asyncio.create_task(self._pump(child))
        self.children.append(child)
        self.console.say(f"started {spec.name} (pid {process.pid})")
        return child

    async def _pump(self, child: Child) -> None:
        assert child.process.stdout is not None
        stream = child.process.stdout
        while True:
            try:
                raw = await stream.readline()
            except ValueError:  # a line longer than the buffer limit
                raw = await stream.read(65536)
            if not raw:
                break
            self.console.line(child.spec.name, raw.decode(errors="replace").rstrip())
        code = await child.process.wait()
        if not child.stopping:
            self.console.say(
                f"{child.spec.name} (pid {child.pid}) exited unexpectedly with code {code}"
                + (f" ({signal.Signals(-code).name})" if code < 0 else "")
            )
            self.died.set()

    def dead(self) -> list[Child]:
        """Children that exited while nobody asked them to."""
        return [c for c in self.children if not c.running and not c.stopping]

    async def run_once(self, spec: ServiceSpec, timeout: float = 120.0) -> int:
        """Run a one-shot child (migrations) to completion; its exit code."""
        child = await self.start(spec)
        child.stopping = True  # its exit is expected
        try:
            code = await asyncio.wait_for(child.process.wait(), timeout)
        except TimeoutError:
            await self.stop(child)
            raise StackError(f"{spec.name} did not finish within {timeout:.0f}s") from None
        await child.pump
        self.children.remove(child)
        return code

    async def wait_ready(self, child: Child, timeout: float, stop: asyncio.Event) -> None:
        """Poll the child's readiness until it answers, it dies, `stop` is set, or time runs out."""
        spec = child.spec
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2.0) as client:
            while True:
                if not child.running:
                    await child.pump
                    raise StackError(
                        f"{spec.name} exited with code {child.process.returncode} while starting"
                    )
                if stop.is_set():
                    raise StackError("stopped while starting")
                if await _answers(client, spec):
                    return
                if time.monotonic() > deadline:
                    raise StackError(f"{spec.name} was not ready within {timeout:.0f}s")
                await asyncio.sleep(0.2)

    async def stop(self, child: Child) -> None:
        """SIGTERM the child's process group, wait, then SIGKILL whatever is left of the group."""
        child.stopping = True
        if child.running:
            _signal_group(child.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(child.process.wait(), child.spec.stop_timeout)
            except TimeoutError:
                self.console.say(
                    f"{child.spec.name} did not stop within {child.spec.stop_timeout:.0f}s; killing it"
                )
                _signal_group(child.pid, signal.SIGKILL)
                await child.process.wait()
        # Anything the child left behind in its group (workers, helpers) goes too.
        _signal_group(child.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(child.pump, 5.0)
        code = child.process.returncode
        self.console.say(f"stopped {child.spec.name} (exit code {code})")

    async def supervise(
        self, stop: asyncio.Event, policy: RestartPolicy, ready_timeout: float
    ) -> None:
        """Until `stop` is set: restart every restartable child that dies, within `policy`.

        Raises StackError when a child that cannot be restarted dies, or when one has used up
        its restarts; the caller then stops the whole stack.
        """
        while not stop.is_set():
            await _until(stop, self.died)
            self.died.clear()
            for child in self.dead():
                if stop.is_set():
                    return
                await self.restart(child, stop, policy, ready_timeout)

    async def restart(
        self, child: Child, stop: asyncio.Event, policy: RestartPolicy, ready_timeout: float
    ) -> Child | None:
        """Start a dead child's service again and wait until it is ready (None if stopped)."""
        spec = child.spec
        if not spec.restartable:
            raise StackError(f"{spec.name} died; stopping the stack")
        with contextlib.suppress(Exception):
            await asyncio.wait_for(child.pump, 5.0)
        _signal_group(child.pid, signal.SIGKILL)  # whatever it left behind in its group
        self.children.remove(child)
        while not stop.is_set():
            now = time.monotonic()
            recent = [t for t in self.restarts.get(spec.name, []) if now - t < policy.window]
            if len(recent) >= policy.max_restarts:
                deaths = len(recent) + 1
                times = {1: "once", 2: "twice"}.get(deaths, f"{deaths} times")
                raise StackError(
                    f"{spec.name} died {times} within {format_duration(policy.window)} "
                    f"({len(recent)} of {policy.max_restarts} restarts used); giving up and "
                    f"stopping the stack — see its log lines above"
                )
            delay = policy.delay(len(recent))
            self.restarts[spec.name] = [*recent, now]
            self.console.say(
                f"restarting {spec.name} in {delay:g}s (restart {len(recent) + 1} of at most "
                f"{policy.max_restarts} within {format_duration(policy.window)})"
            )
            if await _wait(stop, delay):
                return None
            new = await self.start(spec)
            try:
                await self.wait_ready(new, ready_timeout, stop)
            except StackError as exc:
                if stop.is_set():
                    return None
                self.console.say(f"{spec.name} did not come back: {exc}")
                await self.stop(new)
                self.children.remove(new)
                continue
            self.console.say(f"{spec.name} is back (pid {new.pid})")
            return new
        return None

    async def stop_all(self, order: Sequence[str]) -> None:
        """Stop every child: the named ones in `order` first, then the rest in reverse start order."""
        ranked = {name: i for i, name in enumerate(order)}
        ordered = sorted(
            reversed(self.children), key=lambda c: ranked.get(c.spec.name, len(ranked))
        )
        for child in ordered:
            await self.stop(child)


async def _answers(client: httpx.AsyncClient, spec: ServiceSpec) -> bool:
    if spec.ready_port is not None:
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", spec.ready_port), 1.0
            )
        except (OSError, TimeoutError):
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True
    if spec.ready_url is None:
        return True
    try:
        response = await client.get(spec.ready_url)
    except httpx.HTTPError:
        return False
    return spec.ready_any_response or response.status_code == 200


async def _wait(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep `seconds` unless `stop` is set first; whether it was."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


# -- the real stack ------------------------------------------------------------------------


@dataclass(frozen=True)
class StackConfig:
    """Addresses and settings of the local stack, from the environment (see docs/SIMULATOR.md)."""

    bootstrap_servers: str | None
    database_url: str
    ingest_host: str
    ingest_port: int
    api_host: str
    api_port: int
    metrics_host: str
    metrics_port: int
    window_seconds: int
    ready_timeout: float
    simulate: bool
    restart_policy: RestartPolicy = field(default_factory=RestartPolicy)
    # The notifier runs only when a target is configured (docs/NOTIFICATIONS.md).
    notifier: bool = False
    notifier_metrics_host: str = "127.0.0.1"
    notifier_metrics_port: int = 9103

    @classmethod
    def from_env(cls, env: Mapping[str, str], cwd: Path) -> StackConfig:
        """Read JOURNEYWATCH_* variables; defaults are the contract's."""

        def get(name: str, default: str) -> str:
            value = env.get(f"JOURNEYWATCH_{name}", "").strip()
            return value or default

        def number(name: str, default: str, convert: Callable[[str], float]) -> Any:
            # One line naming the variable, not a traceback (issue 12).
            text = get(name, default)
            try:
                return convert(text)
            except ValueError:
                kind = "a whole number" if convert is int else "a number"
                if convert is parse_duration:
                    kind = "a duration such as 90s, 5m or 1h"
                raise ValueError(f"JOURNEYWATCH_{name}: expected {kind}, got {text!r}") from None

        database_url = get("DATABASE_URL", "")
        if not database_url:
            database_url = f"sqlite+aiosqlite:///{cwd / 'var' / 'journeywatch.db'}"
        return cls(
            bootstrap_servers=get("KAFKA_BOOTSTRAP_SERVERS", "") or None,
            database_url=database_url,
            ingest_host=get("INGEST_HOST", "127.0.0.1"),
            ingest_port=number("INGEST_PORT", "8001", int),
            api_host=get("API_HOST", "127.0.0.1"),
            api_port=number("API_PORT", "8000", int),
            metrics_host=get("DETECTOR_METRICS_HOST", "127.0.0.1"),
            metrics_port=number("DETECTOR_METRICS_PORT", "9102", int),
            window_seconds=number("WINDOW_SECONDS", "60", int),
            ready_timeout=number("RUN_READY_TIMEOUT", "90", float),
            simulate=get("SIMULATE", "1").lower() not in ("0", "false", "no", "off"),
            restart_policy=RestartPolicy(
                max_restarts=number("RUN_MAX_RESTARTS", "5", int),
                window=number("RUN_RESTART_WINDOW", "5m", parse_duration),
                backoff=number("RUN_RESTART_BACKOFF", "1s", parse_duration),
            ),
            notifier=any(
                get(name, "")
                for name in (
                    "NOTIFY_WEBHOOK_URLS",
                    "NOTIFY_SLACK_WEBHOOK_URL",
                    "NOTIFY_PAGERDUTY_ROUTING_KEY",
                )
            ),
            notifier_metrics_host=get("NOTIFIER_METRICS_HOST", "127.0.0.1"),
            notifier_metrics_port=number("NOTIFIER_METRICS_PORT", "9103", int),
        )

    def url(self, host: str, port: int, path: str = "") -> str:
        """http URL of a local service (wildcard binds are reached on 127.0.0.1)."""
        shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        return f"http://{shown}:{port}{path}"


def service_specs(config: StackConfig, python: str = sys.executable) -> list[ServiceSpec]:
    """ingest, detector and api (and the notifier when a target is set) as child processes."""
    specs = [
        ServiceSpec(
            "ingest",
            [python, "-m", "journeywatch.ingest"],
            ready_url=config.url(config.ingest_host, config.ingest_port, "/readyz"),
            stop_timeout=30.0,
            restartable=True,
        ),
        ServiceSpec(
            "detector",
            [python, "-m", "journeywatch.detector"],
            ready_url=config.url(config.metrics_host, config.metrics_port, "/metrics"),
            ready_any_response=True,
            stop_timeout=90.0,  # flush, commit, checkpoint
            restartable=True,  # resumes from its checkpoint and the committed offsets
        ),
        ServiceSpec(
            "api",
            [python, "-m", "journeywatch.api"],
            ready_url=config.url(config.api_host, config.api_port, "/readyz"),
            stop_timeout=30.0,
            restartable=True,
        ),
    ]
    if config.notifier:
        specs.append(
            ServiceSpec(
                "notifier",
                [python, "-m", "journeywatch.notifier"],
                ready_url=config.url(
                    config.notifier_metrics_host, config.notifier_metrics_port, "/metrics"
                ),
                ready_any_response=True,
                stop_timeout=60.0,  # finishes the deliveries in flight, then commits
                restartable=True,  # resumes from its committed offsets
            )
        )
    return specs


STOP_ORDER: Final = ("ingest", "detector", "notifier", "api", "migrate", "broker")


def broker_spec() -> ServiceSpec:
    """The bundled Tansu broker on 127.0.0.1:9092 (in-memory storage)."""
    from journeywatch.shared.broker import broker_binary

    url = f"tcp://{LOCAL_BROKER_HOST}:{LOCAL_BROKER_PORT}"
    return ServiceSpec(
        "broker",
        [
            broker_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ],
        ready_port=LOCAL_BROKER_PORT,
        stop_timeout=10.0,
    )


def check_environment(env: Mapping[str, str], cwd: Path) -> list[str]:
    """Every bad JOURNEYWATCH_* value, one line each, before anything starts (empty: all good)."""
    from journeywatch.api.settings import ApiSettings
    from journeywatch.detector.settings import DetectorSettings
    from journeywatch.ingest.settings import IngestSettings
    from journeywatch.notifier.settings import NotifierSettings
    from journeywatch.shared.journeys import JourneyConfigError, load_journeys
    from journeywatch.shared.settings import SettingsError, load_settings

    problems: list[str] = []
    # The services' own wording first (it knows the units); the orchestrator's for the rest.
    for cls in (IngestSettings, DetectorSettings, ApiSettings, NotifierSettings):
        try:
            load_settings(cls)
        except SettingsError as exc:
            problems += [line for line in str(exc).splitlines() if line not in problems]
    try:
        StackConfig.from_env(env, cwd)
    except ValueError as exc:
        if str(exc).partition(":")[0] not in {line.partition(":")[0] for line in problems}:
            problems.append(str(exc))
    if not problems:  # the journey file every service will load (docs/JOURNEYS.md)
        try:
            load_journeys(load_settings(IngestSettings).journeys_file)
        except JourneyConfigError as exc:
            lines = str(exc).splitlines()
            problems += [text.strip() for text in lines[1:]] or lines
    return problems


def run_command(args: argparse.Namespace) -> int:
    """`journeywatch run`: start everything, print the URLs, run until a signal or a death."""
    problems = check_environment(os.environ, Path.cwd())
    for line in problems:
        print(f"journeywatch run: {line}", file=sys.stderr)
    if problems:
        return 2
    return asyncio.run(_run(args))


async def _run(args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals: list[str] = []

    def on_signal(sig: signal.Signals) -> None:
        signals.append(sig.name)
        if len(signals) == 1:
            console.say(f"{sig.name}: stopping (again to hurry)")
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    console = Console()
    config = StackConfig.from_env(os.environ, Path.cwd())
    env = child_environment(config, os.environ, console_tty=sys.stdout.isatty())
    stack = Stack(env, console)
    simulation: asyncio.Task[object] | None = None
    sim_stop = asyncio.Event()
    code = 0
    try:
        await start_stack(stack, config, stop)
        print_urls(console, config)
        if config.simulate and not args.no_simulate:
            simulation = asyncio.create_task(demo_traffic(args, config, console, sim_stop))
            simulation.add_done_callback(lambda task: _report_demo_end(task, console))
        else:
            console.say("no demo traffic (JOURNEYWATCH_SIMULATE=0); send your own events")
        console.say("running; Ctrl-C stops everything")
        await stack.supervise(stop, config.restart_policy, config.ready_timeout)
    except StackError as exc:
        if stop.is_set() and not stack.dead():
            console.say("stopped while starting")  # Ctrl-C during start-up is not an error
        else:
            console.say(f"error: {exc}")
            code = 1
    finally:
        if simulation is not None:
            sim_stop.set()
            try:
                await asyncio.wait_for(simulation, 10.0)
            except (TimeoutError, asyncio.CancelledError):
                pass
            except Exception:  # reported by _report_demo_end; must not prevent a clean stop
                pass
            console.say("stopped demo traffic")
        await stack.stop_all(STOP_ORDER)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    if code == 0 and stack.dead():
        code = 1
    console.say(f"stopped everything (exit {code})")
    return code


def _report_demo_end(task: asyncio.Task[object], console: Console) -> None:
    # Say at once when the demo traffic fails; the stack keeps running without it.
    if not task.cancelled() and task.exception() is not None:
        console.line("simulate", f"demo traffic stopped with an error: {task.exception()}")


async def _until(*events: asyncio.Event) -> None:
    waits = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waits:
            task.cancel()


def child_environment(
    config: StackConfig, base: Mapping[str, str], *, console_tty: bool
) -> dict[str, str]:
    """The environment every child gets: the resolved broker, database and ports."""
    env = dict(base)
    env["JOURNEYWATCH_KAFKA_BOOTSTRAP_SERVERS"] = (
        config.bootstrap_servers or f"{LOCAL_BROKER_HOST}:{LOCAL_BROKER_PORT}"
    )
    env["JOURNEYWATCH_DATABASE_URL"] = config.database_url
    env["JOURNEYWATCH_INGEST_PORT"] = str(config.ingest_port)
    env["JOURNEYWATCH_API_PORT"] = str(config.api_port)
    env["JOURNEYWATCH_DETECTOR_METRICS_PORT"] = str(config.metrics_port)
    env["PYTHONUNBUFFERED"] = "1"
    if console_tty and not base.get("JOURNEYWATCH_LOG_FORMAT"):
        env["JOURNEYWATCH_LOG_FORMAT"] = "console"  # children write to a pipe, we to a terminal
    if not base.get("JOURNEYWATCH_LOG_LEVEL"):
        # One line per HTTP request is right for a service, noise for a demo console: show
        # warnings, which include every anomaly lifecycle change the detector logs.
        env["JOURNEYWATCH_LOG_LEVEL"] = "WARNING"
    return env


async def start_stack(stack: Stack, config: StackConfig, stop: asyncio.Event) -> None:
    """Broker (if needed), database directory, migrations, then the three services, ready."""
    from journeywatch.shared.broker import BrokerUnavailable, port_open

    for variable, host, port in (
        ("JOURNEYWATCH_INGEST_PORT", config.ingest_host, config.ingest_port),
        ("JOURNEYWATCH_API_PORT", config.api_host, config.api_port),
        ("JOURNEYWATCH_DETECTOR_METRICS_PORT", config.metrics_host, config.metrics_port),
        (
            "JOURNEYWATCH_NOTIFIER_METRICS_PORT",
            config.notifier_metrics_host,
            config.notifier_metrics_port,
        ),
    ):
        if variable.startswith("JOURNEYWATCH_NOTIFIER") and not config.notifier:
            continue  # not started without a notification target
        if port and port_open("127.0.0.1" if host in ("0.0.0.0", "::", "") else host, port):
            raise StackError(
                f"port {port} is already in use (another `make run`?); stop what runs there "
                f"or choose another port with {variable}"
            )
    if config.bootstrap_servers is None:
        if port_open(LOCAL_BROKER_HOST, LOCAL_BROKER_PORT):
            raise StackError(
                f"{LOCAL_BROKER_HOST}:{LOCAL_BROKER_PORT} is already in use (another `make run`?). "
                "Stop it, or set JOURNEYWATCH_KAFKA_BOOTSTRAP_SERVERS=host:port to use that "
                "Kafka instead of starting the bundled broker."
            )
        try:
            spec = broker_spec()
        except BrokerUnavailable as exc:
            raise StackError(str(exc)) from None
        broker = await stack.start(spec)
        await stack.wait_ready(broker, 20.0, stop)
        stack.console.say(
            f"local broker (Tansu, in-memory) on {LOCAL_BROKER_HOST}:{LOCAL_BROKER_PORT}"
        )
    else:
        stack.console.say(f"using external Kafka at {config.bootstrap_servers}")
        await _wait_for_kafka(config.bootstrap_servers, 15.0, stop)
    sqlite_prefix = "sqlite+aiosqlite:///"
    if config.database_url.startswith(sqlite_prefix):
        Path(config.database_url.removeprefix(sqlite_prefix)).parent.mkdir(
            parents=True, exist_ok=True
        )
    stack.console.say(f"database {_redact(config.database_url)}; applying migrations")
    code = await stack.run_once(
        ServiceSpec("migrate", [sys.executable, "-m", "journeywatch.shared.db", "migrate"])
    )
    if code != 0:
        raise StackError(f"migrations failed (exit code {code}); see the migrate lines above")
    children = [await stack.start(spec) for spec in service_specs(config)]
    waits = [asyncio.create_task(stack.wait_ready(c, config.ready_timeout, stop)) for c in children]
    try:
        await asyncio.gather(*waits)
    finally:  # one failed: the others' waits end here, not in the background
        for task in waits:
            task.cancel()
        await asyncio.gather(*waits, return_exceptions=True)


async def _wait_for_kafka(bootstrap_servers: str, timeout: float, stop: asyncio.Event) -> None:
    """Fail early, with the address in the message, when no bootstrap server answers."""
    from journeywatch.shared.broker import port_open

    addresses = []
    for item in bootstrap_servers.split(","):
        host, _, port = item.strip().rpartition(":")
        if host and port.isdigit():
            addresses.append((host.strip("[]"), int(port)))
    if not addresses:
        raise StackError(
            f"JOURNEYWATCH_KAFKA_BOOTSTRAP_SERVERS={bootstrap_servers!r} is not a host:port list"
        )
    deadline = time.monotonic() + timeout
    while not any(port_open(host, port, 0.5) for host, port in addresses):
        if stop.is_set():
            raise StackError("stopped while starting")
        if time.monotonic() > deadline:
            raise StackError(
                f"Kafka at {bootstrap_servers} does not accept connections; start it, or unset "
                "JOURNEYWATCH_KAFKA_BOOTSTRAP_SERVERS to use the bundled local broker"
            )
        await asyncio.sleep(0.5)


def print_urls(console: Console, config: StackConfig) -> None:
    """Where everything is."""
    api = config.url(config.api_host, config.api_port)
    ingest = config.url(config.ingest_host, config.ingest_port)
    metrics = config.url(config.metrics_host, config.metrics_port, "/metrics")
    for line in (
        "ready:",
        f"  journey map      {api}/",
        f"  api              {api}/v1/anomalies   docs {api}/docs",
        f"  ingest           {ingest}/v1/events   docs {ingest}/docs",
        f"  metrics          {ingest}/metrics  {api}/metrics  {metrics}",
        f"  kafka            {config.bootstrap_servers or f'{LOCAL_BROKER_HOST}:{LOCAL_BROKER_PORT}'}",
    ):
        console.say(line)


def _redact(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        credentials, _, host = rest.rpartition("@")
        user = credentials.split(":", 1)[0]
        return f"{scheme}{sep}{user}:***@{host}" if ":" in credentials else url
    return url


# -- demo traffic --------------------------------------------------------------------------


async def demo_traffic(
    args: argparse.Namespace, config: StackConfig, console: Console, stop: asyncio.Event
) -> object:
    """History first (as fast as the stack takes it, for the detector's warm-up), then live
    traffic, with the demo incident `--incident-after` after the traffic started."""
    from journeywatch.cli.simulate import SimulateOptions, run_simulation
    from journeywatch.cli.simulator import daily_factor, scenario

    now = datetime.now(UTC)
    backlog = float(args.backlog)
    scenarios = []
    incident_at = now + timedelta(seconds=float(args.incident_after))
    if args.incident and args.incident.lower() != "none":
        name, _, channel = args.incident.partition(":")
        scenarios.append(
            scenario(
                name,
                offset=backlog + float(args.incident_after),
                duration=float(args.incident_duration),
                channel=channel or "default",
            )
        )
    # --rate is the traffic right now: scale the daily mean so the demo is as lively at night.
    hour = now.hour + now.minute / 60
    mean_rate = float(args.rate) / max(0.3, daily_factor(hour))
    options = SimulateOptions(
        rate=mean_rate,
        seed=int(args.seed),
        scenarios=scenarios,
        mode="realtime",
        start=now - timedelta(seconds=backlog),
        ingest_url=config.url(config.ingest_host, config.ingest_port),
        api_key=os.environ.get("JOURNEYWATCH_API_KEY") or _first_key(os.environ),
        concurrency=1,
        progress=False,
    )
    window = config.window_seconds
    if scenarios:
        item = scenarios[0]
        console.line(
            "simulate",
            f"demo: {format_duration(backlog)} of history at full speed, then live traffic at "
            f"~{args.rate:g} events/s; {item.name} on "
            f"{item.channel.value if item.channel else 'all channels'} from "
            f"{incident_at:%H:%M:%S}Z for {format_duration(item.duration)} — expect its anomaly "
            f"{window // 2}–{2 * window}s later at {config.url(config.api_host, config.api_port)}/",
        )
    return await run_simulation(options, stop, announce=lambda line: console.line("simulate", line))


def _first_key(env: Mapping[str, str]) -> str | None:
    keys = env.get("JOURNEYWATCH_INGEST_API_KEYS", "")
    first = keys.split(",")[0].strip()
    return first or None


__all__ = [
    "Child",
    "Console",
    "RestartPolicy",
    "ServiceSpec",
    "Stack",
    "StackConfig",
    "StackError",
    "child_environment",
    "run_command",
    "service_specs",
]
