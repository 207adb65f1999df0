"""The stage runners' lock: exclusive across tasks, re-entrant within one (its doctest)."""

from __future__ import annotations

import doctest

from journeywatch.detector import task_lock


def test_task_lock_doctests() -> None:
    result = doctest.testmod(task_lock)
    assert result.attempted >= 1
    assert result.failed == 0
