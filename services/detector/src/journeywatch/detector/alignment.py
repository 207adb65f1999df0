"""Event-time alignment of partitions: release records so no partition runs ahead of one with unread data.

Kafka hands out partitions in whatever order its fetches complete: during a replay one partition
can be read hours (of event time) ahead of another. Fed straight into the core, that would let the
watermark pass events of the slower partition (they would count as late) and make the result depend
on fetch timing. Like Kafka Streams' record selection by timestamp, the aligner buffers per partition
and releases only what every partition with unread data has already reached in event time.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

T = TypeVar("T")
_NEG_INF = float("-inf")


class PartitionAligner(Generic[T]):
    """Per-partition FIFO buffers released up to the slowest pending partition's event time."""

    def __init__(self, max_buffered_per_partition: int = 20_000) -> None:
        self.max_buffered = max_buffered_per_partition
        # Per partition: (reached time, offset, event time, item) in offset order.
        self._buffers: dict[int, deque[tuple[float, int, float | None, T]]] = {}
        self._reached: dict[int, float] = {}

    def add(self, partition: int, offset: int, event_time: float | None, item: T) -> None:
        """Buffer one record; `event_time` None (an undecodable record) keeps the partition's time."""
        self.add_many(partition, ((offset, event_time, item),))

    def add_many(self, partition: int, records: Iterable[tuple[int, float | None, T]]) -> None:
        """Buffer a partition's fetched records, (offset, event time, item), in offset order."""
        reached = self._reached.get(partition, _NEG_INF)
        buffer = self._buffers.get(partition)
        if buffer is None:
            buffer = self._buffers[partition] = deque()
        append = buffer.append
        for offset, event_time, item in records:
            if event_time is not None and event_time > reached:
                reached = event_time
            append((reached, offset, event_time, item))
        if reached > _NEG_INF:
            self._reached[partition] = reached

    def buffered(self, partition: int) -> int:
        """Records of `partition` waiting to be released."""
        buffer = self._buffers.get(partition)
        return len(buffer) if buffer else 0

    def holds(self, predicate: Callable[[T], bool]) -> bool:
        """Whether any buffered record's item satisfies `predicate` (a scan: call it rarely)."""
        return any(predicate(entry[3]) for buffer in self._buffers.values() for entry in buffer)

    def full(self, partition: int) -> bool:
        """Whether `partition` should stop fetching until others catch up."""
        return self.buffered(partition) >= self.max_buffered

    def release(
        self, partitions: set[int], has_unread: Callable[[int], bool]
    ) -> list[tuple[int, list[tuple[float, int, float | None, T]]]]:
        """Records safe to apply now: per partition, (reached time, offset, event time, item).

        The bound is the lowest event time reached by a partition that still has unread records
        on the broker (-inf for one never read yet); partitions fully read do not hold it.
        """
        bound = float("inf")
        for partition in partitions:
            if has_unread(partition):
                bound = min(bound, self._reached.get(partition, _NEG_INF))
        released: list[tuple[int, list[tuple[float, int, float | None, T]]]] = []
        for partition, buffer in self._buffers.items():
            if not buffer or buffer[0][0] > bound:
                continue
            if buffer[-1][0] <= bound:  # times only grow along a buffer: all of it goes
                released.append((partition, list(buffer)))
                buffer.clear()
                continue
            ready: list[tuple[float, int, float | None, T]] = []
            while buffer and buffer[0][0] <= bound:
                ready.append(buffer.popleft())
            released.append((partition, ready))
        return released

    def drop(self, partitions: set[int]) -> None:
        """Forget buffered records of revoked partitions (they will be read again)."""
        for partition in partitions:
            self._buffers.pop(partition, None)
            self._reached.pop(partition, None)
