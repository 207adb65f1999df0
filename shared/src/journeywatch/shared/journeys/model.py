"""Journey definition models and the lookups the services need (touchpoint → stage, alias → touchpoint)."""

from __future__ import annotations

import re
from functools import cached_property
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

Slug = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,62}$")]


class JourneyConfigError(ValueError):
    """The journey configuration is invalid; the message names the file, line/key and problem."""


class UnknownTouchpoint(LookupError):
    """An event names a touchpoint (or alias) the journey does not define."""


class Stage(BaseModel):
    """One ordered stage of a journey and the touchpoints that belong to it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Slug
    touchpoints: tuple[Slug, ...] = Field(min_length=1)


class ConversionGoal(BaseModel):
    """A goal: a session that did `from` should do `to` within the time limit."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: Slug
    from_touchpoint: Slug = Field(alias="from")
    to_touchpoint: Slug = Field(alias="to")
    within_seconds: int = Field(default=1800, gt=0, le=30 * 86400)


class AbandonmentRule(BaseModel):
    """A session that did `started_by` and none of `completed_by` within the timeout is abandoned."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Slug
    started_by: Slug
    completed_by: tuple[Slug, ...] = Field(min_length=1)
    timeout_seconds: int = Field(default=1800, gt=0, le=30 * 86400)


class Journey(BaseModel):
    """A customer journey: ordered stages of touchpoints, goals, abandonment rules and aliases."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Slug
    description: str = ""
    stages: tuple[Stage, ...] = Field(min_length=1)
    conversions: tuple[ConversionGoal, ...] = ()
    abandonment: tuple[AbandonmentRule, ...] = ()
    aliases: dict[str, Slug] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> Journey:
        seen_stages: set[str] = set()
        owner: dict[str, str] = {}
        for stage in self.stages:
            if stage.name in seen_stages:
                raise ValueError(f"stage {stage.name!r} is defined twice")
            seen_stages.add(stage.name)
            for touchpoint in stage.touchpoints:
                if touchpoint in owner:
                    raise ValueError(
                        f"touchpoint {touchpoint!r} is in both stage {owner[touchpoint]!r} "
                        f"and stage {stage.name!r}"
                    )
                owner[touchpoint] = stage.name
        for goal in self.conversions:
            for touchpoint in (goal.from_touchpoint, goal.to_touchpoint):
                if touchpoint not in owner:
                    raise ValueError(
                        f"conversion {goal.name!r} names unknown touchpoint {touchpoint!r}"
                    )
        for rule in self.abandonment:
            for touchpoint in (rule.started_by, *rule.completed_by):
                if touchpoint not in owner:
                    raise ValueError(
                        f"abandonment rule {rule.name!r} names unknown touchpoint {touchpoint!r}"
                    )
        for alias, touchpoint in self.aliases.items():
            if touchpoint not in owner:
                raise ValueError(f"alias {alias!r} maps to unknown touchpoint {touchpoint!r}")
        return self

    @cached_property
    def stage_of(self) -> dict[str, str]:
        """Touchpoint name → stage name."""
        return {tp: stage.name for stage in self.stages for tp in stage.touchpoints}

    @cached_property
    def stage_names(self) -> tuple[str, ...]:
        """Stage names in funnel order."""
        return tuple(stage.name for stage in self.stages)

    @cached_property
    def stage_index(self) -> dict[str, int]:
        """Stage name → position in the funnel (0 = first)."""
        return {name: i for i, name in enumerate(self.stage_names)}

    @cached_property
    def _alias_lookup(self) -> dict[str, str]:
        lookup = {_fold(alias): tp for alias, tp in self.aliases.items()}
        lookup.update({_fold(tp): tp for tp in self.stage_of})
        return lookup

    def resolve(self, name: str) -> str:
        """Map a touchpoint name or alias (case/space/underscore-insensitive) to a touchpoint."""
        if name in self.stage_of:
            return name
        try:
            return self._alias_lookup[_fold(name)]
        except KeyError:
            raise UnknownTouchpoint(
                f"{name!r} is neither a touchpoint of journey {self.name!r} nor one of its aliases"
            ) from None


class JourneyCatalog(BaseModel):
    """All configured journeys and the default one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default_journey: Slug
    journeys: dict[Slug, Journey] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _names_from_keys(cls, data: object) -> object:
        # The YAML maps name → definition; copy the key into each definition.
        if isinstance(data, dict) and isinstance(data.get("journeys"), dict):
            journeys = {
                key: (
                    {"name": key, **value}
                    if isinstance(value, dict) and "name" not in value
                    else value
                )
                for key, value in data["journeys"].items()
            }
            data = {**data, "journeys": journeys}
        return data

    @model_validator(mode="after")
    def _default_exists(self) -> JourneyCatalog:
        if self.default_journey not in self.journeys:
            raise ValueError(f"default_journey {self.default_journey!r} is not among the journeys")
        for key, journey in self.journeys.items():
            if journey.name != key:
                raise ValueError(f"journey key {key!r} and its name {journey.name!r} differ")
        return self

    def get(self, name: str | None) -> Journey:
        """The named journey (default when None); KeyError when it does not exist."""
        return self.journeys[name or self.default_journey]


_FOLD = re.compile(r"[\s_\-]+")


def _fold(name: str) -> str:
    return _FOLD.sub(" ", name.strip().lower())
