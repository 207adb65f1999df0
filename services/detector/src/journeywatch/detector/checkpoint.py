"""What of a checkpoint survives a restore: the configuration fingerprint and the state kept per change.

The core's snapshot holds three kinds of state, and each depends on different settings:

- **event time** (watermark, open windows and panes, sessions and their timers, late counters):
  only valid for the same topic, window, panes, lateness and session timeout;
- **models** (series models, dimension expectations, early-evaluation statistics, band factors
  from feedback) and the dimension slots they are keyed by: valid for the same window length,
  journeys and contributor dimensions; their thresholds are re-applied from the current settings;
- **lifecycle** (open incidents, cooldowns, feedback seen, latest rates): kept with the models,
  so an incident open before the restart still resolves (or updates) afterwards.

Everything else in `CoreConfig` (minimum changes, resolve/cooldown windows, …) is read live by
the core and applies as soon as it changes. See docs/RELIABILITY.md for the table.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

import orjson

from journeywatch.detector.core import CoreConfig, JourneyDetector
from journeywatch.shared.journeys import JourneyCatalog

# What survives a fresh start of event time: learned models, the dimension slots they are keyed
# by, and the incident lifecycle. Every other name of the core's state (watermark, panes, sessions,
# timers, and anything the core adds later until it is listed here) is reset, so nothing that
# depends on event time is kept by accident.
MODEL_STATE: tuple[str, ...] = (
    "_series", "_dim_expect", "_early_stats", "_band_factors", "_slot_ids", "_slot_names",
    "_dim_counts", "_dimsets", "_seen_journeys", "_channel_slots", "_incidents", "_resolved_w",
    "_feedback", "_live", "late_events_total", "unknown_events", "_issued", "_order_value",
)  # fmt: skip
# Early-evaluation statistics are per pane boundary: reset with event time (panes may change).
PANE_STATE: tuple[str, ...] = ("_early_stats",)
LEARNED_STATE: tuple[str, ...] = ("_series", "_dim_expect", "_early_stats", "_order_value")


class Group(StrEnum):
    """Groups of settings a checkpoint depends on, by what a change to them invalidates."""

    JOURNEYS = "journeys"  # everything (stage indices key every model)
    WINDOW = "window"  # everything (count models learned per window length)
    DIMENSIONS = "dimensions"  # everything (dimension slots key the models)
    EVENT_TIME = "event_time"  # watermark, windows, sessions
    LEARNING = "learning"  # models start fresh (smoothing is inside the learned baselines)
    THRESHOLDS = "thresholds"  # re-applied to the restored models
    RULES = "rules"  # read live by the core: nothing to do


_GROUP_OF: dict[str, Group] = {
    "window_seconds": Group.WINDOW,
    "contributor_dimensions": Group.DIMENSIONS,
    "max_dimension_values": Group.DIMENSIONS,
    "allowed_lateness_seconds": Group.EVENT_TIME,
    "session_timeout_seconds": Group.EVENT_TIME,
    "idle_partition_windows": Group.EVENT_TIME,
    "panes_per_window": Group.EVENT_TIME,
    "level_alpha": Group.LEARNING,
    "rate_level_alpha": Group.LEARNING,
    "season_alpha": Group.LEARNING,
    "z_threshold": Group.THRESHOLDS,
    "warmup_windows": Group.THRESHOLDS,
    "relearn_after_windows": Group.THRESHOLDS,
    "protect_z": Group.THRESHOLDS,
    "min_volume": Group.THRESHOLDS,
}
_NOT_STATE = frozenset({"backfill"})  # set per core by the runner, not a user setting


def fingerprint(config: CoreConfig, catalog: JourneyCatalog) -> dict[str, Any]:
    """The settings the state depends on, JSON-ready, plus a digest of the journey catalog.

    >>> from journeywatch.shared.journeys import load_journeys
    >>> fp = fingerprint(CoreConfig(window_seconds=30), load_journeys())
    >>> fp["settings"]["window_seconds"], len(fp["journeys"])
    (30, 64)
    """
    settings = {
        f.name: _plain(getattr(config, f.name))
        for f in dataclasses.fields(config)
        if f.name not in _NOT_STATE
    }
    journeys = {
        name: journey.model_dump(mode="json") for name, journey in sorted(catalog.journeys.items())
    }
    digest = hashlib.sha256(orjson.dumps(journeys, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return {"settings": settings, "journeys": digest}


def changes(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[Group, list[str]]:
    """What differs between two fingerprints, by group (a missing old fingerprint: unknown).

    >>> from journeywatch.shared.journeys import load_journeys
    >>> cat = load_journeys()
    >>> changes(fingerprint(CoreConfig(), cat), fingerprint(CoreConfig(z_threshold=6.0), cat))
    {<Group.THRESHOLDS: 'thresholds'>: ['z_threshold: 4.5 → 6.0']}
    """
    found: dict[Group, list[str]] = {}
    if old is None:
        # A checkpoint from before fingerprints: the window and journeys are unknown, so only
        # what survives any of those changes is kept (see `plan`).
        return {Group.EVENT_TIME: ["no configuration fingerprint in the checkpoint"]}
    if old.get("journeys") != new["journeys"]:
        found.setdefault(Group.JOURNEYS, []).append("journey catalog")
    old_settings = old.get("settings", {})
    for name, value in new["settings"].items():
        before = old_settings.get(name, value)
        if before != value:
            group = _GROUP_OF.get(name, Group.RULES)
            found.setdefault(group, []).append(f"{name}: {_show(before)} → {_show(value)}")
    return found


def plan(changed: Mapping[Group, list[str]]) -> str:
    """'all' (continue exactly), 'models' (fresh event time) or 'nothing' (fresh state)."""
    if changed.keys() & {Group.JOURNEYS, Group.WINDOW, Group.DIMENSIONS}:
        return "nothing"
    if Group.EVENT_TIME in changed:
        return "models"
    return "all"


def rebuild(
    core: JourneyDetector,
    catalog: JourneyCatalog,
    config: CoreConfig,
    *,
    keep_event_time: bool,
    fresh_models: bool = False,
) -> JourneyDetector:
    """The core with its event-time state (and optionally its models) reset, thresholds re-applied.

    Works on the core's own snapshot/restore, so nothing is kept that restore would not rebuild.
    """
    header, state = JourneyDetector.unpack_snapshot(core.snapshot())  # a deep copy
    _, blank = JourneyDetector.unpack_snapshot(JourneyDetector(catalog, config).snapshot())
    drop: set[str] = set()
    if not keep_event_time:
        drop |= (state.keys() - set(MODEL_STATE)) | set(PANE_STATE)
    if fresh_models:
        drop |= set(LEARNED_STATE)
    for name in drop & blank.keys():
        state[name] = blank[name]
    for model in state.get("_series", {}).values():
        model.threshold = config.z_threshold
        model.warmup = config.warmup_windows
        model.relearn_after = config.relearn_after_windows
        model.protect_z = config.protect_z
        model.min_learn_volume = config.min_volume
    return JourneyDetector.restore(JourneyDetector.pack_snapshot(header, state), catalog, config)


def _plain(value: object) -> object:
    return list(value) if isinstance(value, tuple) else value


def _show(value: object) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)
