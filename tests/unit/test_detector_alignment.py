"""The partition aligner: what it releases, in which order, and what holds it back."""

from journeywatch.detector.alignment import PartitionAligner


def _ids(released: list[tuple[int, list[tuple[float, int, float | None, str]]]]) -> list[str]:
    return [item for _, ready in released for _, _, _, item in ready]


def test_release_stops_at_the_slowest_partition_with_unread_data() -> None:
    aligner: PartitionAligner[str] = PartitionAligner()
    aligner.add_many(0, [(0, 10.0, "a0"), (1, 20.0, "a1"), (2, 30.0, "a2")])
    aligner.add_many(1, [(0, 15.0, "b0")])
    released = aligner.release({0, 1}, lambda _p: True)
    # Partition 1 has only reached 15 s: partition 0 may not run past it.
    assert _ids(released) == ["a0", "b0"]
    assert aligner.buffered(0) == 2
    aligner.add_many(1, [(1, 40.0, "b1")])
    assert _ids(aligner.release({0, 1}, lambda _p: True)) == ["a1", "a2"]
    assert aligner.buffered(1) == 1  # 40 s is past what partition 0 has reached (30 s)


def test_fully_read_partitions_do_not_hold_the_others() -> None:
    aligner: PartitionAligner[str] = PartitionAligner()
    aligner.add_many(0, [(5, 10.0, "a"), (6, 50.0, "b")])
    aligner.add_many(1, [(0, 12.0, "c")])
    released = aligner.release({0, 1}, lambda p: p == 0)  # partition 1 has nothing unread
    assert released == [
        (0, [(10.0, 5, 10.0, "a"), (50.0, 6, 50.0, "b")]),
        (1, [(12.0, 0, 12.0, "c")]),
    ]


def test_a_partition_never_read_holds_everything_back() -> None:
    aligner: PartitionAligner[str] = PartitionAligner()
    aligner.add_many(0, [(0, 10.0, "a")])
    assert aligner.release({0, 1}, lambda _p: True) == []
    assert aligner.buffered(0) == 1


def test_undecodable_records_keep_their_partitions_time_and_order() -> None:
    aligner: PartitionAligner[str] = PartitionAligner()
    aligner.add_many(0, [(0, 10.0, "a"), (1, None, "bad"), (2, 5.0, "older"), (3, 20.0, "b")])
    aligner.add_many(1, [(0, 12.0, "c")])
    released = aligner.release({0, 1}, lambda _p: True)
    # "bad" and "older" sort at the 10 s partition 0 had reached, so they go with "a".
    assert released[0] == (
        0,
        [(10.0, 0, 10.0, "a"), (10.0, 1, None, "bad"), (10.0, 2, 5.0, "older")],
    )
    assert _ids(released) == ["a", "bad", "older", "c"]


def test_add_is_add_many_of_one_and_drop_forgets_a_partition() -> None:
    one: PartitionAligner[str] = PartitionAligner()
    many: PartitionAligner[str] = PartitionAligner()
    records = [(0, 3.0, "x"), (1, 1.0, "y"), (2, 4.0, "z")]
    for offset, at, item in records:
        one.add(7, offset, at, item)
    many.add_many(7, records)
    assert one.release({7}, lambda _p: False) == many.release({7}, lambda _p: False)
    one.add_many(7, [(3, 9.0, "w")])
    one.drop({7})
    assert one.buffered(7) == 0
    assert one.release({7}, lambda _p: False) == []


def test_a_full_buffer_asks_for_a_pause() -> None:
    aligner: PartitionAligner[int] = PartitionAligner(max_buffered_per_partition=3)
    aligner.add_many(0, [(i, float(i), i) for i in range(3)])
    assert aligner.full(0)
    assert not aligner.full(1)
