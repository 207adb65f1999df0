"""docs/CONFIGURATION.md lists exactly the settings the services read."""

from pathlib import Path

from journeywatch.cli.configdoc import render

DOC = Path(__file__).parents[2] / "docs" / "CONFIGURATION.md"


def test_configuration_doc_is_current() -> None:
    assert DOC.read_text() == render(), (
        "regenerate: .venv/bin/python -m journeywatch.cli.configdoc docs/CONFIGURATION.md"
    )


def test_contract_variables_are_documented() -> None:
    text = render()
    for name in (
        "JOURNEYWATCH_KAFKA_BOOTSTRAP_SERVERS",
        "JOURNEYWATCH_DATABASE_URL",
        "JOURNEYWATCH_INGEST_PORT",
        "JOURNEYWATCH_API_PORT",
        "JOURNEYWATCH_DETECTOR_METRICS_PORT",
        "JOURNEYWATCH_WINDOW_SECONDS",
        "JOURNEYWATCH_MAX_EVENT_AGE_SECONDS",
        "JOURNEYWATCH_MAX_EVENT_FUTURE_SECONDS",
    ):
        assert f"`{name}`" in text, name
