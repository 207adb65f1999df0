"""The detector's state codec: plain data and allowlisted classes only, never code (issue 11 item 7)."""

from __future__ import annotations

import doctest
import os
import pickle
import zlib
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import msgpack
import pytest

from journeywatch.detector.core import CoreConfig, JourneyDetector, snapshot
from journeywatch.detector.core.detector import STATE_CODEC
from journeywatch.detector.core.snapshot import MAGIC, Codec, SnapshotError, is_pickle, tag_of
from journeywatch.shared.anomalies import Metric
from tests.unit.detector_streams import Scenario, catalog, constant_rate, generate, run, single


@dataclass
class _Point:
    x: int
    label: str = "a"
    seen: set[int] = field(default_factory=set)


class _Slotted:
    __slots__ = ("a", "b")

    def __init__(self, a: int, b: tuple[int, ...]) -> None:
        self.a, self.b = a, b


def _forged(body: object) -> bytes:
    """A frame as an attacker with write access to the checkpoint table would write it."""
    packed = msgpack.packb(body, default=lambda o: list(o) if isinstance(o, tuple) else o)
    return MAGIC + b"\x01" + zlib.compress(packed)


def _marker(code: int) -> msgpack.ExtType:
    return msgpack.ExtType(code, b"")


def test_plain_data_round_trips_with_its_types() -> None:
    codec = Codec(())
    state = {
        (1, 2, (3, 4)): [1.5, None, True, -(2**62), b"\x00raw"],
        "nested": {None: frozenset({"a"}), 7: {1, 2}},
        "recent": deque([1.0, 2.0], maxlen=3),
        "at": datetime(2026, 3, 2, 12, 0, 1, 123456, tzinfo=UTC),
        "inf": float("inf"),
        "empty": ((), [], {}),
    }
    back = codec.unpack(codec.pack(state))
    assert back == state
    assert type(back["recent"]) is deque
    assert back["recent"].maxlen == 3
    assert type(back["nested"][None]) is frozenset
    assert type(back["empty"][0]) is tuple
    assert type(back["empty"][1]) is list
    assert back["at"].utcoffset() == timedelta(0)
    assert codec.unpack(codec.pack(state, compress=False)) == state


def test_allowlisted_classes_round_trip_and_new_fields_get_their_defaults() -> None:
    codec = Codec((_Point, _Slotted, Metric))
    state = [_Point(3, "b", {1}), _Slotted(1, (2, 3)), Metric.CONVERSION_RATE]
    point, slotted, metric = codec.unpack(codec.pack(state))
    assert point == _Point(3, "b", {1})
    assert (slotted.a, slotted.b) == (1, (2, 3))
    assert metric is Metric.CONVERSION_RATE
    # A snapshot written before `seen` existed: the field starts from its default factory.
    old = _forged([[_marker(9), tag_of(_Point), {"x": 5, "label": "c"}, None]])
    assert codec.unpack(old) == [_Point(5, "c", set())]


def test_a_class_outside_the_allowlist_is_refused_when_encoding() -> None:
    with pytest.raises(SnapshotError, match="not in the snapshot allowlist"):
        Codec(()).pack({"point": _Point(1)})
    with pytest.raises(SnapshotError, match="not in the snapshot allowlist"):
        STATE_CODEC.pack([pytest])  # a module is never state
    with pytest.raises(SnapshotError, match="naive datetime"):
        Codec(()).pack(datetime(2026, 1, 1))


def test_a_forged_tag_naming_os_system_is_rejected_without_executing(
    tmp_path: pytest.TempPathFactory,
) -> None:
    marker = tmp_path / "pwned"  # type: ignore[operator]
    command = f"touch {marker}"
    # Every way the format constructs something, each pointed at os.system / posix.system.
    forged = [
        [_marker(5), "posix:system", command],  # enum value lookup
        [_marker(7), "posix:system", [command], b""],  # native: cls.__new__(*args)
        [_marker(8), "os:system", command],  # __setstate__
        [_marker(9), "os:system", {"x": command}, None],  # attributes
        [_marker(9), tag_of(os.system.__class__), {}, None],  # builtin_function_or_method
        [_marker(9), "subprocess:Popen", {"args": command}, None],
        # Inside the allowed package, only classes: not functions, not modules' attributes.
        [_marker(8), "journeywatch.detector.core.snapshot:is_pickle", command],
        [_marker(9), "journeywatch.detector.core.snapshot:msgpack", {}, None],
        [_marker(9), "journeywatch.detector.core.snapshot:zlib.compress", {}, None],
        [_marker(9), "journeywatch.detector.core.snapshot:dataclasses.fields", {}, None],
        [_marker(9), "journeywatch.detector.core.not_imported:X", {}, None],
    ]
    for body in forged:
        with pytest.raises(SnapshotError, match="not in the snapshot allowlist"):
            STATE_CODEC.unpack(_forged([{"version": 3}, {"_sessions": body}]))
    # An unknown extension code or a non-empty extension is not read either.
    for ext in (msgpack.ExtType(42, b""), msgpack.ExtType(1, b"os.system")):
        with pytest.raises(SnapshotError, match="unknown extension"):
            STATE_CODEC.unpack(MAGIC + b"\x00" + msgpack.packb([ext]))
    assert not os.path.exists(marker)


def test_classes_of_an_allowed_package_round_trip_by_name() -> None:
    codec = Codec((), packages=("tests.unit",))
    point, slotted = codec.unpack(codec.pack([_Point(1), _Slotted(2, ())]))
    assert point == _Point(1)
    assert (slotted.a, slotted.b) == (2, ())

    def local() -> object:
        class Hidden:
            pass

        return Hidden()

    with pytest.raises(SnapshotError, match="not in the snapshot allowlist"):
        codec.pack(local())


def test_a_pickle_is_refused_unread() -> None:
    class Boom:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, ("exit 1",))

    data = pickle.dumps(({"version": 2}, {"x": Boom()}), protocol=5)
    assert is_pickle(data)
    with pytest.raises(SnapshotError, match="pickle"):
        JourneyDetector.unpack_snapshot(data)
    with pytest.raises(SnapshotError, match="unknown frame"):
        STATE_CODEC.unpack(data)
    with pytest.raises(SnapshotError, match="unknown frame"):
        STATE_CODEC.unpack(b"")


def test_malformed_frames_are_snapshot_errors() -> None:
    good = STATE_CODEC.pack([{}, {}])
    for bad in (good[:-3], MAGIC + b"\x07" + good[5:], MAGIC + b"\x01not zlib"):
        with pytest.raises(SnapshotError):
            STATE_CODEC.unpack(bad)
    # A list used as a dictionary key (unhashable) is an error too, not a crash.
    with pytest.raises(SnapshotError):
        STATE_CODEC.unpack(MAGIC + b"\x00" + msgpack.packb({0: 1}).replace(b"\x00", b"\x91\x00"))


def test_a_zlib_bomb_is_refused_before_it_inflates_past_the_cap() -> None:
    codec = Codec((), max_bytes=1 << 20)
    bomb = MAGIC + b"\x01" + zlib.compress(msgpack.packb(b"\x00" * (8 << 20)), 9)
    assert len(bomb) < 20_000  # 8 MiB of zeros in a few KiB
    with pytest.raises(SnapshotError, match="inflates beyond 1048576 bytes"):
        codec.unpack(bomb)
    # The same frame under the default cap decodes: the cap is what refused it.
    assert Codec(()).unpack(bomb) == b"\x00" * (8 << 20)


def test_a_detector_snapshot_holds_no_pickle_and_continues_identically() -> None:
    events = generate(
        Scenario(
            rate=constant_rate(200),
            minutes=60,
            purchase_fails=lambda t, channel: channel == "mobile" and t.minute >= 45,
        )
    )
    config = CoreConfig(warmup_windows=15, allowed_lateness_seconds=5)
    whole = JourneyDetector(catalog(60), config)
    reference = run(whole, single(events), finish=False)
    assert [c for c in reference.changes if c.change.value == "opened"], "needs an incident"
    cut = next(i for i, e in enumerate(events) if e.occurred_at.minute >= 50)
    first = JourneyDetector(catalog(60), config)
    part1 = run(first, single(events[:cut]), finish=False)
    data = first.snapshot()
    assert data.startswith(MAGIC)
    assert not is_pickle(data)
    assert first._incidents, "the snapshot is taken while an incident is open"
    restored = JourneyDetector.restore(data, catalog(60), config)
    assert restored.open_incidents == first.open_incidents
    part2 = run(restored, single(events[cut:]), finish=False)
    both = [c.model_dump() for c in part1.changes + part2.changes]
    assert both == [c.model_dump() for c in reference.changes]


def test_an_older_snapshot_version_is_refused() -> None:
    detector = JourneyDetector(catalog(60), CoreConfig())
    header, state = JourneyDetector.unpack_snapshot(detector.snapshot())
    data = JourneyDetector.pack_snapshot({**header, "version": 2}, state)
    with pytest.raises(ValueError, match="version 2"):
        JourneyDetector.restore(data, catalog(60), CoreConfig())


def test_the_codec_module_doctests_run() -> None:
    result = doctest.testmod(snapshot)
    assert result.attempted >= 5
    assert result.failed == 0
