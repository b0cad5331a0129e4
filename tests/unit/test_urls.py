"""URL helpers: a secret never reaches a log line."""

from __future__ import annotations

import pytest

from outboxkit.core.urls import redact_url, remember_secrets, scheme_of, scrub, secrets_of


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


@pytest.mark.parametrize(
    ("url", "secret"),
    [
        ("nats://S3cretToken@127.0.0.1:4222", "S3cretToken"),
        ("tls://S3cretToken@h:4222", "S3cretToken"),
        ("kafka://h:9092?sasl_password=S3cretPw&security_protocol=SASL_SSL", "S3cretPw"),
        ("kafka://h:9092?sasl.password=S3cretPw", "S3cretPw"),
        ("mqtt://u:S3cretPw@h:1883", "S3cretPw"),
        ("redis://:S3cretPw@h:6379/0", "S3cretPw"),
        ("amqps://u:S3cret%2FPw@h/vhost", "S3cret"),
        ("postgresql://h/db?sslpassword=S3cretPw", "S3cretPw"),
        ("host=127.0.0.1 port=5432 password=S3cretPw dbname=app", "S3cretPw"),
        ("host=127.0.0.1 password='S3cret Pw' dbname=app", "S3cret"),
    ],
)
def test_item9_every_form_of_secret_is_masked(url: str, secret: str) -> None:
    assert secret not in redact_url(url)
    assert any(secret in s for s in secrets_of(url))


def test_item9_remembered_secrets_are_scrubbed_wherever_they_appear() -> None:
    remember_secrets("nats://Tok3nXYZ@127.0.0.1:4222", "postgresql://u:Pa55word@h/db")
    text = "driver said: auth failed for token Tok3nXYZ and password Pa55word"
    cleaned = scrub(text)
    assert "Tok3nXYZ" not in cleaned and "Pa55word" not in cleaned


def test_item9_log_lines_mask_keyword_dsn_passwords() -> None:
    from outboxkit.core.logfmt import redact_text

    assert "hunter22" not in redact_text("connecting with host=db password=hunter22 sslmode=require")
