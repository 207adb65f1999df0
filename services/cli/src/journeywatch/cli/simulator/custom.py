"""Sessions walking any journey file: entry at the first stage, then along its funnel steps.

The e-commerce model (`model._Walk.run`) knows what a cart or a payment is; a team's own
journey only says which touchpoints follow which. Here a session enters at a touchpoint of
the first stage, sometimes does something else in the same stage, and follows the journey's
steps (configured or derived) one at a time, each completed within its horizon with a fixed
chance. Incident scenarios map onto roles, not names: `broken_add_to_cart` hits the first step,
the checkout scenarios the step before the last, the payment ones the last steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from journeywatch.shared.journeys import Journey, Step

if TYPE_CHECKING:
    from journeywatch.cli.simulator.model import _Walk

# Scenarios that only make sense in the e-commerce model (they emit its touchpoint names or
# need review/support touchpoints with sentiment).
UNSUPPORTED: Final = frozenset({"bot_surge", "negative_reviews"})
FIRST_STEP_CHANCE: Final = 0.6
LATER_STEP_CHANCE: Final = 0.7
FINAL_STEP_CHANCE: Final = 0.9
SIDE_CHANCE: Final = 0.25  # something else in the same stage before moving on
AFTER_CHANCE: Final = 0.15  # after the last step: a review, a renewal, a support ticket


@dataclass(frozen=True)
class WalkPlan:
    """What a session can do at each touchpoint of one journey, and each step's role."""

    journey: Journey
    entries: tuple[tuple[str, float], ...]
    following: dict[str, tuple[Step, ...]]
    side: dict[str, tuple[str, ...]]
    bridge: dict[str, tuple[str, ...]]  # where a step starts, from a touchpoint no step leaves
    after: tuple[str, ...]  # touchpoints of the stages after the last step (reviews, renewals)
    role: dict[tuple[str, str], str]  # "first", "middle", "before_final" or "final"

    @classmethod
    def of(cls, journey: Journey) -> WalkPlan:
        """The plan of a journey (steps as configured, else derived from stages and goals).

        >>> from journeywatch.shared.journeys import load_journeys
        >>> plan = WalkPlan.of(load_journeys().get(None))
        >>> dict(plan.entries)["landing_view"], plan.role[("payment_submitted", "purchase")]
        (3.0, 'final')
        """
        steps = journey.steps
        following: dict[str, list[Step]] = {}
        for step in steps:
            following.setdefault(step.from_touchpoint, []).append(step)
        targets = {step.to_touchpoint for step in steps}
        final = {s.to_touchpoint for s in steps if s.to_touchpoint not in following}
        role: dict[tuple[str, str], str] = {}
        for index, step in enumerate(steps):
            pair = (step.from_touchpoint, step.to_touchpoint)
            if step.to_touchpoint in final:
                role[pair] = "final"
            elif any(s.to_touchpoint in final for s in following.get(step.to_touchpoint, ())):
                role[pair] = "before_final"
            else:
                role[pair] = "first" if index == 0 else "middle"
        # Most sessions enter where the first step starts (the first touchpoint when it is
        # not in the first stage); the rest of the first stage gets some arrivals too.
        first = journey.stages[0].touchpoints
        usual = steps[0].from_touchpoint if steps and steps[0].from_touchpoint in first else None
        entries = tuple((tp, 3.0 if tp == (usual or first[0]) else 1.0) for tp in first)
        bridge = {
            tp: tuple(o for o in stage.touchpoints if o != tp and o in following)
            for stage in journey.stages
            for tp in stage.touchpoints
            if tp not in following
        }
        side = {
            tp: tuple(o for o in stage.touchpoints if o != tp and o not in targets)
            for stage in journey.stages
            for tp in stage.touchpoints
        }
        reached = max(
            (journey.stage_index[journey.stage_of[s.to_touchpoint]] for s in steps), default=0
        )
        after = tuple(
            tp
            for stage in journey.stages[reached + 1 :]
            for tp in stage.touchpoints
            if tp not in targets and tp not in following
        )
        return cls(
            journey=journey,
            after=after,
            entries=entries,
            following={k: tuple(v) for k, v in following.items()},
            side=side,
            bridge=bridge,
            role=role,
        )


def walk_journey(walk: _Walk, plan: WalkPlan) -> None:
    """Walk one session through the plan, emitting its touchpoints on `walk`."""
    from journeywatch.cli.simulator.model import _pick

    here: str = _pick(walk.rng, plan.entries)
    walk.emit(here)
    visited = {here}
    done = ""  # the role of the last step completed
    for _ in range(len(plan.following) + 1):
        options = plan.side.get(here, ())
        if options and walk.chance(SIDE_CHANCE):
            walk.wait(20, 0.7, 2.0, 600.0)
            walk.emit(walk.rng.choice(options))
        onward = [o for o in plan.bridge.get(here, ()) if o not in visited]
        if onward and walk.chance(LATER_STEP_CHANCE):
            # e.g. a landing page, then the pricing page where the funnel starts
            walk.wait(15, 0.7, 2.0, 600.0)
            here = walk.rng.choice(onward)
            visited.add(here)
            walk.emit(here)
        steps = [s for s in plan.following.get(here, ()) if s.to_touchpoint not in visited]
        if not steps:
            if done == "final" and plan.after and walk.chance(AFTER_CHANCE):
                walk.wait(600, 0.8, 30.0, 3600.0)
                walk.emit(walk.rng.choice(plan.after))
            return
        step = walk.rng.choice(steps)
        role = plan.role[(step.from_touchpoint, step.to_touchpoint)]
        effects = walk.effects()
        chance = {"first": FIRST_STEP_CHANCE, "final": FINAL_STEP_CHANCE}.get(
            role, LATER_STEP_CHANCE
        )
        if role == "first":
            chance *= effects.add_to_cart
        elif role == "before_final":
            chance *= effects.payment
        elif role == "final":
            chance *= effects.purchase
        # Completed steps mostly land well inside their horizon, as real ones do.
        horizon = float(step.horizon_seconds)
        median = max(2.0, horizon / 10) * effects.checkout_delay
        walk.wait(median, 0.7, 1.0, max(1.0, horizon * 0.9))
        if not walk.chance(min(0.98, chance)):
            return
        here, done = step.to_touchpoint, role
        visited.add(here)
        walk.emit(here)
