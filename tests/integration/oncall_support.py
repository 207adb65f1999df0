"""On-call test harness: real Prometheus + Alertmanager, a webhook receiver, the real detector.

The detector is `python -m journeywatch.detector` on a test broker; `outage_traffic` is the
touchpoint stream that drives it into a critical incident and back out of it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import yaml

from journeywatch.shared.events import Channel, Touchpoint
from tests.integration.detector_support import START, Outage, stream, write_fast_journey

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
RULES_DIR = DEPLOY / "prometheus" / "rules"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
ALERTMANAGER_CONFIG = DEPLOY / "alertmanager" / "alertmanager.yml"
INSTALL_SCRIPT = REPO / "scripts" / "install-prometheus"
BINARIES = ("prometheus", "promtool", "prometheus-alertmanager", "amtool")

_install_result: tuple[bool, str] | None = None


def ensure_prometheus_installed() -> tuple[bool, str]:
    """Run scripts/install-prometheus once per process; (ok, message)."""
    global _install_result
    if _install_result is None:
        if all(shutil.which(b) for b in BINARIES):
            _install_result = (True, "")
        else:
            proc = subprocess.run(
                [str(INSTALL_SCRIPT)], capture_output=True, text=True, timeout=900, check=False
            )
            message = (proc.stdout + proc.stderr).strip()
            _install_result = (proc.returncode == 0, message)
    return _install_result


def require_prometheus() -> None:
    """Skip (only when apt is impossible here) or fail when the programs cannot be installed."""
    import pytest

    ok, message = ensure_prometheus_installed()
    if ok:
        return
    if "apt-get not found" in message or "need root" in message:
        pytest.skip(f"Prometheus/Alertmanager not installable here (no apt or no root): {message}")
    pytest.fail(f"scripts/install-prometheus failed:\n{message}")


def rules_test_copy(for_duration: str) -> list[dict[str, Any]]:
    """The shipped rule files with every `for:` replaced; everything else is left as shipped."""
    copies = []
    for path in sorted(RULES_DIR.glob("*.yml")):
        doc = yaml.safe_load(path.read_text())
        for group in doc["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    rule["for"] = for_duration
        copies.append(doc)
    return copies


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """GET url; (status, body), status 0 when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


def wait_http_ok(url: str, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Block until url answers 200 (or fail, with the process's log when it died)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode} before {url} was up")
        if http_get(url, timeout=0.5)[0] == 200:
            return
        time.sleep(0.05)
    raise TimeoutError(f"{url} not ready within {timeout}s")


@dataclass
class Process:
    """A child program with its log file; stopped with SIGTERM (then SIGKILL)."""

    args: list[str]
    log_path: Path
    env: dict[str, str] | None = None
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        log = self.log_path.open("wb")
        try:
            self.proc = subprocess.Popen(
                self.args,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=REPO,
            )
        finally:
            log.close()
        return self

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class WebhookReceiver:
    """A local Alertmanager webhook receiver: records every notification POSTed to it."""

    host: str = "127.0.0.1"
    notifications: list[dict[str, Any]] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> WebhookReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                payload = json.loads(self.rfile.read(length) or b"{}")
                payload["_path"] = self.path
                with receiver._lock:
                    receiver.notifications.append(payload)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                del format, args

        self._server = ThreadingHTTPServer((self.host, 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://{self.host}:{self._server.server_address[1]}"

    def alerts(self) -> list[tuple[str, str, dict[str, Any]]]:
        """(receiver path, notification status, alert) for every alert delivered so far."""
        with self._lock:
            return [
                (n["_path"], n.get("status", ""), alert)
                for n in self.notifications
                for alert in n.get("alerts", [])
            ]

    def clear(self) -> None:
        """Forget what was delivered so far."""
        with self._lock:
            self.notifications.clear()

    def find(self, alertname: str, status: str, **labels: str) -> list[tuple[str, dict[str, Any]]]:
        """Delivered alerts with this name, alert status ("firing"/"resolved") and labels."""
        return [
            (path, alert)
            for path, _, alert in self.alerts()
            if alert["labels"].get("alertname") == alertname
            and alert.get("status") == status
            and all(alert["labels"].get(k) == v for k, v in labels.items())
        ]

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)


@dataclass
class RealDetector:
    """`python -m journeywatch.detector` on a given broker, SQLite file and metrics port.

    `env` adds settings (e.g. the fast journey file and short windows of `outage_traffic`).
    """

    port: int
    bootstrap_servers: str
    workdir: Path
    env: dict[str, str] = field(default_factory=dict)
    process: Process | None = None
    starts: int = 0

    def start(self) -> RealDetector:
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = dict(
            os.environ,
            JOURNEYWATCH_KAFKA_BOOTSTRAP_SERVERS=self.bootstrap_servers,
            JOURNEYWATCH_DATABASE_URL=f"sqlite+aiosqlite:///{self.workdir / 'journeywatch.db'}",
            JOURNEYWATCH_DETECTOR_METRICS_PORT=str(self.port),
            JOURNEYWATCH_DETECTOR_GROUP_ID=f"oncall-{self.port}",
            **self.env,
        )
        if self.starts == 0:
            subprocess.run(
                [sys.executable, "-m", "journeywatch.shared.db", "migrate"],
                env=env,
                cwd=REPO,
                check=True,
                capture_output=True,
                timeout=60,
            )
        self.starts += 1
        self.process = Process(
            [sys.executable, "-m", "journeywatch.detector"],
            self.workdir / f"detector-{self.starts}.log",
            env=env,
        ).start()
        wait_http_ok(f"http://127.0.0.1:{self.port}/metrics", 30, self.process.proc)
        return self

    def log(self) -> str:
        return self.process.log() if self.process else ""

    def stop(self) -> int | None:
        return self.process.stop(timeout=20) if self.process else None


@dataclass(frozen=True)
class OutageTraffic:
    """A seeded touchpoint stream in two parts, for driving the real detector into an incident.

    `incident`: WARMUP_WINDOWS normal windows (every series learns past the core's warm-up),
    then OUTAGE_WINDOWS in which no mobile session completes `purchase` (a payment outage). It
    ends inside the outage, and the watermark only moves with events, so the incident stays open
    for as long as the test needs. `recovery`: normal windows continuing the same event time;
    enough of them for `resolve_after_windows` (3) normal windows to close. `later`: one more
    normal window, for a detector that was restarted after all that.
    """

    incident: list[Touchpoint]
    recovery: list[Touchpoint]
    later: list[Touchpoint]
    journeys_file: Path
    window_seconds: int

    # What the detector's core reports for this stream (seeded): the mobile purchase conversion
    # drops to 0 → a critical conversion_drop on purchase; the mobile carts left behind → a
    # warning cart_abandonment_spike on consideration (it must not page).
    CRITICAL: ClassVar[dict[str, str]] = {
        "journey": "ecommerce",
        "stage": "purchase",
        "type": "conversion_drop",
    }
    WARNING: ClassVar[dict[str, str]] = {
        "journey": "ecommerce",
        "stage": "consideration",
        "type": "cart_abandonment_spike",
    }

    def detector_env(self) -> dict[str, str]:
        """Settings the detector needs to read this stream as the test means it."""
        return {
            "JOURNEYWATCH_JOURNEYS_FILE": str(self.journeys_file),
            "JOURNEYWATCH_WINDOW_SECONDS": str(self.window_seconds),
            "JOURNEYWATCH_ALLOWED_LATENESS_SECONDS": "2",
            "JOURNEYWATCH_DETECTOR_POLL_TIMEOUT_MS": "100",
            "JOURNEYWATCH_DETECTOR_CHECKPOINT_INTERVAL_SECONDS": "1",
        }


WARMUP_WINDOWS = 40
OUTAGE_WINDOWS = 5
RECOVERY_WINDOWS = 8


def outage_traffic(directory: Path, window_seconds: int = 10) -> OutageTraffic:
    """The stream of `OutageTraffic` (the fast journey file of detector_support, written here)."""
    onset = START + timedelta(seconds=window_seconds * WARMUP_WINDOWS)
    recovered = onset + timedelta(seconds=window_seconds * OUTAGE_WINDOWS)
    later = recovered + timedelta(seconds=window_seconds * RECOVERY_WINDOWS)
    events = list(
        stream(
            windows=WARMUP_WINDOWS + OUTAGE_WINDOWS + RECOVERY_WINDOWS + 1,
            window_seconds=window_seconds,
            outage=Outage(Channel.MOBILE, onset, recovered - onset),
        )
    )
    directory.mkdir(parents=True, exist_ok=True)
    return OutageTraffic(
        incident=[e for e in events if e.occurred_at < recovered],
        recovery=[e for e in events if recovered <= e.occurred_at < later],
        later=[e for e in events if e.occurred_at >= later],
        journeys_file=write_fast_journey(directory),
        window_seconds=window_seconds,
    )


@dataclass
class OnCallStack:
    """Real Prometheus (test copy of the shipped rules) + real Alertmanager (shipped routing)."""

    workdir: Path
    detector_target: str
    webhook: WebhookReceiver
    prometheus_port: int
    alertmanager_port: int
    for_duration: str = "2s"
    prometheus: Process | None = None
    alertmanager: Process | None = None

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.prometheus_port}"

    @property
    def alertmanager_url(self) -> str:
        return f"http://127.0.0.1:{self.alertmanager_port}"

    def write_configs(self) -> tuple[Path, Path]:
        """Generate the test configs: shorter intervals and `for:`, local webhook receivers."""
        rules_dir = self.workdir / "rules"
        rules_dir.mkdir(parents=True, exist_ok=True)
        for i, doc in enumerate(rules_test_copy(self.for_duration)):
            (rules_dir / f"rules-{i}.yml").write_text(yaml.safe_dump(doc, sort_keys=False))
        prometheus_config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(rules_dir / "*.yml")],
            "alerting": {
                "alertmanagers": [
                    {"static_configs": [{"targets": [f"127.0.0.1:{self.alertmanager_port}"]}]}
                ]
            },
            "scrape_configs": [
                {
                    "job_name": "journeywatch-detector",
                    "scrape_interval": "1s",
                    "scrape_timeout": "900ms",
                    "static_configs": [{"targets": [self.detector_target]}],
                }
            ],
        }
        prom_path = self.workdir / "prometheus.yml"
        prom_path.write_text(yaml.safe_dump(prometheus_config, sort_keys=False))

        # The shipped routing (receivers by severity, grouping, inhibitions) with fast timers and
        # each receiver's webhook pointed at the local receiver under /<receiver name>.
        am = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
        route = am["route"]
        route.update(group_wait="500ms", group_interval="1s", repeat_interval="1h")
        for child in route.get("routes", []):
            for key in ("group_wait", "group_interval"):
                child.pop(key, None)
        for receiver in am["receivers"]:
            for hook in receiver.get("webhook_configs", []):
                hook["url"] = f"{self.webhook.url}/{receiver['name']}"
        am_path = self.workdir / "alertmanager.yml"
        am_path.write_text(yaml.safe_dump(am, sort_keys=False))
        return prom_path, am_path

    def start(self) -> OnCallStack:
        prom_path, am_path = self.write_configs()
        self.alertmanager = Process(
            [
                shutil.which("prometheus-alertmanager") or "prometheus-alertmanager",
                f"--config.file={am_path}",
                f"--storage.path={self.workdir / 'am-data'}",
                f"--web.listen-address=127.0.0.1:{self.alertmanager_port}",
                "--cluster.listen-address=",  # no gossip port: a single test instance
                "--log.level=debug",
            ],
            self.workdir / "alertmanager.log",
        ).start()
        self.prometheus = Process(
            [
                shutil.which("prometheus") or "prometheus",
                f"--config.file={prom_path}",
                f"--storage.tsdb.path={self.workdir / 'prom-data'}",
                f"--web.listen-address=127.0.0.1:{self.prometheus_port}",
                "--rules.alert.resend-delay=1s",
                "--log.level=info",
            ],
            self.workdir / "prometheus.log",
        ).start()
        wait_http_ok(f"{self.alertmanager_url}/-/ready", 30, self.alertmanager.proc)
        wait_http_ok(f"{self.prometheus_url}/-/ready", 30, self.prometheus.proc)
        return self

    def query(self, promql: str) -> list[dict[str, Any]]:
        """Instant query against the test Prometheus."""
        from urllib.parse import quote

        status, body = http_get(f"{self.prometheus_url}/api/v1/query?query={quote(promql)}")
        if status != 200:
            return []
        result: list[dict[str, Any]] = json.loads(body)["data"]["result"]
        return result

    def logs(self) -> str:
        parts = []
        for name, proc in (("prometheus", self.prometheus), ("alertmanager", self.alertmanager)):
            if proc is not None:
                parts.append(f"----- {name} -----\n{proc.log()[-4000:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        for proc in (self.prometheus, self.alertmanager):
            if proc is not None:
                proc.stop()
