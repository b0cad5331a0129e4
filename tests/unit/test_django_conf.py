"""outboxkit.contrib.django without a database: URLs from DATABASES entries, and how a management
command's arguments are split between Django, outboxkit's global options and the command."""

from __future__ import annotations

import pytest

pytest.importorskip("django")

from outboxkit.contrib.django.conf import url_from_settings
from outboxkit.contrib.django.management.commands._cli import split_args, split_globals
from outboxkit.errors import ConfigurationError
from outboxkit.stores.registry import database_for


def test_postgres_url_quotes_credentials_and_keeps_libpq_options() -> None:
    url = url_from_settings(
        "postgresql",
        {
            "NAME": "shop",
            "USER": "app",
            "PASSWORD": "p@ss:w/rd",
            "HOST": "db.internal",
            "PORT": 5433,
            "OPTIONS": {"sslmode": "require", "options": "-c search_path=shop", "pool": True},
        },
    )
    assert url == (
        "postgresql://app:p%40ss%3Aw%2Frd@db.internal:5433/shop?sslmode=require&options=-c%20search_path%3Dshop"
    )
    assert database_for(url).name == "postgresql"


def test_postgres_socket_and_ipv6_hosts() -> None:
    assert url_from_settings("postgresql", {"NAME": "shop"}) == "postgresql:///shop"
    assert url_from_settings("postgresql", {"NAME": "shop", "HOST": "::1", "PORT": "5432"}) == (
        "postgresql://[::1]:5432/shop"
    )


def test_mysql_and_sqlite_urls(tmp_path: object) -> None:
    assert url_from_settings("mysql", {"NAME": "shop", "USER": "root"}) == "mysql://root@localhost/shop"
    assert url_from_settings("sqlite", {"NAME": f"{tmp_path}/db.sqlite3"}) == f"sqlite:///{tmp_path}/db.sqlite3"


@pytest.mark.parametrize("name", [":memory:", "", "file:memdb1?mode=memory&cache=shared"])
def test_sqlite_in_memory_is_refused(name: str) -> None:
    with pytest.raises(ConfigurationError, match="needs a database file"):
        url_from_settings("sqlite", {"NAME": name})


def test_unknown_vendor_asks_for_db_url() -> None:
    with pytest.raises(ConfigurationError, match="DB_URL"):
        url_from_settings("oracle", {"NAME": "x"})


def test_django_options_are_picked_out_in_order() -> None:
    argv = ["--window", "10", "--settings=proj.settings", "--batch-size", "5", "--traceback", "-v", "2", "--debug"]
    assert split_args(argv) == (
        ["--settings=proj.settings", "--traceback", "-v", "2"],
        ["--window", "10", "--batch-size", "5", "--debug"],
    )
    assert split_globals(["--window", "10", "--debug", "--log-format", "json", "-q"]) == (
        ["--debug", "--log-format", "json", "-q"],
        ["--window", "10"],
    )


def test_relay_settings_become_flags() -> None:
    from outboxkit.contrib.django.management.commands._cli import relay_flags

    relay = {"batch_size": 500, "skip_dead_keys": True, "poll_interval": 0.5, "other": False}
    assert relay_flags({"SOURCE": "/shop", "RELAY": relay}) == [
        "--source",
        "/shop",
        "--batch-size",
        "500",
        "--skip-dead-keys",
        "--poll-interval",
        "0.5",
    ]
