"""Journey definition models and the lookups the services need (touchpoint → stage, alias → touchpoint)."""

from __future__ import annotations

import re
from functools import cached_property
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

Slug = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,62}$")]


class JourneyConfigError(ValueError):
    """The journey configuration is invalid; the message names the file, line/key and problem."""


class JourneyFieldError(ValueError):
    """A consistency problem at a known place: `loc` is the path of YAML keys below the model."""

    def __init__(self, message: str, *loc: int | str):
        super().__init__(message)
        self.loc = loc


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


class Step(BaseModel):
    """A funnel step: a session whose first `from` is at t completes it with a `to` by t + horizon."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    from_touchpoint: Slug = Field(alias="from")
    to_touchpoint: Slug = Field(alias="to")
    horizon_seconds: int = Field(default=1800, gt=0, le=86400)

    @property
    def name(self) -> str:
        """``from→to``, how anomalies and docs name the step."""
        return f"{self.from_touchpoint}→{self.to_touchpoint}"


_DEFAULT_STEP_HORIZON = 1800


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
    steps_: tuple[Step, ...] | None = Field(default=None, alias="steps")
    """The funnel steps; None (absent) derives them from the stages and conversions (``steps``)."""
    aliases: dict[str, Slug] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> Journey:
        # Each problem names the key it is about, so the loader can point at its line.
        seen_stages: set[str] = set()
        owner: dict[str, str] = {}
        for i, stage in enumerate(self.stages):
            if stage.name in seen_stages:
                raise JourneyFieldError(
                    f"stage {stage.name!r} is defined twice", "stages", i, "name"
                )
            seen_stages.add(stage.name)
            for j, touchpoint in enumerate(stage.touchpoints):
                if touchpoint in owner:
                    raise JourneyFieldError(
                        f"touchpoint {touchpoint!r} is in both stage {owner[touchpoint]!r} "
                        f"and stage {stage.name!r}",
                        "stages",
                        i,
                        "touchpoints",
                        j,
                    )
                owner[touchpoint] = stage.name
        for i, goal in enumerate(self.conversions):
            for key, touchpoint in (("from", goal.from_touchpoint), ("to", goal.to_touchpoint)):
                if touchpoint not in owner:
                    raise JourneyFieldError(
                        f"conversion {goal.name!r} names unknown touchpoint {touchpoint!r}",
                        "conversions",
                        i,
                        key,
                    )
        for i, rule in enumerate(self.abandonment):
            if rule.started_by not in owner:
                raise JourneyFieldError(
                    f"abandonment rule {rule.name!r} names unknown touchpoint {rule.started_by!r}",
                    "abandonment",
                    i,
                    "started_by",
                )
            for j, touchpoint in enumerate(rule.completed_by):
                if touchpoint not in owner:
                    raise JourneyFieldError(
                        f"abandonment rule {rule.name!r} names unknown touchpoint {touchpoint!r}",
                        "abandonment",
                        i,
                        "completed_by",
                        j,
                    )
        for alias, touchpoint in self.aliases.items():
            if touchpoint not in owner:
                raise JourneyFieldError(
                    f"alias {alias!r} maps to unknown touchpoint {touchpoint!r}", "aliases", alias
                )
        seen_steps: set[tuple[str, str]] = set()
        for i, step in enumerate(self.steps_ or ()):
            for key, touchpoint in (("from", step.from_touchpoint), ("to", step.to_touchpoint)):
                if touchpoint not in owner:
                    raise JourneyFieldError(
                        f"steps[{i}] ({step.name}) names unknown touchpoint {touchpoint!r}",
                        "steps",
                        i,
                        key,
                    )
            if step.from_touchpoint == step.to_touchpoint:
                raise JourneyFieldError(
                    f"steps[{i}] goes from {step.from_touchpoint!r} to itself", "steps", i, "to"
                )
            pair = (step.from_touchpoint, step.to_touchpoint)
            if pair in seen_steps:
                raise JourneyFieldError(f"steps[{i}] ({step.name}) is defined twice", "steps", i)
            seen_steps.add(pair)
            order = self.stage_index
            if order[owner[step.to_touchpoint]] < order[owner[step.from_touchpoint]]:
                raise JourneyFieldError(
                    f"steps[{i}] ({step.name}) goes backwards: stage {owner[step.to_touchpoint]!r} "
                    f"comes before {owner[step.from_touchpoint]!r}",
                    "steps",
                    i,
                    "to",
                )
        return self

    @cached_property
    def steps(self) -> tuple[Step, ...]:
        """The funnel steps: as configured, else derived.

        Derived: each stage's first touchpoint to the next stage's first touchpoint (30 min), and
        every conversion goal (its own time limit) that is not already such a pair.
        """
        if self.steps_ is not None:
            return self.steps_
        derived: dict[tuple[str, str], Step] = {}
        for stage, following in zip(self.stages, self.stages[1:], strict=False):
            pair = (stage.touchpoints[0], following.touchpoints[0])
            derived[pair] = Step(
                from_touchpoint=pair[0],
                to_touchpoint=pair[1],
                horizon_seconds=_DEFAULT_STEP_HORIZON,
            )
        for goal in self.conversions:
            pair = (goal.from_touchpoint, goal.to_touchpoint)
            if pair not in derived:
                derived[pair] = Step(
                    from_touchpoint=pair[0],
                    to_touchpoint=pair[1],
                    horizon_seconds=min(goal.within_seconds, 86400),
                )
        return tuple(derived.values())

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
            known = ", ".join(self.journeys)
            raise JourneyFieldError(
                f"default_journey {self.default_journey!r} is not among the journeys ({known})",
                "default_journey",
            )
        for key, journey in self.journeys.items():
            if journey.name != key:
                raise JourneyFieldError(
                    f"journey key {key!r} and its name {journey.name!r} differ",
                    "journeys",
                    key,
                    "name",
                )
        return self

    def get(self, name: str | None) -> Journey:
        """The named journey (default when None); KeyError when it does not exist."""
        return self.journeys[name or self.default_journey]


_FOLD = re.compile(r"[\s_\-]+")


def _fold(name: str) -> str:
    return _FOLD.sub(" ", name.strip().lower())
