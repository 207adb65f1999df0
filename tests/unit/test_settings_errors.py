"""Bad environment values become one line naming the variable, the expected form and the value."""

import pytest

from journeywatch.api.settings import ApiSettings
from journeywatch.detector.settings import DetectorSettings
from journeywatch.ingest.settings import IngestSettings
from journeywatch.shared.settings import CommonSettings, SettingsError, load_settings


def test_window_seconds_in_minutes_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOURNEYWATCH_WINDOW_SECONDS", "1m")
    with pytest.raises(SettingsError) as caught:
        load_settings(DetectorSettings)
    assert str(caught.value) == (
        "JOURNEYWATCH_WINDOW_SECONDS: expected a whole number of seconds, got '1m'"
    )


def test_every_bad_variable_gets_its_own_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOURNEYWATCH_LOG_LEVEL", "verbose")
    monkeypatch.setenv("JOURNEYWATCH_LOG_FORMAT", "xml")
    monkeypatch.setenv("JOURNEYWATCH_DETECTOR_Z_THRESHOLD", "-1")
    monkeypatch.setenv("JOURNEYWATCH_DETECTOR_SPECULATIVE", "maybe")
    with pytest.raises(SettingsError) as caught:
        load_settings(DetectorSettings)
    assert sorted(str(caught.value).splitlines()) == [
        "JOURNEYWATCH_DETECTOR_SPECULATIVE: expected true or false, got 'maybe'",
        "JOURNEYWATCH_DETECTOR_Z_THRESHOLD: expected a number greater than 0.0, got '-1'",
        "JOURNEYWATCH_LOG_FORMAT: expected one of auto, json or console, got 'xml'",
        "JOURNEYWATCH_LOG_LEVEL: expected one of DEBUG, INFO, WARNING, ERROR, CRITICAL, "
        "got 'verbose'",
    ]


@pytest.mark.parametrize("cls", [CommonSettings, IngestSettings, ApiSettings])
def test_port_that_is_not_a_number(cls: type, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOURNEYWATCH_KAFKA_TOPIC_PARTITIONS", "six")
    with pytest.raises(
        SettingsError,
        match=r"^JOURNEYWATCH_KAFKA_TOPIC_PARTITIONS: expected a "
        r"whole number, got 'six'$",
    ):
        load_settings(cls)


def test_log_level_is_case_insensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOURNEYWATCH_LOG_LEVEL", "debug")
    assert load_settings(CommonSettings).log_level == "DEBUG"
