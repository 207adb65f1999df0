"""What the runner needs from Kafka, as Protocols (aiokafka's clients satisfy them)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from aiokafka.structs import TopicPartition


class Consumer(Protocol):
    """The consumer calls the runner makes."""

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> Mapping[TopicPartition, Sequence[Any]]: ...

    async def commit(self, offsets: Mapping[TopicPartition, int] | None = None) -> None: ...

    def seek(self, partition: TopicPartition, offset: int) -> None: ...

    def assignment(self) -> set[TopicPartition]: ...
