"""The MariaDB/MySQL translation table (H12), row by row, for both drivers (PyMySQL and asyncmy
raise the same codes from two exception hierarchies)."""

from __future__ import annotations

import importlib.util

import asyncmy.errors
import pymysql.err
import pytest

from outboxkit.errors import SchemaError, TransientError, UnavailableError
from outboxkit.stores.mariadb.driver import translate
from outboxkit.stores.registry import translate_db_error

DRIVERS = [pymysql.err, asyncmy.errors]


@pytest.mark.parametrize("driver", DRIVERS, ids=["pymysql", "asyncmy"])
@pytest.mark.parametrize(
    ("cls", "code", "kind"),
    [
        ("ProgrammingError", 1146, SchemaError),  # table doesn't exist
        ("OperationalError", 2003, UnavailableError),  # can't connect
        ("OperationalError", 2006, UnavailableError),  # server has gone away
        ("OperationalError", 2013, UnavailableError),  # lost connection during query
        ("OperationalError", 1053, UnavailableError),  # server shutdown in progress
        ("OperationalError", 1927, UnavailableError),  # connection killed
        ("OperationalError", 4031, UnavailableError),  # idle timeout disconnect
        ("OperationalError", 1040, UnavailableError),  # too many connections
        ("InternalError", 1290, UnavailableError),  # --read-only (a replica after fail-over)
        ("OperationalError", 1836, UnavailableError),  # read-only mode
        ("OperationalError", 1205, TransientError),  # lock wait timeout
        ("OperationalError", 1213, TransientError),  # deadlock
        ("InterfaceError", 0, UnavailableError),  # the client closed the connection
        ("ProgrammingError", 1064, TransientError),  # an error nobody listed: counted, never fatal
        ("DataError", 1406, TransientError),  # data too long: also unlisted
    ],
)
def test_each_code_has_a_class_on_purpose(driver: object, cls: str, code: int, kind: type) -> None:
    exc = getattr(driver, cls)(code, "message from the server")
    ours = translate(exc, "mysql://u:***@h/db")
    assert type(ours) is kind, (cls, code, ours)
    assert "message from the server" in str(ours)


def test_a_read_only_node_is_an_outage_not_a_bad_row() -> None:
    ours = translate(pymysql.err.InternalError(1290, "The MariaDB server is running with the --read-only option"), "x")
    assert isinstance(ours, UnavailableError)


def test_foreign_exceptions_pass_unchanged_and_ours_stay_ours() -> None:
    assert translate(ValueError("not a driver error"), "x") is None
    mine = TransientError("already ours")
    assert translate(mine, "x") is mine
    assert isinstance(translate(ConnectionResetError("reset"), "x"), UnavailableError)


def test_registry_routes_by_url_and_never_leaks_the_password() -> None:
    exc = pymysql.err.OperationalError(2003, "Can't connect to MySQL server")
    ours = translate_db_error("mysql://app:hunter2@db:3306/app", exc)
    assert isinstance(ours, UnavailableError)
    assert "hunter2" not in str(ours)


def test_a_second_copy_of_pymysql_err_is_still_recognised() -> None:
    # Django on PyMySQL (`pymysql.install_as_MySQLdb()`) loads PyMySQL's err.py a second time as
    # MySQLdb.err; its classes are other objects than pymysql.err's, with the same names.
    spec = importlib.util.spec_from_file_location("pymysql.err", pymysql.err.__file__)
    assert spec is not None and spec.loader is not None
    copy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(copy)  # not registered in sys.modules: a copy beside the real one
    exc = copy.OperationalError(2003, "Can't connect to MySQL server")
    assert not isinstance(exc, pymysql.err.OperationalError)
    assert isinstance(translate(exc, "x"), UnavailableError)
    assert isinstance(translate(copy.IntegrityError(1062, "Duplicate entry"), "x"), TransientError)
    # ... and under the name Django's import gives it
    renamed = type("OperationalError", (Exception,), {"__module__": "MySQLdb.err"})
    assert isinstance(translate(renamed(2013, "Lost connection"), "x"), UnavailableError)
