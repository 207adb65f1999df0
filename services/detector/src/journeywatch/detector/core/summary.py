"""One plain-language sentence per anomaly: what happened, where, expected vs observed, how long, cost.

>>> summarize(SummaryFacts(type="data_quality", journey="ecommerce", stage="awareness",
...     channel="mobile", metric="touchpoints", observed=0.0, expected=13.0, minutes=4,
...     total_observed=0.0, total_expected=52.0))
'ecommerce tracking on mobile went silent: 0 events for 4 min where ≈ 52 were expected (data quality: the events stopped, not necessarily the customers).'
>>> summarize(SummaryFacts(type="conversion_drop", journey="ecommerce", stage="consideration",
...     channel="mobile", metric="step_conversion", step="product_view→add_to_cart",
...     observed=0.01, expected=0.31, minutes=12, total_observed=2.0, total_expected=60.0,
...     value_per_unit=7.5, unit="completions"))
'ecommerce product_view→add_to_cart on mobile fell to 1% from ≈ 31% expected: 2 completions for 12 min where ≈ 60 were expected, ≈ 435 of revenue at risk.'
"""

from __future__ import annotations

from dataclasses import dataclass

_RATES = {"conversion_rate", "abandonment_rate", "dropoff_rate", "step_conversion"}
_VERBS = {
    "traffic_surge": "surged",
    "traffic_drop": "dropped",
    "conversion_drop": "fell",
    "cart_abandonment_spike": "rose",
    "stage_dropoff_spike": "rose",
    "sentiment_drop": "fell",
}


@dataclass(frozen=True)
class SummaryFacts:
    """What the sentence is made of (names as they appear in the anomaly)."""

    type: str
    journey: str
    stage: str
    channel: str | None
    metric: str
    observed: float
    expected: float
    minutes: float
    total_observed: float = 0.0
    total_expected: float = 0.0
    touchpoint: str | None = None
    step: str | None = None
    value_per_unit: float | None = None
    unit: str = "events"


def _num(x: float) -> str:
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10 or float(x).is_integer():
        return f"{x:.0f}"
    return f"{x:.1f}"


def _rate(x: float) -> str:
    return f"{100.0 * x:.0f}%"


def summarize(f: SummaryFacts) -> str:
    """The sentence (see the module examples)."""
    where = f" on {f.channel}" if f.channel else " on all channels"
    what = f.step or f.touchpoint
    subject = (
        f"{f.journey} {what}" if what else f"{f.journey} {f.stage} {f.metric.replace('_', ' ')}"
    )
    duration = f"{f.minutes:.0f} min"
    if f.type == "data_quality":
        if f.unit == "lost":
            return (
                f"{f.journey} tracking{where} is losing events: its funnel steps fell together, "
                f"{_num(f.total_observed)} completions for {duration} where ≈ "
                f"{_num(f.total_expected)} were expected (data quality: sessions arrive with "
                "events missing, not customers changing)."
            )
        if f.total_expected > 0:
            thing = (
                f"{f.journey} {f.touchpoint} events" if f.touchpoint else f"{f.journey} tracking"
            )
            verb = "stopped" if f.touchpoint else "went silent"
            if f.total_observed > 0:
                # A channel's stream fell most of the way without stopping (core.touchpoints).
                verb = "is losing events"
            return (
                f"{thing}{where} {verb}: {_num(f.total_observed)} events for {duration} where "
                f"≈ {_num(f.total_expected)} were expected (data quality: the events stopped, "
                "not necessarily the customers)."
            )
        return (
            f"{f.journey} {f.stage}{where}: {_num(f.observed)} late events in the latest window "
            f"(≈ {_num(f.expected)} tolerated) — data quality, the figures are incomplete."
        )
    verb = _VERBS.get(f.type, "changed")
    if f.metric in _RATES:
        head = f"{subject}{where} {verb} to {_rate(f.observed)} from ≈ {_rate(f.expected)} expected"
    elif f.metric == "sentiment_mean":
        head = f"{subject}{where} {verb} to {f.observed:+.2f} from ≈ {f.expected:+.2f} expected"
    else:
        head = (
            f"{subject}{where} {verb}: {_num(f.observed)} {f.unit} in the latest window where "
            f"≈ {_num(f.expected)} were expected"
        )
        if f.total_expected > 0:
            head = (
                f"{subject}{where} {verb}: {_num(f.total_observed)} {f.unit} for {duration} where "
                f"≈ {_num(f.total_expected)} were expected"
            )
        return head + "."
    if f.total_expected > 0:
        head += (
            f": {_num(f.total_observed)} {f.unit} for {duration} where ≈ "
            f"{_num(f.total_expected)} were expected"
        )
    else:
        head += f" ({duration})"
    missing = f.total_expected - f.total_observed
    if f.value_per_unit and missing > 0:
        head += f", ≈ {_num(missing * f.value_per_unit)} of revenue at risk"
    return head + "."
