"""Incident scenarios the simulator can inject: what each one changes, where, and for how long."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

from journeywatch.cli.durations import format_duration, parse_duration
from journeywatch.shared.events import Channel


@dataclass(frozen=True)
class Effects:
    """Multipliers and shifts applied to the traffic model at one moment on one channel.

    The neutral value of every field leaves the model unchanged; several active scenarios
    combine by multiplying factors and adding shifts.
    """

    add_to_cart: float = 1.0
    payment: float = 1.0
    purchase: float = 1.0
    checkout_delay: float = 1.0
    review: float = 1.0
    sentiment_shift: float = 0.0
    tracked: bool = True
    payment_errors: bool = False
    lost: float = 0.0
    """Share of the channel's events that never reach us (partial tracking loss)."""

    def combine(self, other: Effects) -> Effects:
        """Both effects at once."""
        return Effects(
            add_to_cart=self.add_to_cart * other.add_to_cart,
            payment=self.payment * other.payment,
            purchase=self.purchase * other.purchase,
            checkout_delay=self.checkout_delay * other.checkout_delay,
            review=self.review * other.review,
            sentiment_shift=self.sentiment_shift + other.sentiment_shift,
            tracked=self.tracked and other.tracked,
            payment_errors=self.payment_errors or other.payment_errors,
            lost=1.0 - (1.0 - self.lost) * (1.0 - other.lost),
        )


NEUTRAL: Final = Effects()


@dataclass(frozen=True)
class ScenarioKind:
    """A named incident type: its default channel, duration and intensity, and what it does."""

    name: str
    description: str
    default_channel: Channel | None
    default_duration: float
    default_intensity: float
    expected_anomalies: tuple[str, ...]


KINDS: Final[dict[str, ScenarioKind]] = {
    kind.name: kind
    for kind in (
        ScenarioKind(
            "payment_outage",
            "Payments fail on one channel: sessions submit payment (often twice) and never "
            "purchase; some call support.",
            Channel.MOBILE,
            15 * 60,
            1.0,
            ("cart_abandonment_spike", "conversion_drop"),
        ),
        ScenarioKind(
            "broken_add_to_cart",
            "The add-to-cart button is broken on one channel (mobile app): product views "
            "continue, carts never fill.",
            Channel.MOBILE,
            15 * 60,
            1.0,
            ("conversion_drop", "stage_dropoff_spike"),
        ),
        ScenarioKind(
            "marketing_campaign",
            "A campaign brings extra sessions through one channel (social); they convert "
            "like everyone else.",
            Channel.SOCIAL,
            30 * 60,
            1.5,
            ("traffic_surge",),
        ),
        ScenarioKind(
            "slow_checkout",
            "Checkout gets slower and slower: the checkout→purchase conversion degrades "
            "gradually over the duration.",
            None,
            30 * 60,
            0.8,
            ("conversion_drop",),
        ),
        ScenarioKind(
            "tracking_outage",
            "A channel's tracking breaks: its events stop entirely (intensity < 1: that share of "
            "them is lost) while customers carry on.",
            Channel.WEB,
            10 * 60,
            1.0,
            ("data_quality",),
        ),
        ScenarioKind(
            "checkout_outage",
            "A site-wide partial outage of the checkout→payment step: a share (= intensity) of "
            "the customers who reach payment cannot submit it, on every channel.",
            None,
            15 * 60,
            0.5,
            ("conversion_drop", "stage_dropoff_spike", "cart_abandonment_spike"),
        ),
        ScenarioKind(
            "checkout_degradation",
            "The checkout→payment step degrades in six equal steps over the duration, down to "
            "(1 − intensity) of its normal conversion (0.33: ≈ 90 % → 60 % of shipping→payment).",
            None,
            3 * 3600,
            0.33,
            ("conversion_drop",),
        ),
        ScenarioKind(
            "bot_surge",
            "Bots browse one channel: product views there × intensity, from sessions that view "
            "many products quickly and never fill a cart.",
            Channel.WEB,
            30 * 60,
            8.0,
            ("traffic_surge",),
        ),
        ScenarioKind(
            "negative_reviews",
            "A wave of unhappy customers: more reviews and support contacts, much lower sentiment.",
            None,
            20 * 60,
            1.0,
            ("sentiment_drop",),
        ),
    )
}


@dataclass(frozen=True)
class Scenario:
    """One injected incident: a kind, an event-time window relative to the simulation start,
    the channel it hits (None: every channel) and its intensity (kind-specific scale)."""

    kind: ScenarioKind
    offset: float
    duration: float
    channel: Channel | None = None
    intensity: float = 1.0
    _label: str = field(default="", compare=False)

    @property
    def name(self) -> str:
        """The kind's name."""
        return self.kind.name

    @property
    def label(self) -> str:
        """The spec this scenario was written as (for logs)."""
        return self._label or describe(self)

    def progress(self, elapsed: float) -> float | None:
        """Fraction of the window elapsed at `elapsed` seconds since the simulation start; None outside."""
        since = elapsed - self.offset
        if since < 0 or since >= self.duration:
            return None
        return since / self.duration if self.duration else 0.0

    @property
    def adds_traffic(self) -> bool:
        """Whether the scenario brings extra sessions (a campaign, bots)."""
        return self.kind.name in ("marketing_campaign", "bot_surge")

    @property
    def is_bot(self) -> bool:
        """Whether the extra sessions are bots (they browse and never buy)."""
        return self.kind.name == "bot_surge"

    def hits(self, channel: Channel) -> bool:
        """Whether the scenario applies to events on this channel."""
        return self.channel is None or self.channel == channel

    def effects(self, elapsed: float, channel: Channel) -> Effects:
        """What this scenario changes for an event on `channel` at `elapsed` seconds."""
        progress = self.progress(elapsed)
        if progress is None or not self.hits(channel):
            return NEUTRAL
        strength = max(0.0, self.intensity)
        match self.kind.name:
            case "payment_outage":
                return Effects(purchase=max(0.0, 1.0 - strength), payment_errors=True)
            case "broken_add_to_cart":
                return Effects(add_to_cart=max(0.0, 1.0 - strength))
            case "slow_checkout":
                ramp = min(1.0, strength) * progress**2  # slow start, then worse and worse
                return Effects(
                    payment=1.0 - 0.4 * ramp,
                    purchase=1.0 - ramp,
                    checkout_delay=1.0 + 6.0 * ramp,
                )
            case "tracking_outage":
                if strength >= 1.0:
                    return Effects(tracked=False)
                return Effects(lost=strength)
            case "checkout_outage":
                return Effects(payment=max(0.0, 1.0 - strength))
            case "checkout_degradation":
                # Six equal steps, the first at the onset: the last one reaches 1 − intensity.
                level = (min(5, int(progress * 6)) + 1) / 6
                return Effects(payment=max(0.0, 1.0 - min(1.0, strength) * level))
            case "negative_reviews":
                return Effects(review=1.0 + 3.0 * strength, sentiment_shift=-1.1 * strength)
            case _:
                return NEUTRAL

    def extra_arrivals(self, elapsed: float) -> float:
        """Extra session arrivals (as a fraction of the base rate) this scenario adds now.

        For a bot surge the simulator scales this to the channel's product views (see
        `Simulator.timed_events`); here it is 1 inside the window.
        """
        if not self.adds_traffic or self.progress(elapsed) is None:
            return 0.0
        return 1.0 if self.is_bot else max(0.0, self.intensity)


_SPEC = re.compile(
    r"^(?P<name>[a-z_]+)(?::(?P<channel>[a-z_]+))?"
    r"@(?P<offset>[0-9][0-9a-z.]*)(?:\+(?P<duration>[0-9][0-9a-z.]*))?"
    r"(?:\*(?P<intensity>[0-9.]+))?$"
)


def parse_scenario(spec: str) -> Scenario:
    """Parse `NAME[:CHANNEL]@OFFSET[+DURATION][*INTENSITY]`, e.g. `payment_outage@2h+15m`.

    OFFSET is event time after the simulation start; DURATION defaults per scenario kind.

    >>> s = parse_scenario("payment_outage:web@90s+5m")
    >>> (s.name, s.channel, s.offset, s.duration)
    ('payment_outage', <Channel.WEB: 'web'>, 90.0, 300.0)
    """
    match = _SPEC.match(spec.strip().lower())
    if not match:
        raise ValueError(
            f"{spec!r}: expected NAME[:CHANNEL]@OFFSET[+DURATION][*INTENSITY], "
            "e.g. payment_outage@2h+15m or payment_outage:web@30m"
        )
    name = match["name"]
    if name not in KINDS:
        raise ValueError(f"{spec!r}: unknown scenario {name!r}; known: {', '.join(KINDS)}")
    kind = KINDS[name]
    channel = kind.default_channel
    if match["channel"]:
        try:
            channel = Channel(match["channel"])
        except ValueError:
            known = ", ".join(c.value for c in Channel)
            raise ValueError(
                f"{spec!r}: unknown channel {match['channel']!r}; known: {known}"
            ) from None
    duration = parse_duration(match["duration"]) if match["duration"] else kind.default_duration
    intensity = float(match["intensity"]) if match["intensity"] else kind.default_intensity
    return Scenario(
        kind=kind,
        offset=parse_duration(match["offset"]),
        duration=duration,
        channel=channel,
        intensity=intensity,
        _label=spec.strip(),
    )


def scenario(
    name: str,
    offset: float,
    duration: float | None = None,
    channel: Channel | str | None = "default",
    intensity: float | None = None,
) -> Scenario:
    """Build a scenario in code (tests, the `run` command); defaults come from the kind."""
    kind = KINDS[name]
    return Scenario(
        kind=kind,
        offset=offset,
        duration=kind.default_duration if duration is None else duration,
        channel=kind.default_channel
        if channel == "default"
        else Channel(channel)
        if channel
        else None,
        intensity=kind.default_intensity if intensity is None else intensity,
    )


def describe(item: Scenario) -> str:
    """`name:channel@offset+duration` for a scenario."""
    where = f":{item.channel.value}" if item.channel else ""
    return f"{item.name}{where}@{format_duration(item.offset)}+{format_duration(item.duration)}"
