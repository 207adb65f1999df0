"""Event-time alignment of partitions: release records so no partition runs ahead of one with unread data.

Kafka hands out partitions in whatever order its fetches complete: during a replay one partition
can be read hours (of event time) ahead of another. Fed straight into the core, that would let the
watermark pass events of the slower partition (they would count as late) and make the result depend
on fetch timing. Like Kafka Streams' record selection by timestamp, the aligner buffers per partition
and releases only what every partition with unread data has already reached in event time.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")
_NEG_INF = float("-inf")


class PartitionAligner(Generic[T]):
    """Per-partition FIFO buffers released up to the slowest pending partition's event time."""

    def __init__(self, max_buffered_per_partition: int = 20_000) -> None:
        self.max_buffered = max_buffered_per_partition
        self._buffers: dict[int, deque[tuple[float, int, T]]] = {}
        self._reached: dict[int, float] = {}

    def add(self, partition: int, offset: int, event_time: float | None, item: T) -> None:
        """Buffer one record; `event_time` None (an undecodable record) keeps the partition's time."""
        reached = self._reached.get(partition, _NEG_INF)
        if event_time is not None and event_time > reached:
            reached = self._reached[partition] = event_time
        self._buffers.setdefault(partition, deque()).append((reached, offset, item))

    def buffered(self, partition: int) -> int:
        """Records of `partition` waiting to be released."""
        buffer = self._buffers.get(partition)
        return len(buffer) if buffer else 0

    def full(self, partition: int) -> bool:
        """Whether `partition` should stop fetching until others catch up."""
        return self.buffered(partition) >= self.max_buffered

    def release(
        self, partitions: set[int], has_unread: Callable[[int], bool]
    ) -> list[tuple[int, int, T]]:
        """Records (partition, offset, item) safe to apply now, in per-partition offset order.

        The bound is the lowest event time reached by a partition that still has unread records
        on the broker (-inf for one never read yet); partitions fully read do not hold it.
        """
        bound = float("inf")
        for partition in partitions:
            if has_unread(partition):
                bound = min(bound, self._reached.get(partition, _NEG_INF))
        released: list[tuple[int, int, T]] = []
        for partition, buffer in self._buffers.items():
            while buffer and buffer[0][0] <= bound:
                _, offset, item = buffer.popleft()
                released.append((partition, offset, item))
        return released

    def drop(self, partitions: set[int]) -> None:
        """Forget buffered records of revoked partitions (they will be read again)."""
        for partition in partitions:
            self._buffers.pop(partition, None)
            self._reached.pop(partition, None)
