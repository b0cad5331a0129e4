"""H12: every exception the relay, the inbox and the stores can meet is classed on purpose. Each row
of each translation table is exercised here, with the drivers' real exception classes."""

from __future__ import annotations

import random
import sqlite3

import psycopg
import psycopg.errors as pge
import pytest

from outboxkit.core.retry import DEFAULT_MAX_ATTEMPTS, Outcome, classify, judge
from outboxkit.errors import (
    PermanentError,
    SchemaError,
    TransientError,
    UnavailableError,
    UnroutableError,
)
from outboxkit.stores.postgres import storable
from outboxkit.stores.postgres import translate as pg_translate
from outboxkit.stores.registry import translate_db_error
from outboxkit.stores.sqlite import translate as sqlite_translate

URL = "postgresql://u:pw@h/db"


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (psycopg.OperationalError("connection to server lost"), UnavailableError),  # no SQLSTATE
        (psycopg.InterfaceError("the connection is closed"), UnavailableError),
        (pge.AdminShutdown("terminating connection due to administrator command"), UnavailableError),  # 57P01
        (pge.CannotConnectNow("the database system is starting up"), UnavailableError),  # 57P03
        (pge.ReadOnlySqlTransaction("cannot execute INSERT in a read-only transaction"), UnavailableError),
        (pge.IdleInTransactionSessionTimeout("terminating"), UnavailableError),  # 25P03
        (pge.InsufficientPrivilege("permission denied for table outbox"), UnavailableError),  # 42501
        (pge.DiskFull("could not extend file"), UnavailableError),  # 53100
        (pge.TooManyConnections("too many clients"), UnavailableError),  # 53300
        (pge.ConnectionFailure("connection failure"), UnavailableError),  # 08006
        (pge.SerializationFailure("could not serialize access"), TransientError),  # 40001
        (pge.DeadlockDetected("deadlock detected"), TransientError),  # 40P01
        (pge.QueryCanceled("canceling statement due to statement timeout"), TransientError),  # 57014
        (pge.LockNotAvailable("could not obtain lock"), TransientError),  # 55P03
        (pge.UndefinedTable('relation "outbox" does not exist'), SchemaError),  # 42P01
        (pge.UndefinedColumn('column "bucket" does not exist'), SchemaError),  # 42703
        (pge.InvalidSchemaName('schema "x" does not exist'), SchemaError),  # 3F000
        (pge.CharacterNotInRepertoire("invalid byte sequence"), TransientError),  # anything else
        (pge.ForeignKeyViolation("violates foreign key constraint"), TransientError),
        (psycopg.DatabaseError("something nobody listed"), UnavailableError),  # no SQLSTATE: the link
    ],
)
def test_postgres_translation_table(exc: psycopg.Error, kind: type[Exception]) -> None:
    translated = pg_translate(URL, exc)
    assert type(translated) is kind, (exc, translated)
    assert "pw@" not in str(translated), "the password never reaches the message"


def test_read_only_node_says_what_happened() -> None:
    message = str(pg_translate(URL, pge.ReadOnlySqlTransaction("read-only")))
    assert "read-only" in message and "writable primary" in message


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (sqlite3.OperationalError("database is locked"), TransientError),
        (sqlite3.OperationalError("database table is locked"), TransientError),
        (sqlite3.OperationalError("disk I/O error"), UnavailableError),
        (sqlite3.OperationalError("unable to open database file"), UnavailableError),
        (sqlite3.OperationalError("database or disk is full"), UnavailableError),
        (sqlite3.OperationalError("attempt to write a readonly database"), UnavailableError),
        (sqlite3.DatabaseError("file is not a database"), UnavailableError),
        (sqlite3.DatabaseError("database disk image is malformed"), UnavailableError),
        (sqlite3.InterfaceError("Cannot operate on a closed database."), UnavailableError),
        (sqlite3.OperationalError("no such table: outbox"), SchemaError),
        (sqlite3.OperationalError("no such column: bucket"), SchemaError),
        (sqlite3.IntegrityError("UNIQUE constraint failed"), TransientError),
        (sqlite3.ProgrammingError("something nobody listed"), TransientError),
    ],
)
def test_sqlite_translation_table(exc: sqlite3.Error, kind: type[Exception]) -> None:
    assert type(sqlite_translate("/tmp/x.db", exc)) is kind


def test_the_inbox_uses_the_store_tables_and_leaves_other_exceptions_alone() -> None:
    assert isinstance(translate_db_error(URL, pge.AdminShutdown("x")), UnavailableError)
    assert isinstance(
        translate_db_error("sqlite:///x.db", sqlite3.OperationalError("disk I/O error")), UnavailableError
    )
    other = ValueError("a handler bug")
    assert translate_db_error(URL, other) is other


def test_storable_error_text_has_no_nul_and_no_lone_surrogate() -> None:
    assert "\x00" not in storable("broker said \x00 bad")
    storable("broker said \udcff bad").encode("utf-8")  # no UnicodeEncodeError
    assert len(storable("x" * 5000)) == 2000


# -- what the relay does with a publish failure (core.retry) ----------------------------------------


def test_unavailable_is_never_counted() -> None:
    verdict = judge(UnavailableError("broker gone"), attempts=DEFAULT_MAX_ATTEMPTS + 5)
    assert verdict.outcome is Outcome.RECONNECT and not verdict.counted


def test_permanent_is_dead_at_once() -> None:
    verdict = judge(PermanentError("too large"), attempts=0)
    assert verdict.outcome is Outcome.DEAD and verdict.counted


@pytest.mark.parametrize("error", [TransientError("timeout"), UnroutableError("no stream"), RuntimeError("surprise")])
def test_transient_unroutable_and_unknown_are_counted_then_dead(error: Exception) -> None:
    rng = random.Random(1)
    delays = []
    for attempts in range(4):
        verdict = judge(error, attempts, max_attempts=5, rng=rng)
        assert verdict.outcome is Outcome.RETRY and verdict.counted
        delays.append(verdict.delay)
    assert delays == sorted(delays) or max(delays) <= 60, "backoff grows (with jitter), capped"
    final = judge(error, 4, max_attempts=5, rng=rng)
    assert final.outcome is Outcome.DEAD
    assert str(final.error).startswith("gave up after 5 attempts")


def test_an_exception_nobody_classified_becomes_transient_with_its_type() -> None:
    error = classify(KeyError("header"))
    assert isinstance(error, TransientError) and "KeyError" in str(error)
    assert classify(UnroutableError("x")).__class__ is UnroutableError


def test_retry_backoff_is_bounded() -> None:
    verdict = judge(TransientError("x"), attempts=30, max_attempts=100, rng=random.Random(3))
    assert 30.0 <= verdict.delay <= 60.0


# -- H13: an event a client cannot encode fails the same way every time: dead letter now --------------


@pytest.mark.parametrize(
    "exc",
    [
        UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"),
        RecursionError("maximum recursion depth exceeded while encoding a JSON object"),
        ValueError("header value contains a NUL"),
    ],
    ids=["lone-surrogate", "recursion", "value-error"],
)
def test_encoding_failures_nobody_classified_are_permanent(exc: BaseException) -> None:
    assert isinstance(classify(exc), PermanentError)
    verdict = judge(exc, attempts=0)
    assert verdict.outcome is Outcome.DEAD
    assert type(exc).__name__ in str(verdict.error)
