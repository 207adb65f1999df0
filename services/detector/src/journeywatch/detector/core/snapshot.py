"""A versioned, non-executable state codec: plain data and allowlisted classes, MessagePack, zlib.

A checkpoint is read back from a database, so whoever can write that table must not be able to
run code in the detector (``pickle.loads`` would let them). This codec writes only plain data —
None, bool, int, float, str, bytes, list, tuple, dict (any hashable keys), set, frozenset, deque,
aware datetimes — and instances of an allowlist of classes, each as a type tag and its attribute
state. The allowlist is the classes named explicitly (River's, the shared anomaly types) plus the
classes defined in explicitly named packages of our own (the detector core: its state classes
can grow without touching this list). Decoding resolves tags through that allowlist only, from
modules already imported (it never imports anything), creates instances with ``cls.__new__`` and
restores their attributes; an unknown tag is an error before any object of it exists.

Classes are encoded by the first rule that applies:

1. a native class with ``__getnewargs__`` (River's Rust statistics): its constructor arguments
   and its own state bytes;
2. a class defining ``__setstate__`` (slotted classes, frozen slotted dataclasses, pydantic
   models): what its ``__getstate__`` returns;
3. anything else: its ``__dict__`` and ``__slots__`` values, so fields added later round-trip
   without touching the codec.

The frame is ``MAGIC`` (format version inside), one compression byte, then the MessagePack body.

>>> from collections import deque
>>> codec = Codec(())
>>> state = {(1, "web"): [1.5, None], "seen": {3}, "recent": deque([1, 2], maxlen=4)}
>>> codec.unpack(codec.pack(state)) == state
True
>>> codec.unpack(codec.pack((1, (2, 3))))
(1, (2, 3))
"""

from __future__ import annotations

import dataclasses
import enum
import gc
import sys
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, Final

import msgpack  # type: ignore[import-untyped]  # no stubs; C packer, strict types

MAGIC: Final = b"JWS\x01"  # JourneyWatch state, frame version 1
_RAW: Final = 0
_ZLIB: Final = 1
# Level 1: 109 k sessions 24.7 → 4.8 MB in 0.18 s; level 6 reaches 4.2 MB in 0.47 s.
_ZLIB_LEVEL: Final = 1
# Extension codes: an empty ext is a marker heading a list that stands for something else. Real
# data never holds ext values (the encoder refuses unknown types), so a marker is unambiguous.
_TUPLE, _SET, _FROZENSET, _DEQUE, _ENUM, _DATETIME, _NATIVE, _STATE, _ATTRS = range(1, 10)
_PICKLE_PROTOCOLS: Final = frozenset(range(2, 6))


class SnapshotError(ValueError):
    """The bytes are not a snapshot this codec can read, or hold a type outside the allowlist."""


class _Marker:
    """A decoded extension marker (one per code)."""

    __slots__ = ("code",)

    def __init__(self, code: int) -> None:
        self.code = code


_MARKERS: Final = {code: _Marker(code) for code in range(1, 10)}
_EXT: Final = {code: msgpack.ExtType(code, b"") for code in range(1, 10)}


def tag_of(cls: type) -> str:
    """The stable name a class is written under: ``module:qualified name``."""
    return f"{cls.__module__}:{cls.__qualname__}"


def is_pickle(data: bytes) -> bool:
    """Whether ``data`` looks like a pickle (protocol 2+): an old checkpoint, never unpickled.

    >>> import pickle
    >>> is_pickle(pickle.dumps({"a": 1})), is_pickle(Codec(()).pack({"a": 1}))
    (True, False)
    """
    return len(data) >= 2 and data[0] == 0x80 and data[1] in _PICKLE_PROTOCOLS


class Codec:
    """Encode and decode plain data plus instances of ``types`` (classes and enums).

    Parameters
    ----------
    types
        Classes allowed by name: exactly these (not their subclasses) may appear in the state.
    packages
        Packages of our own whose module-level classes are allowed too (nested packages
        included; classes defined inside functions are not).
    max_bytes
        The largest decompressed body :meth:`unpack` accepts: a forged row cannot make the
        detector inflate a zlib bomb until memory runs out (1 M sessions are ≈ 0.3 GB raw).
    renamed
        Old tag → the class now written under another tag: a class moved to another module
        still decodes from checkpoints written before the move (it is encoded under its new tag).

    Examples
    --------
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Moved:
    ...     n: int
    >>> old = Codec((Moved,)).pack(Moved(1)).replace(tag_of(Moved).encode(), b"old.place:Moved")
    >>> Codec((Moved,), renamed={"old.place:Moved": Moved}).unpack(old)
    Moved(n=1)
    """

    def __init__(
        self,
        types: Iterable[type],
        packages: Iterable[str] = (),
        max_bytes: int = 4 << 30,
        renamed: Mapping[str, type] | None = None,
    ) -> None:
        self._packages = tuple(packages)
        self._max_bytes = max_bytes
        self._encoders: dict[type, Callable[[Any], list[Any]]] = {
            tuple: lambda obj: [_EXT[_TUPLE], *obj],
            set: lambda obj: [_EXT[_SET], *obj],
            frozenset: lambda obj: [_EXT[_FROZENSET], *obj],
            deque: lambda obj: [_EXT[_DEQUE], obj.maxlen, *obj],
            datetime: _encode_datetime,
        }
        self._by_tag: dict[str, type] = {}
        self._tags: dict[type, str] = {}
        self._slots: dict[type, tuple[str, ...]] = {}
        for cls in types:
            tag = tag_of(cls)
            self._by_tag[tag] = cls
            self._tags[cls] = tag
            self._slots[cls] = _slot_names(cls)
        for old, cls in (renamed or {}).items():
            self._by_tag[old] = cls  # decoding only: _tags keeps the class's own tag
            self._slots[cls] = _slot_names(cls)
        self._decoders: dict[int, Callable[[list[Any]], Any]] = {
            _TUPLE: lambda items: tuple(items[1:]),
            _SET: lambda items: set(items[1:]),
            _FROZENSET: lambda items: frozenset(items[1:]),
            _DEQUE: lambda items: deque(items[2:], maxlen=items[1]),
            _ENUM: self._decode_enum,
            _DATETIME: lambda items: datetime.fromisoformat(items[1]),
            _NATIVE: self._decode_native,
            _STATE: self._decode_state,
            _ATTRS: self._decode_attrs,
        }

    # ------------------------------------------------------------------ encoding

    def pack(self, obj: object, *, compress: bool = True) -> bytes:
        """The framed, optionally zlib-compressed MessagePack encoding of ``obj``."""
        try:
            body: bytes = msgpack.packb(obj, default=self._default, strict_types=True)
        except (TypeError, ValueError, OverflowError) as exc:
            raise SnapshotError(f"cannot encode the state: {exc}") from exc
        if compress:
            return MAGIC + bytes((_ZLIB,)) + zlib.compress(body, _ZLIB_LEVEL)
        return MAGIC + bytes((_RAW,)) + body

    def _default(self, obj: Any) -> list[Any]:
        # Called by the packer for every object that is not exactly a plain msgpack type: one
        # dictionary lookup per object (1 M sessions per checkpoint), the rules once per class.
        encode = self._encoders.get(type(obj))
        if encode is None:
            encode = self._encoder_for(type(obj))
        return encode(obj)

    def _encoder_for(self, cls: type) -> Callable[[Any], list[Any]]:
        tag = self._tags.get(cls) or self._package_tag(cls)
        if tag is None:
            raise TypeError(f"{tag_of(cls)} is not in the snapshot allowlist")
        encode: Callable[[Any], list[Any]]
        if issubclass(cls, enum.Enum):
            encode = lambda obj: [_EXT[_ENUM], tag, obj.value]  # noqa: E731
        elif hasattr(cls, "__getnewargs__"):
            native = _EXT[_NATIVE]
            encode = lambda obj: [native, tag, list(obj.__getnewargs__()), obj.__getstate__()]  # noqa: E731
        elif hasattr(cls, "__setstate__"):
            encode = lambda obj: [_EXT[_STATE], tag, obj.__getstate__()]  # noqa: E731
        else:
            names = self._slots[cls]

            def encode(obj: Any) -> list[Any]:
                attrs = dict(getattr(obj, "__dict__", {}))
                slots = {name: getattr(obj, name) for name in names if hasattr(obj, name)}
                return [_EXT[_ATTRS], tag, attrs, slots or None]

        self._encoders[cls] = encode
        return encode

    # ------------------------------------------------------------------ decoding

    def unpack(self, data: bytes) -> Any:
        """Decode ``pack()`` bytes; :class:`SnapshotError` for anything else."""
        if data[: len(MAGIC)] != MAGIC:
            raise SnapshotError("not a JourneyWatch state snapshot (unknown frame)")
        kind = data[len(MAGIC) : len(MAGIC) + 1]
        body = memoryview(data)[len(MAGIC) + 1 :]
        try:
            if kind == bytes((_ZLIB,)):
                inflater = zlib.decompressobj()
                raw: bytes | memoryview = inflater.decompress(body, self._max_bytes)
                if inflater.unconsumed_tail:
                    raise SnapshotError(
                        f"snapshot inflates beyond {self._max_bytes} bytes (refused unread)"
                    )
                if not inflater.eof:
                    raise SnapshotError("truncated snapshot (the compressed stream ends early)")
            elif kind == bytes((_RAW,)):
                raw = body
            else:
                raise SnapshotError(f"unknown snapshot compression {kind!r}")
            # Decoding builds millions of objects and no cycles: the collector's passes over
            # them are pure cost (a third of the decode time at 300 k sessions).
            collecting = gc.isenabled()
            gc.disable()
            try:
                return msgpack.unpackb(
                    raw,
                    raw=False,
                    strict_map_key=False,
                    use_list=True,
                    list_hook=self._list_hook,
                    ext_hook=_ext_hook,
                )
            finally:
                if collecting:
                    gc.enable()
        except SnapshotError:
            raise
        except Exception as exc:  # malformed bytes: any decoder error means "not readable"
            raise SnapshotError(f"cannot decode the state: {exc!r}") from exc

    def _list_hook(self, items: list[Any]) -> Any:
        if not items or type(items[0]) is not _Marker:
            return items
        return self._decoders[items[0].code](items)

    def _in_packages(self, module: str) -> bool:
        return any(module == p or module.startswith(p + ".") for p in self._packages)

    def _package_tag(self, cls: type) -> str | None:
        """The tag of a class allowed by its package (cached), else None."""
        if not self._in_packages(cls.__module__) or "<locals>" in cls.__qualname__:
            return None
        tag = tag_of(cls)
        if self._resolve(tag) is not cls:  # not reachable by name: could not be decoded
            return None
        self._tags[cls] = tag
        self._by_tag[tag] = cls
        self._slots[cls] = _slot_names(cls)
        return tag

    def _resolve(self, tag: str) -> type | None:
        """A class of an allowed package by tag, from modules already imported (no import)."""
        module, _, qualname = tag.partition(":")
        if not qualname or not self._in_packages(module) or module not in sys.modules:
            return None
        found: object = sys.modules[module]
        for part in qualname.split("."):
            # The namespace's own dictionary only: no attribute hooks, no descriptors run.
            found = vars(found).get(part) if hasattr(found, "__dict__") else None
        if not isinstance(found, type) or tag_of(found) != tag:
            return None
        return found

    def _class(self, tag: object) -> Any:
        cls = self._by_tag.get(tag) if isinstance(tag, str) else None
        if cls is None and isinstance(tag, str):
            cls = self._resolve(tag)
            if cls is not None:
                self._by_tag[tag] = cls
                self._slots[cls] = _slot_names(cls)
        if cls is None:
            raise SnapshotError(f"type {tag!r} is not in the snapshot allowlist")
        return cls

    def _decode_enum(self, items: list[Any]) -> Any:
        cls = self._class(items[1])
        if not issubclass(cls, enum.Enum):
            raise SnapshotError(f"{items[1]!r} is not an enum")
        return cls(items[2])

    def _decode_native(self, items: list[Any]) -> Any:
        cls = self._class(items[1])
        obj = cls.__new__(cls, *items[2])
        obj.__setstate__(items[3])
        return obj

    def _decode_state(self, items: list[Any]) -> Any:
        cls = self._class(items[1])
        obj = cls.__new__(cls)
        obj.__setstate__(items[2])
        return obj

    def _decode_attrs(self, items: list[Any]) -> Any:
        cls = self._class(items[1])
        attrs, slots = items[2] or {}, items[3] or {}
        if not all(type(name) is str for name in attrs) or not set(slots) <= set(self._slots[cls]):
            raise SnapshotError(f"unexpected attribute names for {items[1]!r}")
        obj = cls.__new__(cls)
        if attrs:
            obj.__dict__.update(attrs)
        for name, value in slots.items():
            object.__setattr__(obj, name, value)  # frozen classes too
        if dataclasses.is_dataclass(cls):
            _fill_defaults(obj, cls)
        return obj


def _encode_datetime(obj: datetime) -> list[Any]:
    if obj.tzinfo is None:
        raise TypeError("naive datetime in the state (event times are aware)")
    return [_EXT[_DATETIME], obj.isoformat()]


def _slot_names(cls: type) -> tuple[str, ...]:
    return tuple(
        name
        for klass in cls.__mro__
        for name in getattr(klass, "__slots__", ())
        if name not in ("__dict__", "__weakref__")
    )


def _fill_defaults(obj: object, cls: Any) -> None:
    """Fields added to a dataclass since the snapshot was taken start from their defaults."""
    for field in dataclasses.fields(cls):
        if hasattr(obj, field.name):
            continue
        if field.default is not dataclasses.MISSING:
            object.__setattr__(obj, field.name, field.default)
        elif field.default_factory is not dataclasses.MISSING:
            object.__setattr__(obj, field.name, field.default_factory())


def _ext_hook(code: int, data: bytes) -> _Marker:
    marker = _MARKERS.get(code)
    if marker is None or data:
        raise SnapshotError(f"unknown extension {code} in the snapshot")
    return marker
