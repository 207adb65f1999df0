"""Settings shared by every service: Kafka, database, journeys, logging (env prefix JOURNEYWATCH_)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings import SettingsError as SourceError

ENV_PREFIX = "JOURNEYWATCH_"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
DEFAULT_SQLITE_PATH = Path("var") / "journeywatch.db"


class CommonSettings(BaseSettings):
    """Kafka, database, journey config and logging; every service's settings extend this."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    kafka_bootstrap_servers: str | None = Field(
        default=None,
        description="Comma-separated host:port list. Unset: the bundled local broker on "
        "127.0.0.1:9092 (started by `make run` / `journeywatch run`).",
    )
    kafka_client_id: str = Field(default="journeywatch", description="Client id sent to Kafka.")
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="How clients talk to the brokers."
    )
    kafka_sasl_mechanism: str | None = Field(default=None, description="e.g. PLAIN, SCRAM-SHA-256.")
    kafka_sasl_username: str | None = Field(default=None, description="SASL user name.")
    kafka_sasl_password: SecretStr | None = Field(
        default=None, description="SASL password (secret)."
    )
    kafka_topic_partitions: int = Field(
        default=6, ge=1, le=1024, description="Partitions of topics the services create."
    )
    kafka_topic_replication_factor: int = Field(
        default=1, ge=1, le=16, description="Replication factor of topics the services create."
    )
    kafka_create_topics: bool = Field(
        default=True, description="Create the product's topics on start when they are missing."
    )
    # Tansu (the bundled broker) has no idempotent producer; Apache Kafka does.
    kafka_enable_idempotence: bool | None = Field(
        default=None,
        description="Idempotent producers. Unset: tried, and dropped with a warning when the "
        "broker refuses them (the bundled broker does); true: required; false: off.",
    )

    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy async URL. Unset: embedded SQLite under var/.",
    )
    database_echo: bool = Field(default=False, description="Log every SQL statement (debugging).")

    journeys_file: Path | None = Field(
        default=None, description="Journey definitions (YAML/TOML). Unset: the bundled ecommerce."
    )
    log_level: str = Field(default="INFO", description="DEBUG, INFO, WARNING, ERROR.")
    log_format: Literal["auto", "json", "console"] = Field(
        default="auto", description="auto: JSON lines unless stderr is a terminal."
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _known_level(cls, value: object) -> object:
        # Checked here so a typo fails with the variable's name, not deep in logging.
        if isinstance(value, str):
            if value.strip().upper() not in LOG_LEVELS:
                raise ValueError(f"expected one of {', '.join(LOG_LEVELS)}")
            return value.strip().upper()
        return value

    @field_validator("kafka_bootstrap_servers", "database_url", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def bootstrap_servers(self) -> str:
        """The configured bootstrap servers or the bundled broker's default address."""
        return self.kafka_bootstrap_servers or "127.0.0.1:9092"

    @property
    def sqlalchemy_url(self) -> str:
        """The database URL, defaulting to the embedded SQLite file."""
        return self.database_url or f"sqlite+aiosqlite:///{DEFAULT_SQLITE_PATH}"


# -- one clear line per bad value ------------------------------------------------------------

S = TypeVar("S", bound=BaseSettings)

_UNITS = (("_seconds", " of seconds"), ("_ms", " of milliseconds"), ("_bytes", " of bytes"))


class SettingsError(ValueError):
    """Settings could not be built; the message has one line per bad variable."""


def _expected(error: Any, name: str) -> str:
    """What the variable should hold, in words (pydantic's error types → a short phrase)."""
    unit = next((words for suffix, words in _UNITS if name.endswith(suffix)), "")
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind in ("int_parsing", "int_from_float", "int_type"):
        return f"expected a whole number{unit}"
    if kind in ("float_parsing", "float_type", "finite_number"):
        return f"expected a number{unit}"
    if kind in ("bool_parsing", "bool_type"):
        return "expected true or false"
    if kind == "literal_error":
        return f"expected one of {ctx.get('expected', '')}".replace("'", "")
    bounds = {
        "greater_than": ("greater than", "gt"),
        "greater_than_equal": ("at least", "ge"),
        "less_than": ("less than", "lt"),
        "less_than_equal": ("at most", "le"),
    }
    if kind in bounds:
        words, key = bounds[kind]
        return f"expected a number{unit} {words} {ctx.get(key)}"
    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    return message[:1].lower() + message[1:]


def describe_validation_error(exc: ValidationError, prefix: str = ENV_PREFIX) -> list[str]:
    """One line per bad value, naming the environment variable, the expected form and the value.

    >>> try:
    ...     CommonSettings(kafka_topic_partitions="six")
    ... except ValidationError as exc:
    ...     describe_validation_error(exc)
    ["JOURNEYWATCH_KAFKA_TOPIC_PARTITIONS: expected a whole number, got 'six'"]
    """
    lines = []
    for error in exc.errors():
        loc = error.get("loc") or ()
        name = str(loc[0]) if loc else ""
        variable = f"{prefix}{name.upper()}" if name else exc.title
        line = f"{variable}: {_expected(error, name)}"
        if name and "input" in error and not isinstance(error["input"], dict):
            line += f", got {error['input']!r}"
        lines.append(line)
    return lines


def load_settings(cls: type[S], **values: Any) -> S:
    """Build settings from the environment; SettingsError with one line per bad variable."""
    try:
        return cls(**values)
    except ValidationError as exc:
        prefix = str(cls.model_config.get("env_prefix") or ENV_PREFIX)
        raise SettingsError("\n".join(describe_validation_error(exc, prefix))) from None
    except SourceError as exc:  # a value pydantic-settings could not even decode (JSON lists)
        raise SettingsError(str(exc)) from None


def settings_or_exit(cls: type[S], prog: str) -> S:
    """`load_settings` for a service's __main__: a bad variable prints one line and exits 2."""
    try:
        return load_settings(cls)
    except SettingsError as exc:
        for line in str(exc).splitlines():
            print(f"{prog}: {line}", file=sys.stderr)
        raise SystemExit(2) from None


def journeys_or_exit(settings: CommonSettings, prog: str) -> None:
    """Check the journey file before a service starts: its problems, one line each, exit 2."""
    from journeywatch.shared.journeys import JourneyConfigError, load_journeys

    try:
        load_journeys(settings.journeys_file)
    except JourneyConfigError as exc:
        lines = str(exc).splitlines()
        for line in [text.strip() for text in lines[1:]] or lines:
            print(f"{prog}: {line}", file=sys.stderr)
        raise SystemExit(2) from None


def service_parser(prog: str, description: str, cls: type[BaseSettings]) -> argparse.ArgumentParser:
    """An argument parser whose --help lists the environment variables the service reads."""
    prefix = str(cls.model_config.get("env_prefix") or ENV_PREFIX)
    names = ", ".join(f"{prefix}{name.upper()}" for name in cls.model_fields)
    return argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=f"Configured by environment variables (docs/CONFIGURATION.md): {names}.",
    )


def parse_service_args(
    prog: str, description: str, cls: type[BaseSettings], argv: Sequence[str] | None = None
) -> argparse.Namespace:
    """Parse a service's command line: --help prints the help and exits instead of serving."""
    return service_parser(prog, description, cls).parse_args(argv)
