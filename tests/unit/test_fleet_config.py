"""The fleet file (fleet.config): parsed whole or refused in one line naming the entry and field."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from outboxkit.brokers.registry import publisher_for
from outboxkit.core.envelope import OutboxEvent
from outboxkit.errors import ConfigurationError
from outboxkit.fleet.config import diff, parse_fleet
from outboxkit.fleet.publish import SharedPublishers

GOOD = """
[fleet]
broker = "nats://127.0.0.1:4222"
quantum = 50

[[outbox]]
tenant = "acme"
db = "postgresql://app@127.0.0.1/app"
schema = "acme"

[[outbox]]
tenant = "globex"
db = "mysql://root@127.0.0.1/globex"
topic_prefix = "globex."
weight = 2
tenant_attribute = true

[[outbox]]
tenant = "initech"
db = "sqlite:///tmp/initech.db"
broker = "nats://10.0.0.2:4222"
"""


def test_parses_defaults_and_overrides() -> None:
    spec = parse_fleet(GOOD)
    acme, globex, initech = spec.outboxes
    assert spec.settings.quantum == 50
    assert acme.ref.schema == "acme" and acme.ref.table == "outbox" and acme.broker == "nats://127.0.0.1:4222"
    assert globex.topic_prefix == "globex." and globex.weight == 2 and globex.tenant_attribute
    assert initech.broker == "nats://10.0.0.2:4222"


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        (('schema = "acme"', 'schema = "ac me"'), "#1 (tenant 'acme'): invalid schema name"),
        (("weight = 2", "weight = 0"), "#2 (tenant 'globex'): weight must be at least 1"),
        (('topic_prefix = "globex."', 'topic_prefix = "globex"'), "#2 (tenant 'globex'): topic_prefix"),
        (('db = "sqlite:///tmp/initech.db"', 'db = "oracle://x"'), "#3 (tenant 'initech'): db: unsupported database"),
        (('tenant = "initech"', 'tenant = "acme"'), "tenant 'acme' is also entry #1"),
        (("quantum = 50", "quantum = 0"), "[fleet]: quantum must be at least 1"),
        (("quantum = 50", "quantumm = 5"), "[fleet]: unknown field 'quantumm'"),
        (('schema = "acme"', 'schema = "acme"\ncolour = "red"'), "#1 (tenant 'acme'): unknown field 'colour'"),
        (('broker = "nats://127.0.0.1:4222"', 'broker = "http://x"'), "#1 (tenant 'acme'): broker: unsupported broker"),
    ],
)
def test_a_bad_entry_is_named_in_one_line(edit: tuple[str, str], says: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_fleet(GOOD.replace(*edit, 1), name="fleet file f.toml")
    message = str(caught.value)
    assert says in message and "\n" not in message


def test_not_toml_and_missing_fields() -> None:
    with pytest.raises(ConfigurationError, match="not valid TOML"):
        parse_fleet("[[outbox]\n")
    with pytest.raises(ConfigurationError, match="#1: tenant is missing"):
        parse_fleet('[[outbox]]\ndb = "sqlite:///x.db"\nbroker = "nats://h:4222"\n')
    with pytest.raises(ConfigurationError, match="broker is missing"):
        parse_fleet('[[outbox]]\ntenant = "a"\ndb = "sqlite:///x.db"\n')
    with pytest.raises(ConfigurationError, match="same outbox as tenant 'a'"):
        parse_fleet(
            '[fleet]\nbroker = "nats://h:4222"\n[[outbox]]\ntenant = "a"\ndb = "sqlite:///x.db"\n'
            '[[outbox]]\ntenant = "b"\ndb = "sqlite:///x.db"\n'
        )


@given(st.text(max_size=30))
def test_any_tenant_text_parses_or_is_refused_cleanly(tenant: str) -> None:
    text = f'[fleet]\nbroker = "nats://h:4222"\n[[outbox]]\ntenant = {json.dumps(tenant)}\ndb = "sqlite:///x.db"\n'
    try:
        spec = parse_fleet(text)
    except ConfigurationError as exc:
        assert "\n" not in str(exc)
    else:
        assert spec.outboxes[0].tenant.isprintable()


def test_diff_stops_changed_and_removed_starts_new_and_changed() -> None:
    spec = parse_fleet(GOOD)
    old = spec.by_tenant()
    new = dict(old)
    del new["initech"]
    new["globex"] = dataclasses.replace(new["globex"], weight=3)
    new["hooli"] = dataclasses.replace(old["acme"], tenant="hooli")
    change = diff(old, new)
    assert change.stop == ("globex", "initech")
    assert [s.tenant for s in change.start] == ["globex", "hooli"]
    assert diff(old, old).stop == () and diff(old, old).start == ()


def test_tenant_prefix_and_attribute_on_the_wire() -> None:
    shared = SharedPublishers(lambda url, source: publisher_for(url, source=source))  # builds, never connects
    pub = shared.handle("nats://h:4222", "/s", tenant="acme", prefix="acme.", attribute=True)
    event = OutboxEvent(seq=1, id="x", topic="orders.created", payload=b"{}", headers={"a": "b"})
    wire = pub.wire_event(event)
    assert wire.topic == "acme.orders.created"
    assert wire.headers == {"a": "b", "tenantid": "acme"}
    assert event.headers == {"a": "b"}  # the relay's own copy is untouched
    plain = shared.handle("nats://h:4222", "/s", tenant="acme")
    assert plain.wire_event(event) is event
