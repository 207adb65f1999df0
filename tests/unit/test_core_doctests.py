"""Every detector-core module's doctests run in the suite (the examples are part of the docs)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import journeywatch.detector.core as core

MODULES = sorted(f"{core.__name__}.{info.name}" for info in pkgutil.iter_modules(core.__path__))


@pytest.mark.parametrize("name", MODULES, ids=lambda n: n.rsplit(".", 1)[-1])
def test_the_module_doctests_pass(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


def test_the_drift_test_module_has_examples() -> None:
    module = importlib.import_module(f"{core.__name__}.cohort_drift")
    assert doctest.testmod(module).attempted >= 5
