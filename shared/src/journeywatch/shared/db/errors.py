"""Which database errors a retry can fix (transient) and which it cannot (permanent)."""

from __future__ import annotations

from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    IntegrityError,
    NotSupportedError,
    OperationalError,
    ProgrammingError,
)

# The driver classes that mean "these rows or this statement are wrong": a retry replays them.
PERMANENT_CLASSES: tuple[type[DBAPIError], ...] = (
    IntegrityError,
    DataError,
    ProgrammingError,
    NotSupportedError,
)
# SQLite reports a schema that does not match the code as an OperationalError, the class it also
# uses for "database is locked" and I/O errors (transient). PostgreSQL raises UndefinedTable /
# UndefinedColumn, a ProgrammingError, for the same cause. These messages are sqlite3's own.
SQLITE_SCHEMA_MESSAGES: tuple[str, ...] = (
    "no such table",
    "no such column",
    "has no column named",
    "no such index",
    "no such function",
    "values were supplied",  # "table t has 3 columns but 4 values were supplied"
)


def is_permanent(exc: BaseException) -> bool:
    """Whether retrying the statement that raised `exc` cannot succeed.

    Parameters
    ----------
    exc
        The exception SQLAlchemy raised (anything else is not a database error: False).

    Returns
    -------
    bool
        True for constraint, data and schema errors (a missing table or column, on SQLite as on
        PostgreSQL); False for what may pass (locked database, lost connection, timeouts).

    Examples
    --------
    >>> import sqlite3
    >>> def wrapped(cls, orig):
    ...     return cls("INSERT INTO t VALUES (?)", (1,), orig)
    >>> is_permanent(wrapped(OperationalError, sqlite3.OperationalError("no such table: t")))
    True
    >>> is_permanent(wrapped(OperationalError, sqlite3.OperationalError("database is locked")))
    False
    >>> is_permanent(wrapped(IntegrityError, sqlite3.IntegrityError("UNIQUE constraint failed")))
    True
    >>> is_permanent(TimeoutError())
    False
    """
    if isinstance(exc, PERMANENT_CLASSES):
        return True
    if isinstance(exc, OperationalError):
        message = str(exc.orig if exc.orig is not None else exc).lower()
        return any(text in message for text in SQLITE_SCHEMA_MESSAGES)
    return False
