"""Settings shared by every service: Kafka, database, journeys, logging (env prefix JOURNEYWATCH_)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "JOURNEYWATCH_"
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
