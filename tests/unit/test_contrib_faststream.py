"""outboxkit.contrib.faststream without a broker: the inbox SQL it borrows, the event it reads off
a FastStream message, bad configuration, and the one-line error without the extra."""

from __future__ import annotations

import subprocess
import sys

import pytest
from faststream.message import StreamMessage
from sqlalchemy.ext.asyncio import create_async_engine

from outboxkit.contrib.faststream import Inbox
from outboxkit.contrib.faststream.middleware import _CLAIM_PARAMS, _DEAD_PARAMS, _event_of, _named
from outboxkit.errors import ConfigurationError
from outboxkit.stores.base import TableRef
from outboxkit.stores.registry import database_named


@pytest.mark.parametrize("dialect", ["postgresql", "sqlite", "mysql"])
def test_the_inbox_statements_of_every_database_become_named_parameters(dialect: str) -> None:
    inbox_sql = database_named(dialect).inbox()
    ref = TableRef("inbox", None if dialect == "sqlite" else "billing")
    claim = _named(inbox_sql.claim_sql(ref), _CLAIM_PARAMS)
    dead = _named(inbox_sql.dead_sql(ref), _DEAD_PARAMS)
    assert claim.count(":") == 2 and ":consumer" in claim and ":event_id" in claim
    assert "%s" not in claim + dead and "?" not in claim + dead
    for name in _DEAD_PARAMS:
        assert f":{name}" in dead
    with pytest.raises(AssertionError):
        _named(inbox_sql.claim_sql(ref), ("only_one",))


def _message(headers: dict[str, object], raw: object = None, body: bytes = b"{}") -> StreamMessage[object]:
    return StreamMessage(raw_message=raw, body=body, headers=headers)  # type: ignore[arg-type]


class _Amqp:
    routing_key = "orders.created"
    message_id = "amqp-native-id"


def test_the_event_id_is_the_cloudevents_id_of_each_binding_then_the_native_id() -> None:
    assert _event_of(_message({"ce-id": "a", "ce-subject": "k", "message_id": "x"})).id == "a"  # type: ignore[union-attr]
    amqp = _event_of(_message({"cloudEvents:id": "b", "cloudEvents:subject": "k2"}, _Amqp()))
    assert amqp is not None and (amqp.id, amqp.key, amqp.topic) == ("b", "k2", "orders.created")
    assert _event_of(_message({"Nats-Msg-Id": "c"})).id == "c"  # type: ignore[union-attr]
    assert _event_of(_message({}, _Amqp())).id == "amqp-native-id"  # type: ignore[union-attr]
    assert _event_of(_message({})) is None, "no id at all: nothing to deduplicate on"


def test_bad_configuration_fails_when_the_inbox_is_made() -> None:
    engine = create_async_engine("sqlite+aiosqlite:///:memory:")
    with pytest.raises(ConfigurationError, match="name"):
        Inbox(engine, name="")
    with pytest.raises(ConfigurationError, match="max_attempts"):
        Inbox(engine, name="billing", max_attempts=0)
    with pytest.raises(ConfigurationError, match="invalid table"):
        Inbox(engine, name="billing", table="inbox; DROP TABLE x")


def test_without_the_extra_the_import_error_names_the_install() -> None:
    code = "import sys; sys.modules['faststream'] = None; import outboxkit.contrib.faststream"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert "pip install 'outboxkit[faststream]'" in last, done.stderr
