"""The evaluation CLI's ``--set`` overrides reach the core's configuration, and bad ones are refused."""

from __future__ import annotations

import doctest

import bench.detection_eval.__main__ as cli
import pytest

from journeywatch.detector.core import CoreConfig


def test_the_module_doctests_pass() -> None:
    result = doctest.testmod(cli)
    assert result.failed == 0
    assert result.attempted >= 2


def test_overrides_are_typed_by_the_fields_default() -> None:
    config = cli.config_with(
        [
            "touchpoint_sparse_dispersion=on",
            "warmup_windows=12",
            "contributor_dimensions=channel,device",
        ]
    )
    assert config.touchpoint_sparse_dispersion is True
    assert config.warmup_windows == 12
    assert config.contributor_dimensions == ("channel", "device")
    assert cli.config_with([]) == CoreConfig()


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("speculative=maybe", "not a boolean"),
        ("warmup_windows=ten", "invalid literal"),
        ("z_threshold", "expected FIELD=VALUE"),
        ("no_such_field=1", "has no field"),
    ],
)
def test_a_bad_override_is_a_usage_error(
    item: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli._args(["--set", item])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err
