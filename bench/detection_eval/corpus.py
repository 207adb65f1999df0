"""The labelled journey-incident corpus: volumes, incident families, schedules and labels per seed."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final

from journeywatch.cli.simulator import SHOP_CHANNEL_MIX, Scenario, scenario
from journeywatch.shared.events import Channel

DAY: Final = 86400.0
HOUR: Final = 3600.0
MINUTE: Final = 60.0
GAP: Final = 2.5 * HOUR
"""Quiet time between one incident's end and the next one's start (each is judged on its own)."""
FIRST_MONDAY: Final = datetime(2026, 3, 2, tzinfo=UTC)
TUNING_SEEDS: Final = (1, 2, 3, 4)
HELDOUT_SEEDS: Final = (101, 102, 103, 104)
VOLUMES: Final[dict[str, int]] = {"mid": 50_000, "small": 5_000}
"""Sessions per day (mean over a week)."""

FUNNEL_LOSS: Final = ("conversion_drop", "cart_abandonment_spike", "stage_dropoff_spike")
CONVERSION_TYPES: Final = FUNNEL_LOSS


@dataclass(frozen=True)
class Family:
    """One incident family: which scenario makes it, at which two intensities, where and when,
    and what a correct detection looks like."""

    name: str
    kind: str
    """Simulator scenario kind (see journeywatch.cli.simulator.scenarios.KINDS)."""
    duration: float
    intensities: tuple[float, float]
    """(high, low); for a campaign or a bot surge, the traffic multiplier on the channel."""
    channels: dict[str, tuple[Channel | None, ...]]
    """Per volume, the channels an incident may hit (None: site-wide)."""
    hours: tuple[float, float]
    """Local start hours allowed (the incident starts in [from, to))."""
    stage: str | None
    touchpoints: tuple[str, ...]
    """Touchpoints whose occurrence the incident changes; a named step/touchpoint must end here."""
    accepted: tuple[str, ...]
    forbidden: tuple[str, ...] = ()
    """Types that are false alerts even while the incident lasts (campaign: any conversion)."""
    step: str | None = None
    """The funnel step (`from→to`) the incident breaks, for reports."""
    gradual: bool = False
    volume_touchpoint: str | None = None
    """The touchpoint counted on the incident's channel to say how much traffic it touched."""
    description: str = ""
    small: tuple[float, tuple[float, float]] | None = None
    """(duration, intensities) in the small shop, where the mid-size shop's incident would touch
    a handful of sessions (25 min of 40 % failing payments there is 3 failed payments: nothing
    can tell that from noise, so the small shop's incident lasts longer or hits harder)."""

    def duration_for(self, volume: str) -> float:
        """Duration at a volume."""
        return self.small[0] if volume == "small" and self.small else self.duration

    def intensities_for(self, volume: str) -> tuple[float, float]:
        """(high, low) intensity at a volume."""
        return self.small[1] if volume == "small" and self.small else self.intensities


WEB_MOBILE: Final = (Channel.WEB, Channel.MOBILE)
ALL_DAY: Final = (0.0, 24.0)
DAYTIME: Final = (7.0, 22.0)

FAMILIES: Final[tuple[Family, ...]] = (
    Family(
        "payment_failure", "payment_outage", 25 * MINUTE, (0.6, 0.4),
        {"mid": WEB_MOBILE, "small": WEB_MOBILE}, DAYTIME, "purchase", ("purchase",),
        FUNNEL_LOSS, step="payment_submitted→purchase", volume_touchpoint="payment_submitted",
        description="a share of one channel's payments fail (60 % / 40 %) for 25 min",
        small=(90 * MINUTE, (0.8, 0.6)),
    ),
    Family(
        "step_outage", "checkout_outage|broken_add_to_cart", 15 * MINUTE, (0.5, 0.35),
        {"mid": (None,), "small": (None,)}, (8.0, 22.0), None, (),
        (*FUNNEL_LOSS, "traffic_drop"),
        description="site-wide, one funnel step loses 50 % / 35 % of its conversion for 15 min",
        small=(60 * MINUTE, (0.5, 0.35)),
    ),
    Family(
        "night_payment_failure", "payment_outage", 45 * MINUTE, (1.0, 0.7),
        {"mid": (Channel.MOBILE,), "small": (Channel.WEB,)}, (2.0, 4.0), "purchase",
        ("purchase",), FUNNEL_LOSS, step="payment_submitted→purchase",
        volume_touchpoint="payment_submitted",
        description="night, 100 % / 70 % of a channel's payments fail for 45 min",
        small=(120 * MINUTE, (1.0, 0.8)),
    ),
    Family(
        "degradation", "checkout_degradation", 3 * HOUR, (0.33, 0.22),
        {"mid": (None,), "small": (None,)}, (6.0, 18.0), "purchase", ("payment_submitted",),
        FUNNEL_LOSS, step="checkout_started→payment_submitted", gradual=True,
        volume_touchpoint="checkout_started",
        description="checkout→payment falls in six steps over 3 h to 67 % / 78 % of normal",
        small=(3 * HOUR, (0.4, 0.3)),
    ),
    Family(
        "bot_surge", "bot_surge", 30 * MINUTE, (8.0, 3.0),
        {"mid": WEB_MOBILE, "small": WEB_MOBILE}, ALL_DAY, "consideration",
        ("product_view", "landing_view"), ("traffic_surge", "bot_traffic", "bot_surge"),
        volume_touchpoint="product_view",
        description="bots multiply one channel's product views ×8 / ×3 for 30 min, never carting",
    ),
    Family(
        "tracking_stop", "tracking_outage", 45 * MINUTE, (1.0, 0.7),
        {"mid": (Channel.WEB, Channel.MOBILE, Channel.EMAIL, Channel.STORE), "small": WEB_MOBILE},
        DAYTIME, None, (), ("data_quality",),
        description="all / 70 % of one channel's events vanish for 45 min",
    ),
    Family(
        "broken_touchpoint", "broken_add_to_cart", 40 * MINUTE, (0.97, 0.75),
        {"mid": WEB_MOBILE, "small": WEB_MOBILE}, DAYTIME, "consideration", ("add_to_cart",),
        (*FUNNEL_LOSS, "traffic_drop"), step="product_view→add_to_cart",
        volume_touchpoint="product_view",
        description="add_to_cart does nothing for 97 % / 75 % of one channel's clicks for 40 min",
    ),
    Family(
        "sentiment_wave", "negative_reviews", 60 * MINUTE, (1.0, 0.5),
        {"mid": (None,), "small": (None,)}, (8.0, 21.0), "post_purchase",
        ("review_submitted", "support_contact"), ("sentiment_drop",),
        volume_touchpoint="review_submitted",
        description="unhappy customers: reviews ×4, sentiment −1.1 / −0.55, for 60 min",
    ),
    Family(
        "campaign", "marketing_campaign", 2 * HOUR, (4.0, 2.5),
        {"mid": (Channel.EMAIL, Channel.SOCIAL), "small": (Channel.EMAIL, Channel.SOCIAL)},
        (7.0, 19.0), "awareness", ("email_open", "social_click", "landing_view"),
        ("traffic_surge",), forbidden=CONVERSION_TYPES,
        description="a campaign multiplies one channel's sessions ×4 / ×2.5 for 2 h, converting normally",
    ),
)  # fmt: skip
FAMILY_NAMES: Final = tuple(f.name for f in FAMILIES)
_FAMILY: Final = {f.name: f for f in FAMILIES}

# What each site-wide step-outage variant breaks: (kind, stage, touchpoints, counted, step).
_STEP_VARIANTS: Final = (
    ("checkout_outage", "purchase", ("payment_submitted",), "shipping_info_entered",
     "checkout_started→payment_submitted"),
    ("broken_add_to_cart", "consideration", ("add_to_cart",), "product_view",
     "product_view→add_to_cart"),
)  # fmt: skip


@dataclass(frozen=True)
class Incident:
    """The label of one injected incident (epoch seconds, event time)."""

    id: str
    family: str
    level: str
    """"high" or "low" intensity."""
    intensity: float
    start: float
    end: float
    channel: str | None
    stage: str | None
    touchpoints: tuple[str, ...]
    accepted: tuple[str, ...]
    forbidden: tuple[str, ...] = ()
    step: str | None = None
    """The funnel step it breaks (`from→to`), when it breaks one."""
    gradual: bool = False
    volume_touchpoint: str | None = None
    scenario: Scenario | None = field(default=None, compare=False, repr=False)

    def describe(self) -> str:
        """`family/level channel HH:MM+duration` for reports."""
        begin = datetime.fromtimestamp(self.start, UTC)
        where = self.channel or "all"
        minutes = round((self.end - self.start) / 60)
        return f"{self.family}/{self.level} {where} {begin:%a %H:%M}+{minutes}m"


@dataclass(frozen=True)
class Run:
    """One simulated multi-day stream: what to generate and the labels to score it against."""

    volume: str
    seed: int
    start: float
    days: int
    sessions_per_day: int
    incidents: tuple[Incident, ...]
    clean_days: tuple[int, ...]
    """Day numbers (0 = history) with no incident at all."""
    length: float | None = None
    """Seconds of stream when it is not `days` whole days (a compact run, see compact.py)."""
    history: float = DAY
    """Seconds of history at the start that are not scored."""

    @property
    def end(self) -> float:
        """End of the stream (epoch seconds)."""
        return self.start + (self.days * DAY if self.length is None else self.length)

    @property
    def scored_start(self) -> float:
        """The history (the first day) is not scored: nothing before this is."""
        return self.start + self.history

    @property
    def scenarios(self) -> tuple[Scenario, ...]:
        """Simulator scenarios of the incidents."""
        return tuple(i.scenario for i in self.incidents if i.scenario is not None)


def _build(
    family: Family,
    volume: str,
    seed: int,
    rng: random.Random,
    run_start: float,
    offset: float,
    level: str | None = None,
) -> Incident:
    if level is None:
        level = "high" if (seed + FAMILIES.index(family)) % 2 == 0 else "low"
    intensity = family.intensities_for(volume)[0 if level == "high" else 1]
    duration = family.duration_for(volume)
    channel = rng.choice(family.channels[volume])
    kind, stage, touchpoints = family.kind, family.stage, family.touchpoints
    volume_tp, step = family.volume_touchpoint, family.step
    if family.name == "step_outage":
        variant = _STEP_VARIANTS[rng.randrange(len(_STEP_VARIANTS))]
        kind, stage, touchpoints, volume_tp, step = variant
    scenario_intensity = intensity
    if family.kind == "marketing_campaign" and channel is not None:
        # The simulator's campaign intensity is extra sessions as a fraction of all sessions.
        scenario_intensity = (intensity - 1.0) * SHOP_CHANNEL_MIX[channel]
    if family.name == "campaign" and channel is not None:
        entry = "email_open" if channel is Channel.EMAIL else "social_click"
        touchpoints = (entry, "landing_view")
        volume_tp = entry
    made = scenario(kind, offset, duration, channel, scenario_intensity)
    return Incident(
        id=f"{volume}-s{seed}-{family.name}",
        family=family.name,
        level=level,
        intensity=intensity,
        start=run_start + offset,
        end=run_start + offset + duration,
        channel=channel.value if channel is not None else None,
        stage=stage,
        touchpoints=touchpoints,
        step=step,
        accepted=family.accepted,
        forbidden=family.forbidden,
        gradual=family.gradual,
        volume_touchpoint=volume_tp,
        scenario=made,
    )


def _place(
    families: list[Family], rng: random.Random, begin: float, end: float, volume: str
) -> dict[str, float] | None:
    """Start times (epoch) for every family in [begin, end], ≥ GAP apart; None if stuck."""
    placed: list[tuple[float, float]] = []
    starts: dict[str, float] = {}
    # The most constrained first: long ones and the night one.
    order = sorted(
        families, key=lambda f: (f.hours[1] - f.hours[0]) * 3600 - f.duration_for(volume)
    )
    for family in order:
        for _ in range(400):
            day = rng.randrange(int(begin // DAY), int(end // DAY) + 1)
            hour = rng.uniform(*family.hours)
            start = day * DAY + hour * HOUR
            stop = start + family.duration_for(volume)
            if start < begin or stop > end:
                continue
            if all(stop + GAP <= a or start >= b + GAP for a, b in placed):
                placed.append((start, stop))
                starts[family.name] = start
                break
        else:
            return None
    return starts


def build_run(volume: str, seed: int, days: int = 4, families: tuple[str, ...] = ()) -> Run:
    """The stream and labels of one (volume, seed): day 0 history, the last day clean (when
    `days` ≥ 4), incidents ≥ GAP apart on the days between, channel and time varying per seed.

    >>> run = build_run("mid", 101)
    >>> len(run.incidents), run.clean_days, run.days
    (9, (3,), 4)
    >>> run == build_run("mid", 101)
    True
    """
    if volume not in VOLUMES:
        raise ValueError(f"unknown volume {volume!r}; known: {', '.join(VOLUMES)}")
    if days < 2:
        raise ValueError("days must be at least 2 (one history day, one scored day)")
    rng = random.Random(f"detection-eval:{volume}:{seed}")
    start = (FIRST_MONDAY + timedelta(days=seed % 7)).timestamp()
    clean = (days - 1,) if days >= 4 else ()
    incident_days = days - 1 - len(clean)
    wanted = [f for f in FAMILIES if not families or f.name in families]
    # Fewer days than the default: keep as many families as fit, a different subset per seed.
    rng.shuffle(wanted)
    while wanted:
        begin = start + DAY + 30 * MINUTE
        end = start + (1 + incident_days) * DAY - HOUR
        offsets = None
        for _ in range(50):
            offsets = _place(wanted, rng, begin, end, volume)
            if offsets is not None:
                break
        if offsets is not None:
            break
        wanted.pop()
    else:
        offsets = {}
    incidents = [
        _build(_FAMILY[name], volume, seed, rng, start, at - start) for name, at in offsets.items()
    ]
    incidents.sort(key=lambda i: i.start)
    return Run(
        volume=volume,
        seed=seed,
        start=start,
        days=days,
        sessions_per_day=VOLUMES[volume],
        incidents=tuple(incidents),
        clean_days=clean,
    )
