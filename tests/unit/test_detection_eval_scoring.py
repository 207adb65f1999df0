"""Scoring of the incident corpus: hand-made anomalies vs labels → detected, strict, false alerts, delay."""

from __future__ import annotations

import doctest
import importlib
import itertools
from datetime import UTC, datetime
from pathlib import Path

import pytest
from bench.detection_eval.corpus import DAY, FAMILY_NAMES, Incident, Run, build_run
from bench.detection_eval.runner import stream
from bench.detection_eval.scoring import (
    Detection,
    detections,
    false_alerts,
    merge_alerts,
    score_incident,
    score_run,
    summarize,
)

from journeywatch.shared.anomalies import (
    Anomaly,
    AnomalyChange,
    AnomalyStatus,
    AnomalyType,
    Contributor,
    LifecycleChange,
    Metric,
    Severity,
)

T0 = datetime(2026, 3, 2, tzinfo=UTC).timestamp()  # run start (history day)
ONSET = T0 + DAY + 10 * 3600  # incident at 10:00 on the first scored day
MIN = 60.0


def payment_incident(channel: str | None = "mobile") -> Incident:
    return Incident(
        id="mid-s1-payment_failure",
        family="payment_failure",
        level="high",
        intensity=0.6,
        start=ONSET,
        end=ONSET + 25 * MIN,
        channel=channel,
        stage="purchase",
        touchpoints=("purchase",),
        accepted=("conversion_drop", "cart_abandonment_spike", "stage_dropoff_spike"),
    )


def campaign_incident() -> Incident:
    return Incident(
        id="mid-s1-campaign",
        family="campaign",
        level="high",
        intensity=4.0,
        start=ONSET + 5 * 3600,
        end=ONSET + 7 * 3600,
        channel="email",
        stage="awareness",
        touchpoints=("email_open", "landing_view"),
        accepted=("traffic_surge",),
        forbidden=("conversion_drop", "cart_abandonment_spike", "stage_dropoff_spike"),
    )


def run_of(*incidents: Incident, days: int = 3, clean: tuple[int, ...] = ()) -> Run:
    return Run(
        volume="mid",
        seed=1,
        start=T0,
        days=days,
        sessions_per_day=50_000,
        incidents=incidents,
        clean_days=clean,
    )


def det(
    start: float,
    minutes: float = 3,
    type: str = "conversion_drop",
    stage: str = "purchase",
    channel: str | None = "mobile",
    detected: float | None = None,
    step: tuple[str, ...] = (),
    retracted: bool = False,
    ident: str | None = None,
    top_channel: str | None = None,
) -> Detection:
    return Detection(
        id=ident or f"{type}-{stage}-{channel}-{start}",
        type=type,
        stage=stage,
        channel=channel,
        metric="conversion_rate",
        start=start,
        end=start + minutes * MIN,
        detected=start + MIN if detected is None else detected,
        retracted=retracted,
        step=step,
        top_channel=top_channel,
    )


# -- one incident ------------------------------------------------------------------------------


def test_accepted_type_on_the_right_series_is_detected_strictly_with_its_delay() -> None:
    result = score_incident(payment_incident(), [det(ONSET + 2 * MIN, detected=ONSET + 3 * MIN)])
    assert (result.detected, result.strict, result.delay_windows) == (True, True, 3.0)


def test_wrong_type_is_not_a_detection_but_collateral() -> None:
    sentiment = det(ONSET + 5 * MIN, type="sentiment_drop", stage="post_purchase")
    result = score_incident(payment_incident(), [sentiment])
    assert (result.detected, result.strict, result.delay_windows) == (False, False, None)
    assert result.collateral == [sentiment]


def test_detection_must_open_within_two_minutes_of_the_incident() -> None:
    inc = payment_incident()
    just_before = det(inc.start - 1.5 * MIN, detected=inc.start - 0.5 * MIN)
    just_after = det(inc.end + 1.5 * MIN)
    too_late = det(inc.end + 2.5 * MIN)
    assert score_incident(inc, [just_after]).detected
    assert score_incident(inc, [just_before]).delay_windows == 0.0
    assert not score_incident(inc, [too_late]).detected
    # Open since long before the onset (still open during it): does not announce the incident.
    stale = det(inc.start - 60 * MIN, minutes=90)
    assert not score_incident(inc, [stale]).detected
    alerts, _ = false_alerts(run_of(inc), [stale])
    assert [a.members for a in alerts] == [[stale]]


def test_wrong_channel_or_stage_or_step_is_detected_but_not_strict() -> None:
    inc = payment_incident()
    for wrong in (
        det(ONSET, channel="web"),
        det(ONSET, stage="consideration"),
        det(ONSET, step=("product_view", "add_to_cart")),
        det(ONSET, channel=None),  # all-channel without a contributor naming mobile
    ):
        result = score_incident(inc, [wrong])
        assert (result.detected, result.strict) == (True, False), wrong


def test_named_step_ending_at_the_broken_touchpoint_and_top_contributor_are_strict() -> None:
    inc = payment_incident()
    assert score_incident(inc, [det(ONSET, step=("payment_submitted", "purchase"))]).strict
    assert score_incident(inc, [det(ONSET, channel=None, top_channel="mobile")]).strict
    # A site-wide incident needs the all-channel series.
    site = payment_incident(channel=None)
    assert not score_incident(site, [det(ONSET, channel="mobile")]).strict
    assert score_incident(site, [det(ONSET, channel=None)]).strict


def test_retracted_anomaly_does_not_detect_and_the_earliest_match_sets_the_delay() -> None:
    inc = payment_incident()
    retracted = det(ONSET, detected=ONSET + 30, retracted=True)
    late = det(ONSET + 4 * MIN, detected=ONSET + 6 * MIN, type="cart_abandonment_spike")
    early = det(ONSET + 1 * MIN, detected=ONSET + 90, channel="web")
    assert not score_incident(inc, [retracted]).detected
    result = score_incident(inc, [retracted, late, early])
    assert (result.detected, result.strict, result.delay_windows) == (True, True, 1.5)


# -- false alerts ------------------------------------------------------------------------------


def test_false_alerts_merge_one_series_and_skip_history_and_explained_ones() -> None:
    inc = payment_incident()
    run = run_of(inc)
    found = [
        det(T0 + 3600),  # history day: not scored
        det(ONSET + 5 * MIN),  # during the incident: its detection
        det(
            inc.end + 20 * MIN, type="traffic_drop", stage="consideration"
        ),  # within settle: explained
        # Two openings of one series 10 minutes apart: one alert.
        det(ONSET + 4 * 3600, ident="a"),
        det(ONSET + 4 * 3600 + 13 * MIN, ident="b"),
        # Another series at the same time: a second alert.
        det(ONSET + 4 * 3600, channel="web", ident="c"),
        # A retracted provisional opening was published: it counts.
        det(ONSET + 8 * 3600, retracted=True, ident="d"),
        # Same series as a/b but an hour later: a new alert.
        det(ONSET + 5 * 3600, ident="e"),
    ]
    alerts, exposure = false_alerts(run, found)
    assert [[d.id for d in a.members] for a in alerts] == [["a", "b"], ["c"], ["e"], ["d"]]
    # Two scored days minus the incident's zone (2 min before to 30 min after its 25 minutes).
    assert exposure == pytest.approx(2 - (2 + 25 + 30) / 1440)


def test_conversion_anomaly_during_a_campaign_is_a_false_alert_and_surge_is_its_detection() -> None:
    campaign = campaign_incident()
    run = run_of(campaign)
    surge = det(campaign.start + 3 * MIN, type="traffic_surge", stage="awareness", channel="email")
    drop = det(campaign.start + 30 * MIN, stage="purchase", channel=None, ident="drop")
    result = score_run(run, [surge, drop])
    assert (result.incidents[0].detected, result.incidents[0].strict) == (True, True)
    assert [a.members[0].id for a in result.false_alerts] == ["drop"]
    summary = summarize([result], FAMILY_NAMES)
    assert summary.campaign_conversion_alerts == 1
    assert summary.false_alerts == 1


def test_merge_alerts_keeps_series_apart() -> None:
    a = det(ONSET, ident="a")
    b = det(ONSET + MIN, type="cart_abandonment_spike", ident="b")
    assert len(merge_alerts([a, b])) == 2


def test_summary_counts_recall_strict_delay_and_fa_per_day() -> None:
    inc = payment_incident()
    other = Incident(
        **{**payment_incident().__dict__, "id": "mid-s1-x", "start": ONSET + 6 * 3600,
           "end": ONSET + 6 * 3600 + 25 * MIN},
    )  # fmt: skip
    run = run_of(inc, other)
    found = [
        det(ONSET, detected=ONSET + 2 * MIN),  # strict, delay 2
        det(other.start, channel="web", detected=other.start + 4 * MIN),  # loose, delay 4
        det(ONSET + 12 * 3600),  # one false alert
    ]
    s = summarize([score_run(run, found)], FAMILY_NAMES)
    assert (s.cases, s.detected, s.strict, s.false_alerts) == (2, 2, 1, 1)
    assert (s.recall, s.strict_recall, s.median_delay) == (1.0, 0.5, 3.0)
    assert s.fa_per_day == pytest.approx(1 / (2 - 2 * 57 / 1440))
    assert s.per_family["payment_failure"] == (2, 2, 1, 3.0)
    assert (s.per_level["payment_failure", "high"], s.per_level["payment_failure", "low"]) == (
        (2, 2),
        (0, 0),
    )


# -- from the detector's lifecycle changes -------------------------------------------------------


def dt(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def change(
    kind: LifecycleChange,
    ident: str,
    window_start: float,
    detected: float,
    provisional: bool = False,
    channel: str | None = None,
    contributors: tuple[Contributor, ...] = (),
) -> AnomalyChange:
    anomaly = Anomaly(
        id=ident,
        type=AnomalyType.CONVERSION_DROP,
        status=AnomalyStatus.RESOLVED if kind is LifecycleChange.RESOLVED else AnomalyStatus.OPEN,
        journey="ecommerce",
        stage="purchase",
        channel=channel,
        metric=Metric.CONVERSION_RATE,
        window_start=dt(window_start),
        window_end=dt(window_start + MIN),
        observed=0.2,
        expected=0.9,
        lower=0.8,
        upper=1.0,
        score=0.99,
        severity=Severity.CRITICAL,
        contributors=list(contributors),
        opened_at=dt(window_start + MIN),
        updated_at=dt(window_start + MIN),
        detected_at=dt(detected),
        detector_version="test",
        model_version="test",
        provisional=provisional,
    )
    return AnomalyChange(change=kind, anomaly=anomaly, sequence=0)


def test_detections_fold_lifecycle_and_mark_retractions() -> None:
    opened, updated, resolved = (
        LifecycleChange.OPENED,
        LifecycleChange.UPDATED,
        LifecycleChange.RESOLVED,
    )
    share = Contributor(dimension="channel", value="mobile", observed=1, expected=9, share=0.8)
    changes = [
        change(opened, "kept", ONSET, ONSET + 72, provisional=True, contributors=(share,)),
        change(updated, "kept", ONSET, ONSET + 125),  # confirmed on time
        change(updated, "kept", ONSET + MIN, ONSET + 185),
        change(resolved, "kept", ONSET + MIN, ONSET + 400),
        change(opened, "gone", ONSET + 3600, ONSET + 3672, provisional=True),
        change(resolved, "gone", ONSET + 3600, ONSET + 3725, provisional=True),
    ]
    kept, gone = detections(changes)
    assert (kept.start, kept.end, kept.detected) == (ONSET, ONSET + 2 * MIN, ONSET + 72)
    assert (kept.retracted, kept.top_channel) == (False, "mobile")
    assert (gone.retracted, gone.top_channel) == (True, None)


def test_step_names_are_read_from_strings_and_objects() -> None:
    from bench.detection_eval.scoring import _names

    assert _names("checkout_started→payment_submitted") == ("checkout_started", "payment_submitted")
    assert _names({"from": "a", "to": "b"}) == ("a", "b")
    assert _names(None) == ()


# -- the corpus -------------------------------------------------------------------------------


def test_corpus_runs_are_reproducible_separated_and_cover_every_family() -> None:
    for volume in ("mid", "small"):
        for seed in (101, 102):
            run = build_run(volume, seed)
            assert run == build_run(volume, seed)
            assert sorted(i.family for i in run.incidents) == sorted(FAMILY_NAMES)
            spans = sorted((i.start, i.end) for i in run.incidents)
            assert spans[0][0] >= run.scored_start
            assert spans[-1][1] <= run.start + 3 * DAY  # the last day is clean
            assert all(b[0] - a[1] >= 2.5 * 3600 for a, b in itertools.pairwise(spans))
            night = next(i for i in run.incidents if i.family == "night_payment_failure")
            assert 2.0 <= (night.start % DAY) / 3600 < 4.0
    # Each family at both intensities across two consecutive seeds.
    levels = {(i.family, i.level) for s in (101, 102) for i in build_run("mid", s).incidents}
    assert len(levels) == 2 * len(FAMILY_NAMES)


@pytest.mark.parametrize("module", ["bench.detection_eval.corpus", "bench.detection_eval.scoring"])
def test_docstring_examples(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module))
    assert result.failed == 0


def test_cached_stream_reads_back_exactly_what_was_simulated(tmp_path: Path) -> None:
    run = Run(volume="small", seed=3, start=T0, days=1, sessions_per_day=400, incidents=(),
              clean_days=())  # fmt: skip
    fresh = list(stream(run, "ecommerce", None))
    written = list(stream(run, "ecommerce", tmp_path))
    [cached] = list(tmp_path.iterdir())
    assert cached.suffix == ".msgpack"
    assert fresh == written == list(stream(run, "ecommerce", tmp_path))
    # A stream of an older simulator for the same run is replaced, not kept beside it.
    stale = tmp_path / "small-s3-1d-0000000000000000.msgpack"
    cached.rename(stale)
    assert list(stream(run, "ecommerce", tmp_path)) == fresh
    assert [f.name for f in tmp_path.iterdir()] == [cached.name]
    assert len(fresh) > 1000
    assert [t for t, *_ in fresh] == sorted(t for t, *_ in fresh)


def test_false_alerts_on_clean_days_are_counted_apart() -> None:
    run = run_of(payment_incident(), days=4, clean=(3,))
    found = [det(T0 + 2 * DAY + 3600, ident="day2"), det(T0 + 3 * DAY + 3600, ident="clean")]
    s = summarize([score_run(run, found)], FAMILY_NAMES)
    assert (s.false_alerts, s.clean_days, s.clean_false_alerts) == (2, 1, 1)
