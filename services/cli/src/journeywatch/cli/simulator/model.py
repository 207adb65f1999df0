"""The traffic model: seeded sessions walking the default e-commerce journey, in event-time order.

Pure: no I/O, no clock. Given a seed, a start time and a rate, `Simulator.events()` yields
contract-v1 touchpoint dicts (the fields of `TouchpointIn`) with `occurred_at` as RFC 3339,
sorted by event time. The same arguments always yield the same events.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import random
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from journeywatch.cli.simulator.custom import UNSUPPORTED, WalkPlan, walk_journey
from journeywatch.cli.simulator.scenarios import NEUTRAL, Effects, Scenario
from journeywatch.shared.events import Channel
from journeywatch.shared.journeys import Journey

Event = dict[str, Any]

# Acquisition mix of sessions (where the first touchpoint happens).
CHANNEL_MIX: Final[dict[Channel, float]] = {
    Channel.WEB: 0.40,
    Channel.MOBILE: 0.36,
    Channel.EMAIL: 0.08,
    Channel.SOCIAL: 0.09,
    Channel.STORE: 0.045,
    Channel.CALL_CENTER: 0.025,
}
DEVICES: Final[dict[Channel, tuple[tuple[str, float], ...]]] = {
    Channel.WEB: (("desktop", 0.66), ("mobile_web", 0.26), ("tablet", 0.08)),
    Channel.MOBILE: (("ios", 0.56), ("android", 0.44)),
    Channel.EMAIL: (("desktop", 0.45), ("mobile_web", 0.25), ("ios", 0.18), ("android", 0.12)),
    Channel.SOCIAL: (("ios", 0.42), ("android", 0.33), ("mobile_web", 0.25)),
    Channel.STORE: (("pos", 1.0),),
    Channel.CALL_CENTER: (("phone", 1.0),),
}
COUNTRIES: Final = (
    ("US", 0.36), ("GB", 0.14), ("DE", 0.12), ("FR", 0.09), ("CA", 0.07),
    ("NL", 0.05), ("ES", 0.05), ("IT", 0.05), ("AU", 0.04), ("SE", 0.03),
)  # fmt: skip
PAYMENT_METHODS: Final = (("card", 0.62), ("paypal", 0.2), ("apple_pay", 0.1), ("klarna", 0.08))
# A typical mid-size web shop (the incident corpus): web first, social a small tail.
SHOP_CHANNEL_MIX: Final[dict[Channel, float]] = {
    Channel.WEB: 0.45,
    Channel.MOBILE: 0.33,
    Channel.EMAIL: 0.10,
    Channel.STORE: 0.06,
    Channel.CALL_CENTER: 0.04,
    Channel.SOCIAL: 0.02,
}
BOT_VIEWS: Final = (8, 24)  # product views per bot session (uniform)
_NOISE_KNOT_SECONDS: Final = 1200.0


@dataclass(frozen=True)
class Funnel:
    """Stage-to-stage probabilities of a session (before scenario effects)."""

    browse: float = 0.72  # entry → looks at products
    search: float = 0.45  # starts browsing with a search
    more_views: float = 0.55  # after a product view, views another one (geometric)
    add_to_cart: float = 0.17  # per product view
    returning_cart_boost: float = 1.5  # returning customers fill carts more often
    cart_view: float = 0.8
    remove_from_cart: float = 0.06
    wishlist: float = 0.04
    checkout: float = 0.52  # cart → checkout
    shipping: float = 0.92  # checkout → shipping info
    payment: float = 0.88  # shipping → payment
    purchase: float = 0.94  # payment → purchase
    review: float = 0.10  # after a purchase
    support_after_purchase: float = 0.04
    refund: float = 0.012
    cancel: float = 0.01
    email_click_through: float = 0.55
    social_click_through: float = 0.7
    ad_entry: float = 0.35  # web/mobile sessions that start with an ad click
    store_purchase: float = 0.6
    call_center_order: float = 0.3


@dataclass(frozen=True)
class Profile:
    """Everything that shapes traffic besides the seed, rate and scenarios."""

    funnel: Funnel = field(default_factory=Funnel)
    channel_mix: dict[Channel, float] = field(default_factory=lambda: dict(CHANNEL_MIX))
    returning_share: float = 0.32
    customers: int = 20_000
    order_value_median: float = 58.0
    order_value_sigma: float = 0.65
    review_sentiment: tuple[float, float] = (0.55, 0.3)
    support_sentiment: tuple[float, float] = (-0.15, 0.35)
    daily_cycle: bool = True
    weekly_cycle: bool = False
    utc_offset_hours: float = 0.0  # local time of the shop's customers, for the cycles
    noise: float = 0.0
    """Standard deviation of the log traffic level beyond Poisson: a level per day (half of
    it) and a drift that changes every 20 minutes. Real traffic is over-dispersed; 0 = none."""
    funnel_noise: float = 0.0
    """Standard deviation of the log of the add-to-cart and payment probabilities, drawn afresh
    every 20 minutes: conversion rates wander a little, as real ones do. 0 = none."""


def shop_profile(noise: float = 0.1, funnel_noise: float = 0.04) -> Profile:
    """A realistic shop: six channels from web ≈ 45 % to social ≈ 2 %, daily and weekly cycles,
    traffic over-dispersed by `noise`, conversions wandering by `funnel_noise` (the incident
    corpus uses it).

    >>> round(sum(shop_profile().channel_mix.values()), 6), shop_profile().weekly_cycle
    (1.0, True)
    """
    return Profile(
        channel_mix=dict(SHOP_CHANNEL_MIX),
        weekly_cycle=True,
        noise=noise,
        funnel_noise=funnel_noise,
    )


# Daily traffic shape: a night dip (~04:00), a lunch peak (~12:30) and an evening peak (~20:30).
def _raw_daily(hour: float) -> float:
    def bump(center: float, width: float) -> float:
        distance = min(abs(hour - center), 24 - abs(hour - center))
        return math.exp(-0.5 * (distance / width) ** 2)

    return 0.18 + 0.55 * bump(10.0, 2.5) + 0.85 * bump(12.75, 1.6) + 1.0 * bump(20.5, 2.2)


_DAILY_MEAN: Final = sum(_raw_daily(m / 60) for m in range(1440)) / 1440
_WEEKLY: Final = (0.97, 0.95, 0.96, 0.99, 1.04, 1.12, 0.97)  # Monday … Sunday
_WEEKLY_MEAN: Final = sum(_WEEKLY) / 7


def daily_factor(hour: float) -> float:
    """Traffic at a local hour of day relative to the daily mean (mean over a day = 1).

    >>> daily_factor(4.0) < 0.4 < 1.4 < daily_factor(20.5)
    True
    """
    return _raw_daily(hour % 24) / _DAILY_MEAN


def weekly_factor(weekday: int) -> float:
    """Traffic on a weekday (0 = Monday) relative to the weekly mean."""
    return _WEEKLY[weekday % 7] / _WEEKLY_MEAN


def _pick(rng: random.Random, weighted: Sequence[tuple[Any, float]]) -> Any:
    roll = rng.random() * sum(w for _, w in weighted)
    for item, weight in weighted:
        roll -= weight
        if roll < 0:
            return item
    return weighted[-1][0]


def _clip(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))


def rfc3339_ms(epoch: float) -> str:
    """RFC 3339 UTC with milliseconds and a Z suffix."""
    return (
        datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


class Simulator:
    """Seeded generator of sessions walking the e-commerce journey, in event-time order.

    Parameters
    ----------
    start
        Event time of the first session arrivals (aware datetime).
    sessions_per_second
        Mean session arrival rate over a day (the daily cycle modulates it).
    seed
        Seeds every random choice; same arguments → same events.
    end
        Event time after which nothing is generated (None: unbounded, for real time).
    scenarios
        Incidents to inject (offsets relative to `start`).
    definition
        A journey from a journey file to walk instead of the built-in e-commerce model
        (`custom.walk_journey`); its name is the events' `journey`.

    Examples
    --------
    >>> from datetime import datetime, UTC
    >>> sim = Simulator(datetime(2026, 1, 5, 12, tzinfo=UTC), sessions_per_second=2.0, seed=7,
    ...                 end=datetime(2026, 1, 5, 12, 5, tzinfo=UTC))
    >>> events = list(sim.events())
    >>> events == list(Simulator(datetime(2026, 1, 5, 12, tzinfo=UTC), 2.0, seed=7,
    ...                          end=datetime(2026, 1, 5, 12, 5, tzinfo=UTC)).events())
    True
    >>> {"event_id", "occurred_at", "touchpoint", "session_id", "channel"} <= set(events[0])
    True
    """

    def __init__(
        self,
        start: datetime,
        sessions_per_second: float,
        seed: int = 0,
        end: datetime | None = None,
        scenarios: Sequence[Scenario] = (),
        profile: Profile | None = None,
        journey: str = "ecommerce",
        definition: Journey | None = None,
    ):
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        if sessions_per_second <= 0:
            raise ValueError("sessions_per_second must be positive")
        self.start = start.timestamp()
        self.end = end.timestamp() if end is not None else math.inf
        self.rate = sessions_per_second
        self.seed = seed
        self.scenarios = tuple(scenarios)
        self.profile = profile or Profile()
        self.journey = definition.name if definition is not None else journey
        self.plan = WalkPlan.of(definition) if definition is not None else None
        if self.plan is not None:
            refused = sorted({s.name for s in self.scenarios} & UNSUPPORTED)
            if refused:
                raise ValueError(
                    f"scenario {', '.join(refused)} needs the built-in e-commerce journey"
                )
        self._tag = hashlib.sha256(f"{seed}:{self.start:.3f}".encode()).hexdigest()[:10]
        self._channels = list(self.profile.channel_mix.items())
        self._knots: dict[int, float] = {}
        self._drifts: dict[int, Effects] = {}

    # -- arrival process --------------------------------------------------------------------

    def base_factor(self, epoch: float) -> float:
        """Seasonal traffic factor at an event time (daily and optional weekly cycle)."""
        factor = 1.0
        local = epoch + self.profile.utc_offset_hours * 3600
        if self.profile.daily_cycle:
            factor *= daily_factor((local % 86400) / 3600)
        if self.profile.weekly_cycle:
            factor *= weekly_factor(int(local // 86400 + 3) % 7)  # 1970-01-01 was a Thursday
        if self.profile.noise > 0:
            factor *= self._noise_factor(epoch)
        return factor

    def _knot(self, key: int) -> float:
        value = self._knots.get(key)
        if value is None:
            value = self._knots[key] = random.Random(f"{self.seed}:noise:{key}").gauss(0.0, 1.0)
        return value

    def _noise_factor(self, epoch: float) -> float:
        """exp(level of the day + drift), the drift interpolated between 20-minute knots."""
        sigma = self.profile.noise
        position = epoch / _NOISE_KNOT_SECONDS
        knot = math.floor(position)
        frac = position - knot
        drift = (1 - frac) * self._knot(knot) + frac * self._knot(knot + 1)
        # The interpolation shrinks the variance mid-way; rescale so every moment has sd 1.
        drift /= math.sqrt((1 - frac) ** 2 + frac**2)
        day = self._knot(-1 - int(epoch // 86400))
        z = _clip(0.5 * day + math.sqrt(0.75) * drift, -3.0, 3.0)
        return math.exp(sigma * z - sigma**2 / 2)

    def _drift(self, epoch: float) -> Effects:
        """The funnel's wandering at an event time (constant within a 20-minute knot)."""
        knot = int(epoch // _NOISE_KNOT_SECONDS)
        drift = self._drifts.get(knot)
        if drift is None:
            rng = random.Random(f"{self.seed}:funnel:{knot}")
            sigma = self.profile.funnel_noise
            drift = self._drifts[knot] = Effects(
                add_to_cart=math.exp(_clip(rng.gauss(0.0, 1.0), -3, 3) * sigma),
                payment=math.exp(_clip(rng.gauss(0.0, 1.0), -3, 3) * sigma),
            )
        return drift

    def _effects(self, epoch: float, channel: Channel) -> Effects:
        effects = self._drift(epoch) if self.profile.funnel_noise > 0 else NEUTRAL
        elapsed = epoch - self.start
        for item in self.scenarios:
            # Called for every event: a multi-day run with many incidents must not pay for them
            # outside their windows.
            if not item.offset <= elapsed < item.offset + item.duration:
                continue
            found = item.effects(elapsed, channel)
            if found is not NEUTRAL:
                effects = found if effects is NEUTRAL else effects.combine(found)
        return effects

    def events(self) -> Iterator[Event]:
        """Touchpoint dicts (contract v1) in event-time order until `end` (forever if None)."""
        for _, event in self.timed_events():
            yield event

    def timed_events(self) -> Iterator[tuple[float, Event]]:
        """(epoch seconds, event) pairs in event-time order, for pacing in real time."""
        streams = [self._arrivals(0, self.start, self.end, lambda _: 1.0, 1.0, None)]
        for number, item in enumerate(self.scenarios, start=1):
            if item.adds_traffic and item.intensity > 0:
                begin = self.start + item.offset
                scale = item.intensity
                if item.is_bot:
                    # Bot sessions per base session that multiply the channel's views by intensity.
                    channel = item.channel or Channel.WEB
                    views = touchpoints_per_session(self.profile).get(
                        ("product_view", channel.value), 0.0
                    )
                    scale = max(0.0, item.intensity - 1.0) * views / (sum(BOT_VIEWS) / 2)
                if scale <= 0:
                    continue
                streams.append(
                    self._arrivals(
                        number,
                        begin,
                        min(self.end, begin + item.duration),
                        lambda epoch, item=item, scale=scale: (  # type: ignore[misc]
                            scale * item.extra_arrivals(epoch - self.start)
                            if item.is_bot
                            else item.extra_arrivals(epoch - self.start)
                        ),
                        scale,
                        item.channel or (Channel.WEB if item.is_bot else Channel.SOCIAL),
                    )
                )
        pending: list[tuple[float, int, Event]] = []
        sequence = 0
        counts = [0] * (len(self.scenarios) + 1)
        for now, stream, campaign in heapq.merge(*streams):
            while pending and pending[0][0] < now:
                when, _, event = heapq.heappop(pending)
                yield when, event
            counts[stream] += 1
            number = counts[stream]
            # One random stream per session: a scenario changes only the sessions it touches.
            rng = random.Random(f"{self.seed}:{stream}:{number}")
            name = f"{number:x}" if stream == 0 else f"{stream}.{number:x}"
            bot = stream > 0 and self.scenarios[stream - 1].is_bot
            for when, event in self._session(rng, now, name, campaign, bot):
                sequence += 1
                event["event_id"] = f"sim-{self._tag}-{sequence:x}"
                heapq.heappush(pending, (when, sequence, event))
        while pending and pending[0][0] < self.end:
            when, _, event = heapq.heappop(pending)
            yield when, event

    def _arrivals(
        self,
        stream: int,
        begin: float,
        end: float,
        factor: Callable[[float], float],
        peak_factor: float,
        campaign: Channel | None,
    ) -> Iterator[tuple[float, int, Channel | None]]:
        """Session arrival times of a non-homogeneous Poisson process (thinning)."""
        rng = random.Random(f"{self.seed}:arrivals:{stream}")
        peak = self.rate * peak_factor * (2.2 if self.profile.daily_cycle else 1.0)
        peak *= 1.2 if self.profile.weekly_cycle else 1.0
        peak *= math.exp(3.0 * self.profile.noise)  # the noise factor's ceiling
        now = begin
        while True:
            now += rng.expovariate(peak)
            if now >= end:
                return
            if rng.random() * peak < self.rate * self.base_factor(now) * factor(now):
                yield now, stream, campaign

    # -- one session -------------------------------------------------------------------------

    def _session(
        self,
        rng: random.Random,
        start: float,
        number: str,
        campaign: Channel | None,
        bot: bool = False,
    ) -> list[tuple[float, Event]]:
        profile = self.profile
        channel = campaign or _pick(rng, self._channels)
        returning = rng.random() < profile.returning_share
        customer = f"c{self.seed}-{rng.randrange(profile.customers)}" if returning else None
        device: str = _pick(rng, DEVICES[channel])
        props: dict[str, Any] = {
            "device": device,
            "country": _pick(rng, COUNTRIES),
            "returning": returning,
        }
        if bot:
            props = {"device": "desktop", "country": props["country"], "returning": False}
            walk = _Walk(self, rng, f"s-{self._tag}-{number}", start, channel, None, props)
            walk.bot()
            return walk.out
        if campaign is not None:
            props["utm_campaign"] = "spring_sale"
        if self.plan is not None:
            walk = _Walk(self, rng, f"s-{self._tag}-{number}", start, channel, customer, props)
            walk_journey(walk, self.plan)
            return walk.out
        walk = _Walk(self, rng, f"s-{self._tag}-{number}", start, channel, customer, props)
        walk.run(campaign is not None)
        return walk.out


class _Walk:
    """One session walking the journey; events are collected in `out` with their epoch time."""

    def __init__(
        self,
        sim: Simulator,
        rng: random.Random,
        session_id: str,
        start: float,
        channel: Channel,
        customer: str | None,
        properties: dict[str, Any],
    ):
        self.sim = sim
        self.rng = rng
        self.funnel = sim.profile.funnel
        self.session_id = session_id
        self.t = start
        self.channel = channel
        self.customer = customer
        self.properties = properties
        self.out: list[tuple[float, Event]] = []

    # -- primitives

    def emit(self, touchpoint: str, **fields: Any) -> None:
        """Record a touchpoint at the current time (unless tracking is out on this channel)."""
        effects = self.effects()
        if not effects.tracked:
            return
        if effects.lost > 0:
            # A hash, not the session's random stream: losing events must not change behaviour.
            key = f"{self.session_id}:{touchpoint}:{self.t:.3f}".encode()
            if zlib.crc32(key) / 2**32 < effects.lost:
                return
        props = dict(self.properties)
        props.update(fields.pop("properties", {}))
        event: Event = {
            "event_id": "",
            "occurred_at": rfc3339_ms(self.t),
            "journey": self.sim.journey,
            "touchpoint": touchpoint,
            "session_id": self.session_id,
            "customer_id": self.customer,
            "channel": self.channel.value,
            "sentiment": None,
            "value": None,
            "properties": props,
        }
        event.update(fields)
        self.out.append((self.t, {k: v for k, v in event.items() if v is not None}))

    def wait(
        self, median: float, sigma: float = 0.8, low: float = 1.0, high: float = 900.0
    ) -> None:
        """Advance the session clock by a log-normal think time (seconds)."""
        self.t += _clip(self.rng.lognormvariate(math.log(median), sigma), low, high)

    def effects(self) -> Effects:
        """Scenario effects now, on the session's current channel."""
        return self.sim._effects(self.t, self.channel)

    def chance(self, probability: float) -> bool:
        """True with the given probability."""
        return self.rng.random() < probability

    def sentiment(self, mean_sd: tuple[float, float], shift: float) -> float:
        """A sentiment score in [-1, 1]."""
        return round(_clip(self.rng.gauss(mean_sd[0] + shift, mean_sd[1]), -1.0, 1.0), 3)

    def price(self, median: float, sigma: float) -> float:
        """A product price."""
        return round(_clip(self.rng.lognormvariate(math.log(median), sigma), 2.0, 2000.0), 2)

    def product(self) -> str:
        """A product id."""
        return f"p{self.rng.randrange(5000):04d}"

    # -- the journey

    def run(self, from_campaign: bool) -> None:
        """Walk from the entry touchpoint as far as the funnel (and the scenarios) allow."""
        funnel = self.funnel
        if self.channel is Channel.STORE:
            self.store_visit()
            return
        if self.channel is Channel.CALL_CENTER:
            self.call()
            return
        if self.channel in (Channel.EMAIL, Channel.SOCIAL):
            email = self.channel is Channel.EMAIL
            self.emit("email_open" if email else "social_click")
            through = funnel.email_click_through if email else funnel.social_click_through
            if not from_campaign and not self.chance(through):
                return
            # The session continues where the link opens: the app on phones, else the web.
            self.channel = (
                Channel.MOBILE if self.properties["device"] in ("ios", "android") else Channel.WEB
            )
            self.wait(6, 0.6)
            self.emit("landing_view")
        elif self.customer is not None and self.chance(0.4):
            pass  # returning customers often go straight to search
        else:
            if self.chance(funnel.ad_entry):
                self.emit("ad_click")
                self.wait(3, 0.5)
            self.emit("landing_view")
        if self.customer is None and not self.chance(funnel.browse):
            return
        if self.browse():
            self.checkout()

    def browse(self) -> bool:
        """Search or list, view products, maybe fill the cart; True when the cart has items."""
        funnel = self.funnel
        self.wait(12)
        if self.chance(funnel.search):
            self.emit("product_search", properties={"query_length": self.rng.randint(3, 24)})
        else:
            self.emit("product_list_view")
        self.wait(10)
        p_add = funnel.add_to_cart * (
            funnel.returning_cart_boost if self.properties["returning"] else 1.0
        )
        self.cart_items, self.cart_value, views = 0, 0.0, 0
        while True:
            views += 1
            price, product = self.price(35.0, 0.8), self.product()
            self.emit("product_view", value=price, properties={"product_id": product})
            self.wait(25)
            broken = self.effects().add_to_cart < 0.5
            if self.chance(min(0.95, p_add * self.effects().add_to_cart)):
                self.cart_items += 1
                self.cart_value += price
                self.emit("add_to_cart", value=price, properties={"product_id": product})
                self.wait(8)
            elif self.chance(funnel.wishlist):
                self.emit("wishlist_add", properties={"product_id": product})
                self.wait(5)
            # A broken button makes people try a few more products before giving up.
            again = funnel.more_views + (0.2 if broken else 0.0)
            if views >= 8 or not self.chance(again):
                break
        if self.cart_items == 0:
            return False
        if self.chance(funnel.cart_view):
            self.emit("cart_view", value=round(self.cart_value, 2))
            self.wait(15)
            if self.cart_items > 1 and self.chance(funnel.remove_from_cart):
                self.emit("remove_from_cart")
                self.cart_items -= 1
                self.cart_value *= 0.7
                self.wait(6)
        return True

    def checkout(self) -> None:
        """Checkout, shipping, payment, purchase (scenario effects apply here)."""
        funnel, profile = self.funnel, self.sim.profile
        if not self.chance(funnel.checkout):
            return
        if self.customer is None:  # checkout identifies the customer (account or guest e-mail)
            self.customer = f"c{self.sim.seed}-{self.session_id}"
        order = round(
            max(
                self.cart_value, self.rng.lognormvariate(math.log(profile.order_value_median), 0.3)
            ),
            2,
        )
        self.emit("checkout_started", value=order)
        # What the customer meets on entering checkout decides as much as the later moments.
        entry = self.effects()
        self.wait(35 * entry.checkout_delay, 0.6, 3.0, 1500.0)
        if not self.chance(funnel.shipping):
            return
        self.emit("shipping_info_entered")
        self.wait(40 * self.effects().checkout_delay, 0.6, 3.0, 1500.0)
        if not self.chance(funnel.payment * min(entry.payment, self.effects().payment)):
            return
        method = _pick(self.rng, PAYMENT_METHODS)
        paid = {"payment_method": method}
        self.emit("payment_submitted", value=order, properties=paid)
        self.wait(4 * self.effects().checkout_delay, 0.5, 1.0, 900.0)
        current = self.effects()
        if self.chance(funnel.purchase * min(entry.purchase, current.purchase)):
            self.emit("purchase", value=order, properties=paid)
            self.after_purchase(order)
            return
        if not current.payment_errors:
            return
        # Failing payments: many retry once, some then contact support.
        if self.chance(0.55):
            self.wait(30, 0.5)
            self.emit("payment_submitted", value=order, properties={**paid, "retry": True})
            self.wait(4, 0.5)
            if self.chance(funnel.purchase * self.effects().purchase):
                self.emit("purchase", value=order, properties=paid)
                return
        if self.chance(0.15):
            self.wait(120, 0.7)
            self.emit(
                "support_contact",
                sentiment=self.sentiment(profile.support_sentiment, -0.4),
                properties={"topic": "payment_failed"},
            )

    def after_purchase(self, order: float) -> None:
        """Reviews, support contacts, refunds and cancellations after an order."""
        funnel, profile = self.funnel, self.sim.profile
        more = self.effects().review
        if self.chance(min(0.9, funnel.review * more)):
            self.wait(300, 0.8, 30.0, 3600.0)
            score = self.sentiment(profile.review_sentiment, self.effects().sentiment_shift)
            rating = int(_clip(round(3 + 2 * score), 1, 5))
            self.emit("review_submitted", sentiment=score, properties={"rating": rating})
        if self.chance(funnel.support_after_purchase * (1.0 + (more - 1.0) * 0.5)):
            self.wait(600, 0.8, 60.0, 3600.0)
            self.emit(
                "support_contact",
                sentiment=self.sentiment(profile.support_sentiment, self.effects().sentiment_shift),
                properties={"topic": self.rng.choice(("delivery", "return", "product_question"))},
            )
        if self.chance(funnel.refund):
            self.wait(900, 0.8, 60.0, 3600.0)
            self.emit("refund_requested", value=order)
        elif self.chance(funnel.cancel):
            self.wait(180, 0.8, 30.0, 1800.0)
            self.emit("order_cancelled", value=order)

    def bot(self) -> None:
        """A scraper: a landing page, then many product pages seconds apart, never a cart."""
        self.emit("landing_view")
        for _ in range(self.rng.randint(*BOT_VIEWS)):
            self.wait(4, 0.5, 1.0, 30.0)
            price = self.price(35.0, 0.8)
            self.emit("product_view", value=price, properties={"product_id": self.product()})

    def store_visit(self) -> None:
        """A store visit: a product looked at, often bought at the till."""
        price = self.price(45.0, 0.7)
        self.emit("product_view", value=price, properties={"product_id": self.product()})
        if self.chance(self.funnel.store_purchase):
            self.wait(240, 0.7, 20.0, 1800.0)
            if self.customer is None and self.chance(0.4):  # loyalty card at the till
                self.customer = f"c{self.sim.seed}-{self.rng.randrange(self.sim.profile.customers)}"
            self.emit("purchase", value=round(price * self.rng.uniform(1.0, 2.5), 2))

    def call(self) -> None:
        """A call-center call: mostly support, sometimes a phone order."""
        profile = self.sim.profile
        if self.customer is None:
            self.customer = f"c{self.sim.seed}-{self.rng.randrange(profile.customers)}"
        if self.chance(self.funnel.call_center_order):
            price = self.price(70.0, 0.6)
            self.emit("product_view", value=price, properties={"product_id": self.product()})
            self.wait(180, 0.5, 30.0, 900.0)
            self.emit("purchase", value=price)
            return
        self.emit(
            "support_contact",
            sentiment=self.sentiment(profile.support_sentiment, self.effects().sentiment_shift),
            properties={
                "topic": self.rng.choice(("delivery", "return", "billing", "product_question"))
            },
        )


_MEAN_EVENTS: dict[str, float] = {}
_MEAN_TOUCHPOINTS: dict[str, dict[tuple[str, str], float]] = {}


def touchpoints_per_session(
    profile: Profile | None = None, samples: int = 3000
) -> dict[tuple[str, str], float]:
    """Mean count of each (touchpoint, channel) per session (no scenarios), with a fixed seed."""
    profile = profile or Profile()
    key = f"{samples}:{profile!r}"
    if key not in _MEAN_TOUCHPOINTS:
        sim = Simulator(datetime(2026, 1, 5, 12, tzinfo=UTC), 1.0, seed=12345, profile=profile)
        rng = random.Random(12345)
        counts: dict[tuple[str, str], float] = {}
        for n in range(samples):
            for _, event in sim._session(rng, sim.start, str(n), None):
                pair = (event["touchpoint"], event["channel"])
                counts[pair] = counts.get(pair, 0.0) + 1.0
        _MEAN_TOUCHPOINTS[key] = {pair: total / samples for pair, total in counts.items()}
    return _MEAN_TOUCHPOINTS[key]


def mean_events_per_session(
    profile: Profile | None = None, samples: int = 3000, definition: Journey | None = None
) -> float:
    """Average number of events a session produces (no scenarios), estimated with a fixed seed."""
    profile = profile or Profile()
    key = f"{samples}:{profile!r}"
    if definition is not None:
        key += f":{definition.model_dump_json()}"
    if key not in _MEAN_EVENTS:
        sim = Simulator(
            datetime(2026, 1, 5, 12, tzinfo=UTC),
            1.0,
            seed=12345,
            profile=profile,
            definition=definition,
        )
        rng = random.Random(12345)
        total = sum(len(sim._session(rng, sim.start, str(n), None)) for n in range(samples))
        _MEAN_EVENTS[key] = total / samples
    return _MEAN_EVENTS[key]
