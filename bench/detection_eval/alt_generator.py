"""A second, independent traffic generator for the incident corpus: other arrivals, funnels, timings and incident shapes.

The corpus (corpus.py) is built on the project's simulator, so every detector change tuned on
it risks fitting that one generator's quirks. This module writes the same stream format (the
``Compact`` tuples of runner.stream, in event-time order) and the same ``Incident`` labels,
from assumptions chosen to differ from the simulator's on purpose:

- **Arrivals.** A non-homogeneous Poisson process per channel with a piecewise-constant rate
  per minute: two peaks (≈ 10:30 and ≈ 20:00) with a lunch dip, a deep night (≈ 8 % of the
  evening peak), weekends lower (the simulator's Saturday is its highest day); a gamma day
  multiplier (shape 80: ≈ 11 % day-to-day), an Ornstein–Uhlenbeck log level for all traffic
  (sd 7 %, 40 min) and one per channel (sd 5 %, 60 min).
- **Channels.** mobile 40 %, web 38 %, email 7 %, social 6 %, store 5 %, call_center 4 %; a
  session stays on its acquisition channel (email and social sessions are attributed to email
  and social to the end, where the simulator moves them to web or mobile).
- **Sessions.** Per-channel funnel rates; saved-cart entries (no landing, no browse), back
  navigation (list views between product views), revisits, buy-now (no cart view), saved
  addresses (no shipping step); log-normal think times with heavier tails; reviews and support
  contacts up to hours after the order; ratings from a J-shaped 1–5 distribution; order
  values log-normal.
- **Incidents.** Random durations and intensities inside each family's range (the simulator's
  are fixed per level), a linear degradation ramp (not steps), few bots with many fast views,
  an e-mail blast that decays, a third step-outage variant (cart → checkout).

Deterministic per (volume, seed): ``build_run`` draws the labels, ``generate`` the events.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import random
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from bench.detection_eval.corpus import (
    _FAMILY,
    DAY,
    FAMILIES,
    FIRST_MONDAY,
    GAP,
    HOUR,
    MINUTE,
    VOLUMES,
    Incident,
    Run,
)
from journeywatch.shared.events import Channel

Compact = tuple[float, str, str, str, str, str, str | None, float | None, float | None, Any]

WEB, MOBILE, EMAIL, SOCIAL, STORE, CALL = (
    Channel.WEB.value,
    Channel.MOBILE.value,
    Channel.EMAIL.value,
    Channel.SOCIAL.value,
    Channel.STORE.value,
    Channel.CALL_CENTER.value,
)
CHANNEL_SHARES: Final[dict[str, float]] = {
    MOBILE: 0.40, WEB: 0.38, EMAIL: 0.07, SOCIAL: 0.06, STORE: 0.05, CALL: 0.04,
}  # fmt: skip
"""Sessions per acquisition channel (the simulator's shop: web 45 %, mobile 33 %, social 2 %)."""
DAY_MULTIPLIER_SHAPE: Final = 80.0
"""Gamma shape of the per-day traffic multiplier (mean 1, cv = 1/√80 ≈ 11 %)."""
LEVEL_SD, LEVEL_TAU = 0.07, 40 * MINUTE
"""All-channel log-level wander beyond Poisson (Ornstein–Uhlenbeck: stationary sd, time constant)."""
CHANNEL_SD, CHANNEL_TAU = 0.05, 60 * MINUTE
"""Each channel's own log-level wander."""
RETURNING: Final = 0.28
CUSTOMERS: Final = 30_000
_WEEKLY: Final = (1.05, 1.03, 1.02, 1.0, 0.96, 0.82, 0.88)  # Monday … Sunday


@dataclass(frozen=True)
class ChannelFunnel:
    """Per-channel behaviour of a session (before incident effects)."""

    bounce: float
    """Leaves after the entry page (new customers; returning ones always browse)."""
    search: float
    more: float
    """After a product view, views another (geometric)."""
    add_to_cart: float
    """Per product view."""
    checkout: float
    payment: float
    ad: float = 0.0
    click: float = 1.0
    """Email: opens that are followed to the shop."""


FUNNELS: Final[dict[str, ChannelFunnel]] = {
    WEB: ChannelFunnel(0.38, 0.35, 0.62, 0.075, 0.48, 0.85, ad=0.25),
    MOBILE: ChannelFunnel(0.30, 0.55, 0.58, 0.095, 0.42, 0.82, ad=0.15),
    EMAIL: ChannelFunnel(0.35, 0.30, 0.50, 0.11, 0.50, 0.86, click=0.38),
    SOCIAL: ChannelFunnel(0.55, 0.20, 0.45, 0.05, 0.35, 0.80),
}
SHIPPING: Final = 0.90
PURCHASE: Final = 0.965
"""Payments that go through without an incident (the rest fail; some are retried)."""
REVIEW, SUPPORT, REFUND, CANCEL = 0.06, 0.025, 0.015, 0.008
RATINGS: Final = ((5, 0.52), (4, 0.22), (3, 0.09), (2, 0.06), (1, 0.11))
ANGRY_RATINGS: Final = ((1, 0.55), (2, 0.25), (3, 0.12), (4, 0.05), (5, 0.03))
DEVICES: Final[dict[str, tuple[tuple[str, float], ...]]] = {
    WEB: (("desktop", 0.58), ("mobile_web", 0.35), ("tablet", 0.07)),
    MOBILE: (("ios", 0.5), ("android", 0.5)),
    EMAIL: (("desktop", 0.35), ("mobile_web", 0.4), ("ios", 0.25)),
    SOCIAL: (("ios", 0.5), ("android", 0.35), ("mobile_web", 0.15)),
    STORE: (("pos", 1.0),),
    CALL: (("phone", 1.0),),
}
COUNTRIES: Final = (("DE", 0.3), ("US", 0.2), ("FR", 0.15), ("GB", 0.12), ("AT", 0.08),
                    ("CH", 0.06), ("NL", 0.05), ("PL", 0.04))  # fmt: skip
BOT_VIEWS: Final = (30, 150)
"""Product views per bot session (uniform): few bots, many fast views."""


def _raw_daily(hour: float) -> float:
    def bump(center: float, width: float) -> float:
        distance = min(abs(hour - center), 24 - abs(hour - center))
        return math.exp(-0.5 * (distance / width) ** 2)

    return 0.09 + 0.9 * bump(10.5, 1.8) + 0.5 * bump(15.5, 2.0) + 1.0 * bump(20.0, 2.2)


_DAILY_MEAN: Final = sum(_raw_daily(m / 60) for m in range(1440)) / 1440
_WEEKLY_MEAN: Final = sum(_WEEKLY) / 7


def daily_factor(hour: float) -> float:
    """Traffic at an hour of day relative to the daily mean (mean over a day = 1).

    >>> round(sum(daily_factor(m / 60) for m in range(1440)) / 1440, 6)
    1.0
    >>> daily_factor(13.0) < daily_factor(10.5) and daily_factor(3.5) < 0.2
    True
    """
    return _raw_daily(hour % 24) / _DAILY_MEAN


def weekly_factor(weekday: int) -> float:
    """Traffic on a weekday (0 = Monday) relative to the weekly mean; weekends are quieter."""
    return _WEEKLY[weekday % 7] / _WEEKLY_MEAN


# -- labels ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AltFamily:
    """Durations, intensities, channels and hours of one family in the second generator."""

    name: str
    minutes: tuple[float, float]
    """Duration range in the mid-size shop (uniform)."""
    high: tuple[float, float]
    low: tuple[float, float]
    """Intensity ranges per level (the meaning is the corpus's: lost share, failing share,
    traffic multiplier)."""
    channels: dict[str, tuple[str | None, ...]]
    hours: tuple[float, float]
    small_scale: float = 1.0
    """Durations × this in the small shop (a 20-min incident there touches a handful of sessions)."""


WM: Final = (WEB, MOBILE)
ALT_FAMILIES: Final[dict[str, AltFamily]] = {
    f.name: f
    for f in (
        AltFamily("payment_failure", (20, 60), (0.6, 0.8), (0.4, 0.6), {"mid": WM, "small": WM},
                  (8.0, 22.0), 2.0),
        AltFamily("step_outage", (10, 30), (0.55, 0.7), (0.4, 0.55),
                  {"mid": (None,), "small": (None,)}, (9.0, 21.0), 3.0),
        AltFamily("night_payment_failure", (30, 90), (0.9, 1.0), (0.7, 0.9),
                  {"mid": WM, "small": WM}, (1.0, 4.5), 1.5),
        AltFamily("degradation", (60, 180), (0.35, 0.45), (0.25, 0.35),
                  {"mid": (None,), "small": (None,)}, (6.0, 17.0)),
        AltFamily("bot_surge", (20, 60), (6.0, 10.0), (4.0, 6.0), {"mid": WM, "small": WM},
                  (0.0, 24.0)),
        AltFamily("tracking_stop", (20, 60), (1.0, 1.0), (0.8, 0.9),
                  {"mid": (WEB, MOBILE, EMAIL, STORE), "small": WM}, (7.0, 22.0)),
        AltFamily("broken_touchpoint", (25, 60), (0.99, 1.0), (0.95, 0.99),
                  {"mid": WM, "small": WM}, (8.0, 22.0), 2.0),
        AltFamily("sentiment_wave", (45, 120), (0.8, 1.0), (0.4, 0.6),
                  {"mid": (None,), "small": (None,)}, (9.0, 21.0)),
        AltFamily("campaign", (60, 180), (3.5, 5.0), (2.0, 3.5),
                  {"mid": (EMAIL, SOCIAL), "small": (EMAIL, SOCIAL)}, (7.0, 19.0)),
    )
}  # fmt: skip
_STEP_VARIANTS: Final = (
    ("purchase", ("payment_submitted",), "shipping_info_entered",
     "checkout_started→payment_submitted"),
    ("consideration", ("add_to_cart",), "product_view", "product_view→add_to_cart"),
    ("purchase", ("checkout_started",), "add_to_cart", "add_to_cart→checkout_started"),
)  # fmt: skip
"""(stage, touchpoints, volume touchpoint, step) of the site-wide step outages; the third is
not in the simulator's corpus."""


def _duration(spec: AltFamily, volume: str, rng: random.Random) -> float:
    minutes = rng.uniform(*spec.minutes) * (spec.small_scale if volume == "small" else 1.0)
    return round(min(minutes, 180.0)) * MINUTE


def _incident(
    spec: AltFamily, volume: str, seed: int, rng: random.Random, start: float, duration: float
) -> Incident:
    family = _FAMILY[spec.name]
    level = "high" if (seed + FAMILIES.index(family)) % 2 == 0 else "low"
    intensity = round(rng.uniform(*(spec.high if level == "high" else spec.low)), 3)
    channel = rng.choice(spec.channels[volume])
    stage, touchpoints = family.stage, family.touchpoints
    volume_tp, step = family.volume_touchpoint, family.step
    if spec.name == "step_outage":
        stage, touchpoints, volume_tp, step = _STEP_VARIANTS[rng.randrange(len(_STEP_VARIANTS))]
    if spec.name == "campaign":
        entry = "email_open" if channel == EMAIL else "social_click"
        touchpoints, volume_tp = (entry, "landing_view"), entry
    return Incident(
        id=f"alt-{volume}-s{seed}-{spec.name}",
        family=spec.name,
        level=level,
        intensity=intensity,
        start=start,
        end=start + duration,
        channel=channel,
        stage=stage,
        touchpoints=touchpoints,
        step=step,
        accepted=family.accepted,
        forbidden=family.forbidden,
        gradual=family.gradual,
        volume_touchpoint=volume_tp,
    )


def build_run(volume: str, seed: int, days: int = 4, families: tuple[str, ...] = ()) -> Run:
    """Labels of one (volume, seed) of the second generator: day 0 history, the last day clean
    (when `days` ≥ 4), incidents ≥ GAP apart on the days between, each with its own duration
    and intensity drawn from its family's range.

    >>> run = build_run("mid", 101)
    >>> len(run.incidents), run.clean_days, run.days, run == build_run("mid", 101)
    (9, (3,), 4, True)
    >>> sorted({i.family for i in run.incidents}) == sorted(ALT_FAMILIES)
    True
    """
    if volume not in VOLUMES:
        raise ValueError(f"unknown volume {volume!r}; known: {', '.join(VOLUMES)}")
    if days < 2:
        raise ValueError("days must be at least 2 (one history day, one scored day)")
    rng = random.Random(f"alt-eval:{volume}:{seed}")
    # Another weekday than the simulator's corpus for the same seed.
    start = (FIRST_MONDAY + timedelta(days=(3 * seed + 2) % 7)).timestamp()
    clean = (days - 1,) if days >= 4 else ()
    begin = start + DAY + 30 * MINUTE
    end = start + (days - len(clean)) * DAY - HOUR
    wanted = [ALT_FAMILIES[f.name] for f in FAMILIES if not families or f.name in families]
    durations = {spec.name: _duration(spec, volume, rng) for spec in wanted}
    rng.shuffle(wanted)
    starts: dict[str, float] = {}
    while wanted:
        for _ in range(50):
            placed = _place(wanted, durations, rng, begin, end)
            if placed is not None:
                starts = placed
                break
        else:
            wanted.pop()
            continue
        break
    incidents = sorted(
        (
            _incident(ALT_FAMILIES[name], volume, seed, rng, at, durations[name])
            for name, at in sorted(starts.items())
        ),
        key=lambda i: i.start,
    )
    return Run(
        volume=volume,
        seed=seed,
        start=start,
        days=days,
        sessions_per_day=VOLUMES[volume],
        incidents=tuple(incidents),
        clean_days=clean,
    )


def _place(
    specs: list[AltFamily],
    durations: dict[str, float],
    rng: random.Random,
    begin: float,
    end: float,
) -> dict[str, float] | None:
    """Start times for every family in [begin, end], ≥ GAP apart; None if stuck."""
    placed: list[tuple[float, float]] = []
    starts: dict[str, float] = {}
    order = sorted(specs, key=lambda s: (s.hours[1] - s.hours[0]) * HOUR - durations[s.name])
    for spec in order:
        for _ in range(400):
            day = rng.randrange(int(begin // DAY), int(end // DAY) + 1)
            at = day * DAY + round(rng.uniform(*spec.hours) * 60) * MINUTE
            stop = at + durations[spec.name]
            if at < begin or stop > end:
                continue
            if all(stop + GAP <= a or at >= b + GAP for a, b in placed):
                placed.append((at, stop))
                starts[spec.name] = at
                break
        else:
            return None
    return starts


# -- traffic -----------------------------------------------------------------------------------


def _pick(rng: random.Random, weighted: tuple[tuple[Any, float], ...]) -> Any:
    roll = rng.random() * sum(w for _, w in weighted)
    for item, weight in weighted:
        roll -= weight
        if roll < 0:
            return item
    return weighted[-1][0]


def _ln(rng: random.Random, median: float, sigma: float, low: float, high: float) -> float:
    """A log-normal duration (seconds), clipped."""
    return min(high, max(low, rng.lognormvariate(math.log(median), sigma)))


class _Effects:
    """What the run's incidents do at a time on a channel (multipliers and probabilities)."""

    def __init__(self, incidents: tuple[Incident, ...]):
        self.incidents = incidents

    def _active(self, family: str, t: float, channel: str | None) -> Iterator[Incident]:
        for inc in self.incidents:
            if (
                inc.family == family
                and inc.start <= t < inc.end
                and (inc.channel is None or channel is None or inc.channel == channel)
            ):
                yield inc

    def add_to_cart(self, t: float, channel: str) -> float:
        """Multiplier of the add-to-cart chance per product view."""
        f = 1.0
        for inc in self._active("step_outage", t, None):
            if inc.step == "product_view→add_to_cart":
                f *= 1.0 - inc.intensity
        for inc in self._active("broken_touchpoint", t, channel):
            f *= 1.0 - inc.intensity
        return f

    def checkout(self, t: float) -> float:
        """Multiplier of the cart → checkout chance."""
        f = 1.0
        for inc in self._active("step_outage", t, None):
            if inc.step == "add_to_cart→checkout_started":
                f *= 1.0 - inc.intensity
        return f

    def payment(self, t: float) -> float:
        """Multiplier of the checkout → payment chance (outage, or a linear degradation)."""
        f = 1.0
        for inc in self._active("step_outage", t, None):
            if inc.step == "checkout_started→payment_submitted":
                f *= 1.0 - inc.intensity
        for inc in self._active("degradation", t, None):
            f *= 1.0 - inc.intensity * (t - inc.start) / (inc.end - inc.start)
        return f

    def payment_failing(self, t: float, channel: str) -> float:
        """Chance that a payment on the channel fails because of an incident."""
        p = 0.0
        for family in ("payment_failure", "night_payment_failure"):
            for inc in self._active(family, t, channel):
                p = max(p, inc.intensity)
        return p

    def angry(self, t: float) -> float:
        """Chance that a review or support contact written now is from the unhappy wave."""
        return max((inc.intensity for inc in self._active("sentiment_wave", t, None)), default=0.0)

    def lost(self, t: float, channel: str) -> float:
        """Share of the channel's events that tracking loses now."""
        return max((i.intensity for i in self._active("tracking_stop", t, channel)), default=0.0)

    def campaign(self, t: float, channel: str) -> float:
        """Traffic multiplier of the channel now minus 1: a social campaign ramps up in 10 min
        and holds; an e-mail blast peaks at once and decays (to ≈ 30 % of its excess at the end)."""
        extra = 0.0
        for inc in self._active("campaign", t, channel):
            age = t - inc.start
            if channel == EMAIL:
                shape = min(1.0, age / (5 * MINUTE)) * math.exp(-1.2 * age / (inc.end - inc.start))
            else:
                shape = min(1.0, age / (10 * MINUTE))
            extra += (inc.intensity - 1.0) * shape
        return extra

    def bots(self, t: float, channel: str) -> float:
        """Product views × this minus 1 from bots on the channel now."""
        return sum(inc.intensity - 1.0 for inc in self._active("bot_surge", t, channel))


Raw = tuple[float, str, str, str, str | None, float | None, float | None, dict[str, Any]]
"""(t, touchpoint, session, channel, customer, sentiment, value, properties) before ids."""


class AltGenerator:
    """The second generator's event stream for one run (see the module docstring).

    >>> run = build_run("small", 1, days=2)
    >>> gen = AltGenerator(run, "ecommerce", end=run.start + 2 * HOUR)
    >>> events = list(gen.events())
    >>> all(a[0] <= b[0] for a, b in zip(events, events[1:])), events[0][2]
    (True, 'ecommerce')
    """

    def __init__(
        self,
        run: Run,
        journey: str,
        *,
        end: float | None = None,
        noise: bool = True,
    ):
        self.run = run
        self.journey = journey
        self.start = run.start
        self.end = run.end if end is None else min(end, run.end)
        self.fx = _Effects(run.incidents)
        self.noise = noise
        self.seed = int.from_bytes(
            hashlib.sha256(f"alt:{run.volume}:{run.seed}".encode()).digest()[:8], "little"
        )
        self.tag = f"{self.seed:016x}"[:8]
        self._levels = self._rates()
        self._means = _session_means()

    # -- rates

    def _rates(self) -> dict[str, list[float]]:
        """Sessions per second per channel for each minute of the run (before incidents)."""
        rng = random.Random(self.seed ^ 0x5EED)
        minutes = math.ceil((self.end - self.start) / MINUTE) + 1
        base = self.run.sessions_per_day / DAY
        day_mult: dict[int, float] = {}
        phi_all = math.exp(-MINUTE / LEVEL_TAU)
        phi_ch = math.exp(-MINUTE / CHANNEL_TAU)
        level = rng.gauss(0.0, LEVEL_SD) if self.noise else 0.0
        channel_level = {
            c: rng.gauss(0.0, CHANNEL_SD) if self.noise else 0.0 for c in CHANNEL_SHARES
        }
        rates: dict[str, list[float]] = {c: [] for c in CHANNEL_SHARES}
        for m in range(minutes):
            t = self.start + m * MINUTE
            day = int(t // DAY)
            if day not in day_mult:
                shape = DAY_MULTIPLIER_SHAPE
                day_mult[day] = rng.gammavariate(shape, 1.0 / shape) if self.noise else 1.0
            at = datetime.fromtimestamp(t, UTC)
            total = (
                base
                * daily_factor(at.hour + at.minute / 60)
                * weekly_factor(at.weekday())
                * day_mult[day]
            )
            if self.noise:
                level = phi_all * level + LEVEL_SD * math.sqrt(1 - phi_all**2) * rng.gauss(0, 1)
                total *= math.exp(level - LEVEL_SD**2 / 2)
            for c, share in CHANNEL_SHARES.items():
                x = channel_level[c]
                if self.noise:
                    x = phi_ch * x + CHANNEL_SD * math.sqrt(1 - phi_ch**2) * rng.gauss(0, 1)
                    channel_level[c] = x
                rates[c].append(
                    total * share * math.exp(x - (CHANNEL_SD**2 / 2 if self.noise else 0))
                )
        return rates

    def rate(self, t: float, channel: str) -> float:
        """Sessions per second arriving on the channel at t (no incident)."""
        return self._levels[channel][int((t - self.start) // MINUTE)]

    def _arrivals(self) -> list[tuple[float, int, str, str]]:
        """(t, key, channel, kind) of every session: kind "s", "campaign", "bot", "angry".

        The key (stream number × 10⁹ + the arrival's number in its stream) seeds the session:
        an incident's extra sessions never shift the random streams of the others."""
        rng = random.Random(self.seed ^ 0xA7712)
        out: list[tuple[float, int, str, str]] = []
        fx = self.fx
        minutes = len(self._levels[WEB])

        def poisson(stream: int, channel: str, kind: str, rate_of: Any) -> None:
            # Piecewise-constant rate per minute: exponential gaps, restarted at each minute
            # boundary (memoryless, so this is the exact non-homogeneous Poisson process).
            n = 0
            for m in range(minutes):
                lo = self.start + m * MINUTE
                hi = min(lo + MINUTE, self.end)
                if lo >= hi:
                    break
                lam = rate_of(lo + MINUTE / 2, m)
                if lam <= 0:
                    continue
                t = lo + rng.expovariate(lam)
                while t < hi:
                    out.append((t, stream * 10**9 + n, channel, kind))
                    n += 1
                    t += rng.expovariate(lam)

        for number, c in enumerate(CHANNEL_SHARES):
            poisson(number, c, "s", lambda _t, m, c=c: self._levels[c][m])
        for number, inc in enumerate(self.run.incidents, start=10):
            if inc.family == "campaign" and inc.channel is not None:
                c = inc.channel
                poisson(
                    number, c, "campaign", lambda t, m, c=c: self._levels[c][m] * fx.campaign(t, c)
                )
            elif inc.family == "bot_surge" and inc.channel is not None:
                c = inc.channel
                views = self._means[c][0] / ((BOT_VIEWS[0] + BOT_VIEWS[1]) / 2)
                poisson(
                    number,
                    c,
                    "bot",
                    lambda t, m, c=c, v=views: self._levels[c][m] * v * fx.bots(t, c),
                )
            elif inc.family == "sentiment_wave":
                # Unhappy customers of earlier orders write in: twice the usual reviews and
                # contacts × intensity, on top of the usual ones turning sour.
                per = sum(self._means[c][1] * s for c, s in CHANNEL_SHARES.items())
                levels = [self._levels[c] for c in CHANNEL_SHARES]
                poisson(
                    number,
                    WEB,
                    "angry",
                    lambda t, m, p=per, ls=levels: 2.0 * fx.angry(t) * p * sum(x[m] for x in ls),
                )
        out.sort()
        return out

    # -- sessions

    def _session(self, k: int, t: float, channel: str, kind: str) -> list[Raw]:
        rng = random.Random(self.seed * 1_000_003 + k)
        sid = f"as-{self.tag}-{k}"
        out: list[Raw] = []
        returning = kind != "bot" and rng.random() < RETURNING
        customer = f"ac{self.tag}-{rng.randrange(CUSTOMERS)}" if returning else None
        props: dict[str, Any] = {
            "device": _pick(rng, DEVICES[channel]),
            "country": _pick(rng, COUNTRIES),
            "returning": returning,
        }
        if kind == "campaign":
            props["utm_campaign"] = "alt_promo"
        fx = self.fx

        def emit(at: float, tp: str, value: float | None = None, sentiment: float | None = None,
                 extra: dict[str, Any] | None = None) -> None:  # fmt: skip
            out.append((at, tp, sid, channel, customer, sentiment,
                        None if value is None else round(value, 2),
                        props if extra is None else {**props, **extra}))  # fmt: skip

        def price() -> float:
            return min(5000.0, max(1.0, rng.lognormvariate(math.log(28.0), 1.0)))

        if kind == "bot":
            props = {"device": "desktop" if channel == WEB else "android",
                     "country": props["country"], "returning": False}  # fmt: skip
            emit(t, "landing_view")
            for _ in range(rng.randint(*BOT_VIEWS)):
                t += _ln(rng, 2.0, 0.6, 0.3, 20.0)
                emit(t, "product_view", price(), extra={"product_id": f"q{rng.randrange(9000)}"})
            return out
        if kind == "angry":
            channel = _pick(rng, ((WEB, 0.45), (MOBILE, 0.45), (EMAIL, 0.1)))
            customer = f"ac{self.tag}-{rng.randrange(CUSTOMERS)}"
            if rng.random() < 0.5:
                emit(t, "review_submitted", None, *self._review(rng, angry=True))
            else:
                emit(t, "support_contact", None, self._support(rng, angry=True),
                     {"topic": "delivery"})  # fmt: skip
            return out
        if channel == STORE:
            p = price() * 1.4
            emit(t, "product_view", p)
            if rng.random() < 0.5:
                if customer is None and rng.random() < 0.3:
                    customer = f"ac{self.tag}-{rng.randrange(CUSTOMERS)}"
                t += _ln(rng, 240, 0.8, 20, 2400)
                emit(t, "purchase", p * rng.uniform(1.0, 2.0))
            return out
        if channel == CALL:
            customer = customer or f"ac{self.tag}-{rng.randrange(CUSTOMERS)}"
            if rng.random() < 0.3:
                p = price() * 2
                emit(t, "product_view", p)
                t += _ln(rng, 200, 0.6, 30, 1200)
                emit(t, "purchase", p)
            else:
                emit(t, "support_contact", None,
                     self._support(rng, rng.random() < fx.angry(t)), {"topic": "billing"})  # fmt: skip
            return out

        f = FUNNELS[channel]
        cart: list[float] = []
        buy_now = False
        if channel == EMAIL:
            emit(t, "email_open")
            if rng.random() >= f.click:
                return out
            t += _ln(rng, 8, 0.7, 1, 600)
            emit(t, "landing_view")
        elif channel == SOCIAL:
            emit(t, "social_click")
            t += _ln(rng, 4, 0.6, 1, 120)
            emit(t, "landing_view")
        elif returning and rng.random() < 0.05:
            # A saved cart: straight back to it, no landing page and no browsing.
            cart = [price() for _ in range(rng.randint(1, 3))]
            emit(t, "cart_view", sum(cart))
        else:
            if rng.random() < f.ad:
                emit(t, "ad_click")
                t += _ln(rng, 2, 0.5, 0.5, 60)
            if not (returning and rng.random() < 0.3):
                emit(t, "landing_view")
        if not cart:
            if not returning and rng.random() < f.bounce:
                return out
            t += _ln(rng, 15, 1.0, 1, 900)
            emit(t, "product_search" if rng.random() < f.search else "product_list_view")
            p_add = f.add_to_cart * (1.4 if returning else 1.0)
            views = 0
            product, p = "", 0.0
            while True:
                views += 1
                if not product or rng.random() >= 0.1:  # 10 %: back to the same product
                    product, p = f"p{rng.randrange(8000):04d}", price()
                t += _ln(rng, 10, 0.9, 1, 600)
                emit(t, "product_view", p, extra={"product_id": product})
                t += _ln(rng, 40, 1.1, 2, 1800)
                if rng.random() < p_add * fx.add_to_cart(t, channel):
                    cart.append(p)
                    emit(t, "add_to_cart", p, extra={"product_id": product})
                    t += _ln(rng, 6, 0.6, 1, 120)
                    if rng.random() < 0.12:
                        buy_now = True
                        break
                elif rng.random() < 0.03:
                    emit(t, "wishlist_add", extra={"product_id": product})
                if views >= 25 or rng.random() >= f.more:
                    break
                if rng.random() < 0.25:  # back to the list
                    t += _ln(rng, 8, 0.8, 1, 300)
                    emit(t, "product_list_view")
            if not cart:
                return out
            if not buy_now and rng.random() < 0.7:
                t += _ln(rng, 20, 0.9, 2, 900)
                emit(t, "cart_view", sum(cart))
                if len(cart) > 1 and rng.random() < 0.05:
                    cart.pop()
                    t += _ln(rng, 6, 0.6, 1, 120)
                    emit(t, "remove_from_cart")
        t += _ln(rng, 12, 0.8, 1, 900)
        if rng.random() >= f.checkout * fx.checkout(t):
            return out
        if customer is None:
            customer = f"ac{self.tag}-{sid}"
        order = sum(cart) * math.exp(rng.gauss(0.05, 0.08))
        emit(t, "checkout_started", order)
        if returning and rng.random() < 0.5:  # saved address: no shipping step
            t += _ln(rng, 45, 0.8, 3, 3000)
        else:
            t += _ln(rng, 70, 0.8, 5, 3000)
            if rng.random() >= SHIPPING:
                return out
            emit(t, "shipping_info_entered")
            t += _ln(rng, 55, 0.8, 5, 3000)
        if rng.random() >= f.payment * fx.payment(t):
            return out
        method = _pick(rng, (("card", 0.45), ("paypal", 0.35), ("sofort", 0.2)))
        emit(t, "payment_submitted", order, extra={"payment_method": method})
        for attempt in range(2):
            t += _ln(rng, 6, 0.6, 1, 240)
            failing = fx.payment_failing(t, channel)
            if rng.random() < PURCHASE and not rng.random() < failing:
                emit(t, "purchase", order, extra={"payment_method": method})
                self._after(rng, t, order, emit)
                return out
            if attempt == 1 or rng.random() >= (0.45 if failing else 0.3):
                break
            t += _ln(rng, 40, 0.6, 5, 600)
            emit(t, "payment_submitted", order, extra={"payment_method": method, "retry": True})
        if failing and rng.random() < 0.12:
            t += _ln(rng, 600, 0.8, 60, 3600)
            emit(t, "support_contact", None, self._support(rng, True), {"topic": "payment_failed"})
        return out

    def _after(self, rng: random.Random, t: float, order: float, emit: Any) -> None:
        """Reviews, support contacts, refunds and cancellations, up to hours after the order."""
        if rng.random() < REVIEW:
            at = t + _ln(rng, 3000, 1.0, 120, 6 * HOUR)
            emit(at, "review_submitted", None, *self._review(rng, rng.random() < self.fx.angry(at)))
        if rng.random() < SUPPORT:
            at = t + _ln(rng, 1800, 1.0, 60, 6 * HOUR)
            sentiment = self._support(rng, rng.random() < self.fx.angry(at))
            emit(at, "support_contact", None, sentiment, {"topic": "delivery"})
        if rng.random() < REFUND:
            emit(t + _ln(rng, 4 * HOUR, 0.8, 600, 12 * HOUR), "refund_requested", order)
        elif rng.random() < CANCEL:
            emit(t + _ln(rng, 600, 0.8, 60, 3 * HOUR), "order_cancelled", order)

    @staticmethod
    def _review(rng: random.Random, angry: bool) -> tuple[float, dict[str, Any]]:
        """(sentiment, properties) of a review: a J-shaped star rating, sentiment around it."""
        rating = _pick(rng, ANGRY_RATINGS if angry else RATINGS)
        sentiment = min(1.0, max(-1.0, (rating - 3) * 0.4 + rng.gauss(0.0, 0.18)))
        return round(sentiment, 3), {"rating": rating}

    @staticmethod
    def _support(rng: random.Random, angry: bool) -> float:
        """Sentiment of a support contact: a neutral and an unhappy group (mostly unhappy in a wave)."""
        unhappy = rng.random() < (0.85 if angry else 0.35)
        mean, sd = (-0.55, 0.2) if unhappy else (0.05, 0.25)
        return round(min(1.0, max(-1.0, rng.gauss(mean, sd))), 3)

    # -- the stream

    def events(self) -> Iterator[Compact]:
        """Every event of the run in event-time order, as runner.stream's Compact tuples."""
        heap: list[tuple[float, int, Raw]] = []
        seq = 0
        n = 0
        lost = self.fx.lost
        journey = self.journey
        tag = self.tag

        def flush(until: float) -> Iterator[Compact]:
            nonlocal n
            while heap and heap[0][0] < until:
                at, _, raw = heapq.heappop(heap)
                if at >= self.end:
                    heap.clear()
                    return
                _, tp, sid, channel, customer, sentiment, value, props = raw
                share = lost(at, channel)
                # A hash, not the session's random stream: losing events changes no behaviour.
                if share > 0 and zlib.crc32(f"{sid}:{tp}:{at:.3f}".encode()) / 2**32 < share:
                    continue
                n += 1
                yield (at, f"alt-{tag}-{n}", journey, tp, sid, channel, customer, sentiment,
                       value, props)  # fmt: skip

        for t, k, channel, kind in self._arrivals():
            yield from flush(t)
            for raw in self._session(k, t, channel, kind):
                heapq.heappush(heap, (raw[0], seq, raw))
                seq += 1
        yield from flush(math.inf)


_MEANS: dict[str, tuple[float, float]] = {}


def _session_means(samples: int = 3000) -> dict[str, tuple[float, float]]:
    """Per channel, mean product views and mean (reviews + support contacts) per session, from
    a fixed-seed sample without incidents (sizes the bot and unhappy-customer streams)."""
    if not _MEANS:
        probe = AltGenerator.__new__(AltGenerator)
        probe.fx = _Effects(())
        probe.seed, probe.tag = 7, "probe"
        for c in CHANNEL_SHARES:
            views = post = 0
            for k in range(samples):
                for raw in probe._session(k, 43200.0, c, "s"):
                    views += raw[1] == "product_view"
                    post += raw[1] in ("review_submitted", "support_contact")
            _MEANS[c] = (views / samples, post / samples)
    return _MEANS


def generate(run: Run, journey: str) -> Iterator[Compact]:
    """The run's events from the second generator (runner.stream's format and order)."""
    return AltGenerator(run, journey).events()


def stream_key(run: Run, journey: str) -> str:
    """Hash of this module's code and the run (labels included: they shape the stream)."""
    digest = hashlib.sha256(Path(__file__).read_bytes())
    digest.update(repr((run, journey)).encode())
    return digest.hexdigest()[:16]
