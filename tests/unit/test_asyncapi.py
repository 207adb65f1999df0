"""docs/asyncapi.yaml describes the real topics, keys and payloads."""

from datetime import UTC, datetime
from pathlib import Path

import yaml

from journeywatch.shared import topics
from journeywatch.shared.anomalies import (
    Anomaly,
    AnomalyChange,
    AnomalyStatus,
    AnomalyType,
    FeedbackCommand,
    LifecycleChange,
    Metric,
    Severity,
)

DOC = yaml.safe_load((Path(__file__).parents[2] / "docs" / "asyncapi.yaml").read_text())


def test_every_topic_is_documented() -> None:
    # The notifier's dead letters too: created only by the (optional) notifier, not in ALL.
    documented = {c["address"] for c in DOC["channels"].values()}
    assert documented == {*topics.ALL, topics.NOTIFICATIONS_DLQ}


def test_anomaly_envelope_matches_the_documented_fields() -> None:
    moment = datetime(2026, 3, 2, 12, tzinfo=UTC)
    anomaly = Anomaly(
        id="an_x", type=AnomalyType.CONVERSION_DROP, status=AnomalyStatus.OPEN, journey="ecommerce",
        stage="purchase", channel="mobile", metric=Metric.CONVERSION_RATE, window_start=moment,
        window_end=moment, observed=0.1, expected=0.8, lower=0.6, upper=0.95, score=0.9,
        severity=Severity.CRITICAL, opened_at=moment, updated_at=moment, detected_at=moment,
        detector_version="d", model_version="m",
    )  # fmt: skip
    envelope = AnomalyChange(
        change=LifecycleChange.OPENED, anomaly=anomaly, sequence=0
    ).to_cloudevent()
    payload = DOC["components"]["messages"]["anomalyChange"]["payload"]
    assert set(payload["required"]) <= set(envelope)
    assert set(envelope) <= set(payload["properties"])
    data = payload["properties"]["data"]
    assert set(data["required"]) <= set(envelope["data"])
    assert set(envelope["data"]) - {"schema_version"} <= set(data["properties"])
    assert envelope["type"] in payload["properties"]["type"]["enum"]
    assert set(data["properties"]["type"]["enum"]) == {t.value for t in AnomalyType}
    assert set(data["properties"]["metric"]["enum"]) == {m.value for m in Metric}


def test_feedback_command_fields_are_documented() -> None:
    documented = DOC["components"]["messages"]["feedbackCommand"]["payload"]
    assert set(documented["properties"]) == set(FeedbackCommand.model_fields)
    assert set(documented["required"]) == {
        n for n, f in FeedbackCommand.model_fields.items() if f.is_required()
    }


def test_anomaly_examples_are_what_the_detector_publishes() -> None:
    message = DOC["components"]["messages"]["anomalyChange"]
    data_schema = message["payload"]["properties"]["data"]
    examples = {e["name"]: e["payload"] for e in message["examples"]}
    assert set(examples) == {"stepConversionDrop", "touchpointSilence"}
    for envelope in examples.values():
        anomaly = Anomaly.model_validate(envelope["data"])
        change = LifecycleChange(envelope["type"].rsplit(".", 1)[1])
        sequence = int(envelope["id"].rsplit(":", 1)[1])
        # YAML keeps datetimes as the strings the code writes: compare as JSON.
        assert (
            envelope
            == AnomalyChange(change=change, anomaly=anomaly, sequence=sequence).to_cloudevent()
        )
        assert set(data_schema["required"]) <= set(envelope["data"])
        assert set(envelope["data"]) - {"schema_version"} <= set(data_schema["properties"])
        assert anomaly.summary  # the examples show the sentence a human reads
    step = Anomaly.model_validate(examples["stepConversionDrop"]["data"])
    assert (step.metric, step.step, step.touchpoint) == (
        Metric.STEP_CONVERSION,
        "product_view→add_to_cart",
        None,
    )
    assert step.onset is not None
    assert step.onset < step.opened_at
    silence = Anomaly.model_validate(examples["touchpointSilence"]["data"])
    assert (silence.type, silence.metric, silence.touchpoint) == (
        AnomalyType.DATA_QUALITY,
        Metric.TOUCHPOINT_COUNT,
        "add_to_cart",
    )


def test_detail_fields_are_documented_as_optional() -> None:
    data = DOC["components"]["messages"]["anomalyChange"]["payload"]["properties"]["data"]
    # Consumers of older messages must not require them; the model gives them defaults.
    for name in ("step", "touchpoint", "summary", "onset"):
        assert name in data["properties"]
        assert name not in data["required"]
        assert not Anomaly.model_fields[name].is_required()
