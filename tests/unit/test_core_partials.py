"""The stage-1 → stage-2 message (issue 13): Partial, its versioned codec and merge = sum."""

from __future__ import annotations

import doctest
import random
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from journeywatch.detector.core import partials
from journeywatch.detector.core.partials import (
    PARTIAL_VERSION,
    SUPPORTED_VERSIONS,
    PaneSums,
    Partial,
    PartialError,
    decode_partial,
    encode_partial,
    merge,
)

WEB = (("channel", "web"),)
MOBILE_DE = (("channel", "mobile"), ("country", "de"))


def _partial(**changes: Any) -> Partial:
    fields: dict[str, Any] = {
        "fingerprint": "cfg-7f3a",
        "partition": 1,
        "partitions": 6,
        "journey": "ecommerce",
        "pane": 5_900_000,
        "kind": "spec",
        "frontier": 1_770_000_012.5,
        "first_t": 1_769_990_000.0,
        "offset": 48_211,
        "rows": (
            ("browse", (), (12, 9, 7, 9, 0, 1, 0, 0, 3, 2_100_000, 1_700_000, 0, 0, 0, 12)),
            ("browse", WEB, (8, 6, 5, 6, 0, 1, 0, 0, 2, 1_500_000, 1_250_000, 0, 0, 0, 8)),
            (
                "checkout",
                MOBILE_DE,
                (3, 3, 1, 3, 1, 2, 1, 0, 1, -400_000, 160_000, 1, 59_990_000, 1),
            ),
        ),
        "starts": (("browse→cart", (), 9), ("browse→cart", WEB, 6)),
        "done": (("browse→cart", (), 0, 4), ("browse→cart", (), 1, 2)),
        "flow": (("browse→cart", (), 14, 5), ("browse→cart", WEB, 9, 3)),
        "late": (("checkout", 2),),
        "unknown_events": 3,
        "journey_started": True,
    }
    fields.update(changes)
    return Partial(**fields)


def test_module_doctests_run() -> None:
    result = doctest.testmod(partials)
    assert result.attempted >= 8
    assert result.failed == 0


# ---------------------------------------------------------------------- codec


def test_round_trip_keeps_every_field_and_equal_partials_give_equal_bytes() -> None:
    p = _partial()
    data = encode_partial(p)
    back = decode_partial(data)
    assert back == p
    assert back.rows[2] == p.rows[2]
    assert isinstance(back.rows[2][2], tuple)  # hashable: the key of a merged row
    assert encode_partial(_partial()) == data
    assert encode_partial(back) == data
    assert back.key == (1, 5_900_000, "spec")
    assert msgspec.msgpack.decode(data)["v"] == PARTIAL_VERSION


def test_a_few_kb_at_most_for_a_pane_of_the_example_catalog() -> None:
    # ~40 dimension combinations × 4 stages of 15 counters: the architecture's "a few KB".
    rows = tuple(
        (stage, (("channel", ch), ("country", c)), tuple(range(15)))
        for stage in ("browse", "cart", "checkout", "payment")
        for ch in ("web", "mobile", "store", "call_center")
        for c in ("de", "fr", "it", "es", "nl", "pl", "se", "at", "be", "dk")
    )
    assert 1_000 < len(encode_partial(_partial(rows=rows))) < 16_000


@pytest.mark.parametrize("version", [0, 4, 99])
def test_unknown_versions_are_refused_before_anything_else_is_read(version: int) -> None:
    # Spec changes with version 2 (flow rows, unknown events) and 3 (held, marks): versions 1 to
    # 3 are read, the rest refused as before (this test asserted "3 is refused" while only 1 and
    # 2 existed).
    data = msgspec.msgpack.encode({"v": version, "journey": "ecommerce", "rows": "garbage"})
    with pytest.raises(
        PartialError, match=f"unsupported partial version {version} .reads 1, 2, 3."
    ):
        decode_partial(data)


# A final partial as the version-1 code (commit 3b9ffb5) encoded it: no flow, no unknown events.
V1_BYTES = bytes.fromhex(
    "8fa17601ab66696e6765727072696e74a26631a9706172746974696f6e00aa706172746974696f6e7302a76a6f"
    "75726e6579a473686f70a470616e650aa46b696e64a566696e616ca866726f6e74696572cb4060400000000000"
    "a766697273745f74cb4008000000000000a66f666673657429a4726f77739193a4636172749192a76368616e6e"
    "656ca3776562920201a67374617274739193ab76696577e28692636172749192a76368616e6e656ca377656203"
    "a4646f6e6590a46c6174659192a46361727401af6a6f75726e65795f73746172746564c3"
)


def test_versions_1_and_2_are_read() -> None:
    assert sorted(SUPPORTED_VERSIONS) == [1, 2, 3]
    old = decode_partial(V1_BYTES)
    web = (("channel", "web"),)
    assert old.v == 1
    assert (old.journey, old.pane, old.kind, old.offset) == ("shop", 10, "final", 41)
    assert old.rows == (("cart", web, (2, 1)),)
    assert old.starts == (("view→cart", web, 3),)
    assert old.late == (("cart", 1),)
    assert old.journey_started
    assert old.flow == ()  # the fields version 1 lacks: none
    assert old.unknown_events == 0
    sums = PaneSums.of(old)
    assert sums.flow == {}
    assert sums.unknown_events == 0
    assert decode_partial(encode_partial(old)) == old  # a version-1 partial stays version 1
    new = old.replace(v=2, flow=(("view→cart", web, 7, 2),), unknown_events=4)
    assert decode_partial(encode_partial(new)) == new
    assert merge([old, new]).flow == {("view→cart", web): (7, 2)}
    assert merge([old, new]).unknown_events == 4
    assert merge([old, new]).rows == {("cart", web): (4, 2)}
    raw = msgspec.msgpack.decode(encode_partial(_partial()))
    assert raw["v"] == 3
    assert raw["flow"] == [["browse→cart", [], 14, 5], ["browse→cart", [["channel", "web"]], 9, 3]]
    assert raw["unknown_events"] == 3


@pytest.mark.parametrize(
    "changes",
    [{"flow": [["browse→cart", [], 1, 0]]}, {"unknown_events": 1}],
    ids=["flow", "unknown"],
)
def test_a_version_1_partial_with_version_2_fields_is_refused(changes: dict[str, Any]) -> None:
    raw = msgspec.to_builtins(_partial(flow=(), unknown_events=0))
    raw.update(v=1, **changes)
    with pytest.raises(PartialError, match="version 1 partial has no flow rows nor unknown"):
        decode_partial(msgspec.msgpack.encode(raw))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",  # never used in MessagePack
        b"not msgpack at all",
        msgspec.msgpack.encode([1, 2, 3]),
        msgspec.msgpack.encode({"journey": "ecommerce"}),  # no version
        encode_partial(_partial())[:-7],  # truncated
    ],
    ids=["empty", "reserved-byte", "text", "array", "no-version", "truncated"],
)
def test_malformed_bytes_raise_partial_error(data: bytes) -> None:
    with pytest.raises(PartialError, match="partial"):
        decode_partial(data)


def _encoded_with(**changes: Any) -> bytes:
    raw = msgspec.to_builtins(_partial())
    raw.update(changes)
    return msgspec.msgpack.encode(raw)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"kind": "early"}, "malformed partial"),
        ({"pane": "5900000"}, "Expected `int`"),
        ({"rows": [["browse", [], "12"]]}, "malformed partial"),
        ({"unexpected": 1}, "unknown field"),
        ({"partition": 6}, "partition 6 outside 0..5"),
        ({"partitions": 0}, "outside"),
        ({"offset": -1}, "negative source offset"),
        ({"first_t": 1_770_000_013.0}, "after the frontier"),
        ({"rows": [["browse", [["country", "de"], ["channel", "web"]], [1]]]}, "sorted by name"),
        ({"rows": [["browse", [], [1]], ["browse", [], [2]]]}, "appears twice"),
        ({"starts": [["browse→cart", [], -1]]}, "negative count"),
        ({"late": [["checkout", 1], ["checkout", 2]]}, "appears twice"),
        ({"flow": [["browse→cart", [], 1, 0], ["browse→cart", [], 2, 1]]}, "appears twice"),
        ({"flow": [["browse→cart", [], 1, -1]]}, "negative count"),
        ({"flow": [["browse→cart", [], 1]]}, "malformed partial"),
        ({"flow": [["a", [["country", "de"], ["channel", "web"]], 1, 0]]}, "sorted by name"),
        ({"unknown_events": -1}, "negative count"),
        ({"journey": ""}, "names its journey"),
    ],
)
def test_bad_content_is_refused_with_a_clear_error(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(PartialError, match=message):
        decode_partial(_encoded_with(**changes))


def test_a_missing_field_is_refused() -> None:
    raw = msgspec.to_builtins(_partial())
    del raw["frontier"]
    with pytest.raises(PartialError, match="missing required field `frontier`"):
        decode_partial(msgspec.msgpack.encode(raw))


def test_constructing_a_bad_partial_fails_as_decoding_it_does() -> None:
    with pytest.raises(PartialError, match="not 'spec', 'final' or 'mark'"):
        _partial(kind="late")
    with pytest.raises(PartialError, match="finite"):
        _partial(frontier=float("nan"))
    with pytest.raises(PartialError, match="version 4"):
        _partial(v=4)
    assert _partial(v=1, flow=(), unknown_events=0).v == 1


# A version-2 spec partial as the code of commit f8f3049 encoded it (msgspec, every field).
V2_BYTES = msgspec.msgpack.encode(
    {
        "v": 2, "fingerprint": "f1", "partition": 1, "partitions": 2, "journey": "shop",
        "pane": 10, "kind": "spec", "frontier": 130.0, "first_t": 3.0, "offset": 41,
        "rows": [["cart", [["channel", "web"]], [2, 1]]], "starts": [], "done": [],
        "flow": [["view→cart", [], 5, 2]], "late": [], "unknown_events": 1,
        "journey_started": True,
    }
)  # fmt: skip


def test_version_3_is_written_with_held_and_marks_and_version_2_is_read_as_not_held() -> None:
    assert PARTIAL_VERSION == 3
    old = decode_partial(V2_BYTES)
    assert (old.v, old.held, old.kind, old.unknown_events) == (2, False, "spec", 1)
    assert old.flow == (("view→cart", (), 5, 2),)
    assert decode_partial(encode_partial(old)) == old  # a version-2 partial stays version 2
    held = _partial(held=True)
    assert held.v == 3
    assert msgspec.msgpack.decode(encode_partial(held))["held"] is True
    assert decode_partial(encode_partial(held)) == held
    assert decode_partial(encode_partial(held)).held
    mark = _partial(
        kind="mark", rows=(), starts=(), done=(), flow=(), late=(), unknown_events=0, held=True
    )
    back = decode_partial(encode_partial(mark))
    assert back == mark
    assert (back.kind, back.held, back.frontier, back.offset) == (
        "mark",
        True,
        1_770_000_012.5,
        48_211,
    )
    assert PaneSums.of(back).rows == {}
    # What versions 1 and 2 cannot say is refused in them; a mark carries no pane content.
    with pytest.raises(PartialError, match="version 2 partial has no hold state nor marks"):
        _partial(v=2, held=True)
    with pytest.raises(PartialError, match="version 2 partial has no hold state nor marks"):
        decode_partial(msgspec.msgpack.encode(msgspec.to_builtins(mark) | {"v": 2}))
    with pytest.raises(PartialError, match="a mark carries no pane content"):
        _partial(kind="mark")


# ---------------------------------------------------------------------- merge


def test_merge_sums_rows_steps_flow_late_and_unknown_counts_of_three_partitions() -> None:
    a = _partial(partition=0)
    b = _partial(
        partition=1,
        rows=(("browse", (), (3,) + (0,) * 13 + (3,)), ("cart", WEB, (1, 1) + (0,) * 12)),
        starts=(("browse→cart", (), 2),),
        done=(("browse→cart", (), 1, 5), ("browse→cart", WEB, 0, 1)),
        flow=(("browse→cart", (), 2, 1), ("cart→checkout", MOBILE_DE, 1, 0)),
        late=(("checkout", 1), ("browse", 4)),
        unknown_events=0,
        journey_started=False,
    )
    c = _partial(
        partition=2,
        rows=(),
        starts=(),
        done=(),
        flow=(),
        late=(),
        unknown_events=2,
        journey_started=False,
    )
    total = merge([a, b, c])
    assert total.rows[("browse", ())] == (
        15, 9, 7, 9, 0, 1, 0, 0, 3, 2_100_000, 1_700_000, 0, 0, 0, 15,
    )  # fmt: skip
    assert total.rows[("browse", WEB)] == a.rows[1][2]
    assert total.rows[("cart", WEB)] == (1, 1) + (0,) * 12
    assert total.rows[("checkout", MOBILE_DE)][9] == -400_000  # sentiment sums may be negative
    assert total.starts == {("browse→cart", ()): 11, ("browse→cart", WEB): 6}
    assert total.done == {
        ("browse→cart", (), 0): 4,
        ("browse→cart", (), 1): 7,
        ("browse→cart", WEB, 0): 1,
    }
    assert total.flow == {
        ("browse→cart", ()): (16, 6),
        ("browse→cart", WEB): (9, 3),
        ("cart→checkout", MOBILE_DE): (1, 0),
    }
    assert total.late == {"checkout": 3, "browse": 4}
    assert total.unknown_events == 5
    assert total.journey_started
    assert not merge([c]).journey_started
    assert not merge([c]).empty  # unknown events are content
    assert merge([c.replace(unknown_events=0)]).empty
    assert merge([]) == PaneSums()


def test_rows_of_one_key_with_different_layouts_do_not_merge() -> None:
    a = _partial(rows=(("cart", (), (1, 2)),))
    b = _partial(rows=(("cart", (), (1, 2, 3)),))
    with pytest.raises(PartialError, match="has 3 counters, not 2"):
        merge([a, b])


def test_merge_of_sums_and_partials_is_order_and_grouping_free_seeded() -> None:
    rng = random.Random(13)
    parts = [_random_sums(rng) for _ in range(12)]
    expected = merge(parts)
    for _ in range(50):
        shuffled = parts[:]
        rng.shuffle(shuffled)
        cut = rng.randrange(len(parts) + 1)
        assert merge([merge(shuffled[:cut]), merge(shuffled[cut:])]) == expected


def test_minus_gives_what_a_final_adds_to_its_spec() -> None:
    spec = PaneSums.of(_partial())
    more = PaneSums(
        rows={("browse", WEB): (1,) + (0,) * 14},
        flow={("browse→cart", WEB): (2, 1), ("cart→checkout", ()): (1, 0)},
        late={"browse": 2},
        unknown_events=1,
    )
    final = merge([spec, more])
    assert final.flow[("browse→cart", WEB)] == (11, 4)
    added = final.minus(spec)
    assert added == more
    assert spec.minus(spec).empty
    assert PaneSums().minus(more).flow == {
        ("browse→cart", WEB): (-2, -1),
        ("cart→checkout", ()): (-1, 0),
    }


_DIMS = [(), WEB, MOBILE_DE]
_KEYS = ["browse", "cart"]


def _random_sums(rng: random.Random) -> PaneSums:
    return PaneSums(
        rows={
            (s, d): tuple(rng.randint(-5, 9) for _ in range(3))
            for s in _KEYS
            for d in _DIMS
            if rng.random() < 0.5
        },
        starts={(s, d): rng.randint(0, 9) for s in _KEYS for d in _DIMS if rng.random() < 0.4},
        done={(s, (), a): rng.randint(0, 9) for s in _KEYS for a in range(3) if rng.random() < 0.4},
        flow={
            (s, d): (rng.randint(0, 9), rng.randint(0, 9))
            for s in _KEYS
            for d in _DIMS
            if rng.random() < 0.4
        },
        late={s: rng.randint(0, 3) for s in _KEYS if rng.random() < 0.3},
        unknown_events=rng.randint(0, 2),
        journey_started=rng.random() < 0.3,
    )


_counts = st.integers(min_value=0, max_value=50)
_sums = st.builds(
    PaneSums,
    rows=st.dictionaries(
        st.tuples(st.sampled_from(_KEYS), st.sampled_from(_DIMS)),
        st.tuples(*[st.integers(min_value=-1_000_000, max_value=1_000_000)] * 3),
        max_size=6,
    ),
    starts=st.dictionaries(
        st.tuples(st.sampled_from(_KEYS), st.sampled_from(_DIMS)), _counts, max_size=4
    ),
    done=st.dictionaries(
        st.tuples(st.sampled_from(_KEYS), st.sampled_from(_DIMS), st.integers(0, 4)),
        _counts,
        max_size=4,
    ),
    flow=st.dictionaries(
        st.tuples(st.sampled_from(_KEYS), st.sampled_from(_DIMS)),
        st.tuples(_counts, _counts),
        max_size=4,
    ),
    late=st.dictionaries(st.sampled_from(_KEYS), _counts, max_size=2),
    unknown_events=_counts,
    journey_started=st.booleans(),
)


@settings(max_examples=200, deadline=None)
@given(_sums, _sums, _sums)
def test_merge_is_commutative_and_associative(a: PaneSums, b: PaneSums, c: PaneSums) -> None:
    assert merge([a, b]) == merge([b, a])
    assert merge([merge([a, b]), c]) == merge([a, merge([b, c])]) == merge([c, a, b])


@settings(max_examples=200, deadline=None)
@given(_sums, _sums)
def test_minus_undoes_merge(a: PaneSums, b: PaneSums) -> None:
    added = merge([a, b]).minus(a)
    assert _nonzero(added) == _nonzero(b)
    assert added.unknown_events == b.unknown_events
    assert added.journey_started == (b.journey_started and not a.journey_started)


def _nonzero(s: PaneSums) -> PaneSums:
    return PaneSums(
        rows={k: v for k, v in s.rows.items() if any(v)},
        starts={k: n for k, n in s.starts.items() if n},
        done={k: n for k, n in s.done.items() if n},
        flow={k: v for k, v in s.flow.items() if any(v)},
        late={k: n for k, n in s.late.items() if n},
        unknown_events=s.unknown_events,
    )
