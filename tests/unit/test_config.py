"""Settings: flags > environment > TOML file > defaults, validated at start-up with one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from outboxkit.config import resolve
from outboxkit.errors import ConfigurationError
from outboxkit.relay.loop import RelayConfig
from outboxkit.stores.base import TableRef

FILE = """
db = "sqlite:///file.db"
broker = "nats://file:4222"
table = "file_table"
source = "/from-file"
hold_dead_keys = false

[relay]
batch_size = 30
window = 3
poll_interval = 0.3
"""

ENV = {
    "OUTBOXKIT_DB": "postgresql://app@env-host/app",
    "OUTBOXKIT_BROKER": "nats://env:4222",
    "OUTBOXKIT_TABLE": "env_table",
    "OUTBOXKIT_BATCH_SIZE": "20",
    "OUTBOXKIT_WINDOW": "2",
}


def _write(tmp_path: Path, text: str, name: str = "outboxkit.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _one_line_error(excinfo: pytest.ExceptionInfo[ConfigurationError]) -> str:
    message = str(excinfo.value)
    assert message
    assert "\n" not in message
    return message


def test_defaults() -> None:
    s = resolve({}, environ={})
    assert s.db is None
    assert s.broker is None
    assert s.ref == TableRef("outbox", None)
    assert s.source == "/outboxkit"
    assert s.relay == RelayConfig()
    assert s.hold_dead_keys is True
    with pytest.raises(ConfigurationError, match="--db"):
        s.require_db()
    with pytest.raises(ConfigurationError, match="--broker"):
        s.require_broker()


def test_file_over_defaults(tmp_path: Path) -> None:
    s = resolve({}, config_file=_write(tmp_path, FILE), environ={})
    assert s.db == "sqlite:///file.db"
    assert s.broker == "nats://file:4222"
    assert s.ref == TableRef("file_table")
    assert s.source == "/from-file"
    assert s.hold_dead_keys is False
    assert (s.relay.batch_size, s.relay.window, s.relay.poll_interval) == (30, 3, 0.3)
    assert s.relay.retry_cap == RelayConfig().retry_cap


def test_environment_over_file(tmp_path: Path) -> None:
    s = resolve({}, config_file=_write(tmp_path, FILE), environ=ENV)
    assert s.db == "postgresql://app@env-host/app"
    assert s.broker == "nats://env:4222"
    assert s.ref.table == "env_table"
    assert (s.relay.batch_size, s.relay.window) == (20, 2)
    assert s.relay.poll_interval == 0.3  # not in the environment: from the file
    assert s.source == "/from-file"


def test_flags_over_environment(tmp_path: Path) -> None:
    flags = {
        "db": "postgresql+psycopg://app@flag-host/app",
        "broker": "nats://flag:4222",
        "batch_size": 10,
        "table": None,  # an unset flag does not hide the environment
        "hold_dead_keys": True,
    }
    s = resolve(flags, config_file=_write(tmp_path, FILE), environ=ENV)
    assert s.db == "postgresql+psycopg://app@flag-host/app"
    assert s.broker == "nats://flag:4222"
    assert s.relay.batch_size == 10
    assert s.relay.window == 2
    assert s.ref.table == "env_table"
    assert s.hold_dead_keys is True


def test_empty_environment_variable_is_unset(tmp_path: Path) -> None:
    s = resolve({}, config_file=_write(tmp_path, FILE), environ={"OUTBOXKIT_DB": ""})
    assert s.db == "sqlite:///file.db"


def test_config_file_from_environment(tmp_path: Path) -> None:
    s = resolve({}, environ={"OUTBOXKIT_CONFIG": _write(tmp_path, FILE)})
    assert s.db == "sqlite:///file.db"


def test_file_may_nest_under_outboxkit_table(tmp_path: Path) -> None:
    path = _write(tmp_path, '[outboxkit]\ndb = "sqlite:///nested.db"\nschema = "events"\n')
    s = resolve({}, config_file=path, environ={})
    assert s.db == "sqlite:///nested.db"
    assert s.ref == TableRef("outbox", "events")


@pytest.mark.parametrize(
    "url",
    ["oracle://u@h/db", "http://example.com", "postgresql:/no-slashes", "sqlite", "orders.db", "nats://h:4222"],
)
def test_bad_database_url(url: str) -> None:
    with pytest.raises(ConfigurationError) as excinfo:
        resolve({"db": url}, environ={})
    assert "database URL" in _one_line_error(excinfo)


@pytest.mark.parametrize("url", ["mysql://u@h/db", "mariadb://u:pw@h:3307/app", "mysql+pymysql://u@h/db"])
def test_mariadb_and_mysql_urls_are_databases(url: str) -> None:
    assert resolve({"db": url}, environ={}).db == url


@pytest.mark.parametrize("url", ["http://h:4222", "postgresql://h/db", "nats:h"])
def test_bad_broker_url(url: str) -> None:
    with pytest.raises(ConfigurationError) as excinfo:
        resolve({"broker": url}, environ={})
    assert "broker URL" in _one_line_error(excinfo)


def test_bad_url_error_does_not_leak_the_password() -> None:
    with pytest.raises(ConfigurationError) as excinfo:
        resolve({"db": "oracle://u:hunter2@h/db"}, environ={})
    assert "hunter2" not in _one_line_error(excinfo)


@pytest.mark.parametrize("url", ["postgresql://u:hunter2@[::1/db", "postgresql://[bad/db"])
def test_unparseable_database_url_is_a_configuration_error(url: str) -> None:
    with pytest.raises(ConfigurationError) as excinfo:
        resolve({"db": url}, environ={})
    assert "hunter2" not in _one_line_error(excinfo)


def test_unparseable_broker_url_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError) as excinfo:
        resolve({"broker": "nats://[oops:4222"}, environ={})
    _one_line_error(excinfo)


@pytest.mark.parametrize(
    "url", ["postgresql://u@h/db", "postgres://h/db", "postgresql+psycopg://h/db", "sqlite:///x.db"]
)
def test_good_database_urls(url: str) -> None:
    assert resolve({"db": url}, environ={}).db == url


@pytest.mark.parametrize(
    "url", ["nats://h:4222", "tls://h:4222", "amqp://g:g@h", "kafka://h:9092", "redis://h", "mqtt://h:1883"]
)
def test_good_broker_urls(url: str) -> None:
    assert resolve({"broker": url}, environ={}).broker == url


def test_unknown_toml_key(tmp_path: Path) -> None:
    path = _write(tmp_path, 'db = "sqlite:///x.db"\ndatabase = "oops"\n')
    with pytest.raises(ConfigurationError, match="database") as excinfo:
        resolve({}, config_file=path, environ={})
    _one_line_error(excinfo)


def test_unknown_relay_key(tmp_path: Path) -> None:
    path = _write(tmp_path, "[relay]\nbatchsize = 5\n")
    with pytest.raises(ConfigurationError, match="relay") as excinfo:
        resolve({}, config_file=path, environ={})
    _one_line_error(excinfo)


def test_invalid_toml(tmp_path: Path) -> None:
    path = _write(tmp_path, "db = \n")
    with pytest.raises(ConfigurationError, match="not valid TOML"):
        resolve({}, config_file=path, environ={})


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="not found") as excinfo:
        resolve({}, config_file=str(tmp_path / "nope.toml"), environ={})
    _one_line_error(excinfo)


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("OUTBOXKIT_BATCH_SIZE", "lots"),
        ("OUTBOXKIT_BATCH_SIZE", "1.5"),
        ("OUTBOXKIT_BATCH_SIZE", "0"),
        ("OUTBOXKIT_WINDOW", "-1"),
        ("OUTBOXKIT_POLL_INTERVAL", "fast"),
        ("OUTBOXKIT_POLL_INTERVAL", "0"),
    ],
)
def test_bad_numbers(var: str, value: str) -> None:
    with pytest.raises(ConfigurationError) as excinfo:
        resolve({}, environ={var: value})
    assert var.removeprefix("OUTBOXKIT_").lower() in _one_line_error(excinfo)


def test_bad_number_in_file(tmp_path: Path) -> None:
    path = _write(tmp_path, '[relay]\nwindow = "big"\n')
    with pytest.raises(ConfigurationError, match="window"):
        resolve({}, config_file=path, environ={})


def test_numbers_from_environment_are_parsed() -> None:
    s = resolve({}, environ={"OUTBOXKIT_POLL_INTERVAL": "0.25", "OUTBOXKIT_BATCH_SIZE": "7"})
    assert s.relay.poll_interval == 0.25
    assert s.relay.batch_size == 7


@pytest.mark.parametrize(("setting", "value"), [("table", "bad-name"), ("schema", "1st"), ("table", "x" * 49)])
def test_bad_identifiers(setting: str, value: str) -> None:
    with pytest.raises(ConfigurationError, match=setting):
        resolve({setting: value}, environ={})


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("nats://127.0.0.1:4222", True),
        ("nats://127.0.0.1", True),
        ("postgresql://app:secret@db:5432/app", True),
        ("sqlite:///tmp/x.db", True),
        ("kafka://a:9092,b:9093", True),
        ("nats://[::1]:4222", True),
        ("nats://127.0.0.1:99999", False),
        ("nats://127.0.0.1:0", False),
        ("nats://127.0.0.1:", False),
        ("redis://:secret@h:63x9/0", False),
        ("kafka://a:9092,b:x", False),
        ("nats://[::1]:70000", False),
    ],
)
def test_ports_are_checked_as_configuration(url: str, ok: bool) -> None:
    from outboxkit.config import check_ports

    if ok:
        assert check_ports(url) == url
    else:
        with pytest.raises(ConfigurationError, match="invalid port") as raised:
            check_ports(url)
        assert "secret" not in str(raised.value)


def test_owner_from_flag_environment_or_file(tmp_path: Path) -> None:
    assert resolve({}, environ={}).relay.owner is None
    path = _write(tmp_path, '[relay]\nowner = "relay-a"\n')
    assert resolve({}, config_file=path, environ={}).relay.owner == "relay-a"
    assert resolve({}, config_file=path, environ={"OUTBOXKIT_RELAY_OWNER": "relay-b"}).relay.owner == "relay-b"
    assert resolve({"owner": "relay-c"}, environ={"OUTBOXKIT_RELAY_OWNER": "relay-b"}).relay.owner == "relay-c"


@pytest.mark.parametrize("bad", ["x" * 201, " padded", "tab\there", "web-1/w2"])
def test_owner_is_refused_in_one_line_when_unusable(bad: str) -> None:
    with pytest.raises(ConfigurationError) as excinfo:
        resolve({"owner": bad}, environ={})
    assert "owner" in _one_line_error(excinfo)
