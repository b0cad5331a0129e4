"""URL helpers: a secret never reaches a log line."""

from __future__ import annotations

import pytest

from outboxkit.core.urls import redact_url, scheme_of


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u:secret@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:secret@h:5432/db?sslmode=require", "postgresql://u:***@h:5432/db?sslmode=require"),
        ("amqp://guest:secret@127.0.0.1:5672/vhost", "amqp://guest:***@127.0.0.1:5672/vhost"),
        ("redis://:secret@h:6379/0", "redis://:***@h:6379/0"),
        ("nats://u:secret@h:4222", "nats://u:***@h:4222"),
        ("postgresql://u:se@cret@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:se:cret@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:s%40cret@h/db", "postgresql://u:***@h/db"),
    ],
)
def test_password_is_hidden(url: str, expected: str) -> None:
    redacted = redact_url(url)
    assert redacted == expected
    assert "secret" not in redacted
    assert "cret" not in redacted


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u@h/db",
        "postgresql://h/db",
        "sqlite:///tmp/outbox.db",
        "sqlite:////abs/outbox.db",
        "nats://127.0.0.1:4222",
        "kafka://h:9092",
        "not a url",
        "",
    ],
)
def test_url_without_password_is_unchanged(url: str) -> None:
    assert redact_url(url) == url


def test_unparseable_url_is_not_echoed() -> None:
    redacted = redact_url("postgresql://u:secret@[bad/db")
    assert "secret" not in redacted


@pytest.mark.parametrize(
    "url",
    ["postgresql://u@h/db?password=secret", "postgresql://h/db?sslmode=disable&password=secret"],
)
def test_password_in_query_is_hidden(url: str) -> None:
    # libpq accepts the password as a query parameter too
    assert "secret" not in redact_url(url)


def test_scheme_of() -> None:
    assert scheme_of("PostgreSQL://h/db") == "postgresql"
    assert scheme_of("postgresql+psycopg://h/db") == "postgresql+psycopg"
    assert scheme_of("sqlite:///x.db") == "sqlite"
