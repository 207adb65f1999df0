"""The notifier's docstring examples run with the suite (pytest only collects tests/)."""

from __future__ import annotations

import doctest
import importlib

import pytest


@pytest.mark.parametrize(
    "module", ["journeywatch.notifier.routing", "journeywatch.notifier.formats"]
)
def test_docstring_examples(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0
    assert result.failed == 0
