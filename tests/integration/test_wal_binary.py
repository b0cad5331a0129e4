"""pgoutput's binary column values (the streaming reader asks for ``binary``): each decoder of
``pgoutput.binary_value`` against what the real server's send function makes of generated values,
compared with the value the text form reads as."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from outboxkit.core.rows import event_from_row
from outboxkit.stores.postgres.pgoutput import binary_value

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def conn() -> Iterator[psycopg.Connection[Any]]:
    from tests.conftest import PG_URL, require

    require("PostgreSQL", "127.0.0.1", 5432)
    with psycopg.connect(PG_URL, autocommit=True) as c:
        yield c


def sent(conn: psycopg.Connection[Any], send: str, cast: str, value: object) -> tuple[int, bytes, str | None]:
    """(type OID, the server's binary send format, its text form) of ``value`` as ``cast``."""
    row = conn.execute(
        f"SELECT '{cast}'::regtype::oid, {send}(%s::{cast}), %s::{cast}::text".encode(), [value, value]
    ).fetchone()
    assert row is not None
    return int(row[0]), bytes(row[1]), row[2]


@SETTINGS
@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_integers(conn: psycopg.Connection[Any], n: int) -> None:
    oid, raw, text = sent(conn, "int8send", "int8", n)
    assert binary_value(oid, raw) == n == int(text or "")
    small = n % 2**31 - (2**30 if n % 2 else 0)
    oid, raw, text = sent(conn, "int4send", "int4", small)
    assert binary_value(oid, raw) == small == int(text or "")


@SETTINGS
@given(st.uuids())
def test_uuids(conn: psycopg.Connection[Any], value: uuid.UUID) -> None:
    oid, raw, text = sent(conn, "uuid_send", "uuid", str(value))
    assert binary_value(oid, raw) == text == str(value)


@SETTINGS
@given(st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\0")))
def test_text(conn: psycopg.Connection[Any], value: str) -> None:
    oid, raw, text = sent(conn, "textsend", "text", value)
    assert binary_value(oid, raw) == text == value


@SETTINGS
@given(st.binary(max_size=2000))
def test_bytea_is_the_bytes_not_hex(conn: psycopg.Connection[Any], value: bytes) -> None:
    oid, raw, text = sent(conn, "byteasend", "bytea", value)
    assert binary_value(oid, raw) == value == bytes.fromhex((text or "")[2:])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**12), 10**12) | st.text(st.characters(blacklist_characters="\0")),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@SETTINGS
@given(st.dictionaries(st.text(max_size=10), json_values, max_size=5))
def test_jsonb_is_its_text(conn: psycopg.Connection[Any], value: dict[str, object]) -> None:
    try:
        oid, raw, text = sent(conn, "jsonb_send", "jsonb", json.dumps(value))
    except (psycopg.errors.UntranslatableCharacter, psycopg.errors.InvalidTextRepresentation):
        return  # \u0000 and lone surrogates (escaped): jsonb refuses them, no row can hold them
    assert binary_value(oid, raw) == text
    assert json.loads(str(binary_value(oid, raw))) == json.loads(text or "")


@SETTINGS
@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)))
def test_timestamptz(conn: psycopg.Connection[Any], value: datetime) -> None:
    oid, raw, text = sent(conn, "timestamptz_send", "timestamptz", value)
    assert binary_value(oid, raw) == value
    # The row check reads the binary value as it reads the text form of the same time.
    from_text = event_from_row(1, "i", "t.x", None, None, None, b"", None, None, text, 0).created_at
    from_binary = event_from_row(1, "i", "t.x", None, None, None, b"", None, None, binary_value(oid, raw), 0)
    assert from_binary.created_at == from_text


def test_infinite_times_are_refused_as_the_text_form_is(conn: psycopg.Connection[Any]) -> None:
    for value in ("infinity", "-infinity"):
        oid, raw, text = sent(conn, "timestamptz_send", "timestamptz", value)
        assert binary_value(oid, raw) == text
        event = event_from_row(1, "i", "t.x", None, None, None, b"", None, None, binary_value(oid, raw), 0)
        assert event.defect is not None and "created_at" in event.defect
