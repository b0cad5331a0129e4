"""The log-capture seam without a server: which database offers which log, the one-line refusals,
the DDL printed without a driver, and the import rule that keeps database packages behind it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from outboxkit.errors import ConfigurationError
from outboxkit.relay.tail import build_tail_relay
from outboxkit.stores.base import TableRef
from outboxkit.stores.registry import capture_names, log_capture_for

SRC = Path(__file__).resolve().parents[2] / "src" / "outboxkit"


def test_each_database_offers_its_log() -> None:
    assert capture_names() == ["wal", "binlog"]
    assert log_capture_for("postgresql://app@db/shop").name == "wal"
    assert log_capture_for("mysql://root@db/shop", "binlog").name == "binlog"
    assert log_capture_for("mariadb").name == "binlog"  # a dialect name, as `migrate --sql --dialect` gives


@pytest.mark.parametrize(
    ("url", "name", "words"),
    [
        ("mysql://root@db/shop", "wal", "--capture wal needs PostgreSQL"),
        ("postgresql://app@db/shop", "binlog", "--capture binlog needs MariaDB or MySQL"),
        ("sqlite:///outbox.db", "wal", "sqlite has no log a relay can tail"),
        ("postgresql://app@db/shop", "kafka", "--capture must be one of table, wal, binlog"),
    ],
)
def test_a_log_the_database_has_not_is_one_line(url: str, name: str, words: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        log_capture_for(url, name)
    assert words in str(refused.value) and "\n" not in str(refused.value)


def test_the_one_builder_refuses_sqlite_at_start_up() -> None:
    with pytest.raises(ConfigurationError, match="sqlite has no log a relay can tail"):
        build_tail_relay("sqlite:///outbox.db", "nats://127.0.0.1:4222")


def test_the_ddl_is_printed_without_a_connection() -> None:
    wal = log_capture_for("postgresql")
    with pytest.raises(ConfigurationError, match="needs --db URL"):
        wal.sql(None, TableRef())
    script = wal.sql("postgresql://app@db.example/shop", TableRef())
    assert any('CREATE PUBLICATION "outboxkit_shop_outbox"' in s for s in script.statements)
    binlog = log_capture_for("mariadb").sql(None, TableRef())
    assert "CREATE TABLE IF NOT EXISTS `outbox_binlog`" in binlog.statements[0]
    assert binlog.note is not None and "SHOW MASTER STATUS" in binlog.note


def test_the_binlog_takes_no_slot_name() -> None:
    binlog = log_capture_for("mysql://root@db/shop")
    with pytest.raises(ConfigurationError, match="no slot name"):
        binlog.reader("mysql://root@db/shop", TableRef(), takeover=6.0, slot="mine")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_no_module_outside_stores_imports_a_database_package() -> None:
    """Every role of a database, log capture included, goes through the ``Database`` seam."""
    offenders = {
        str(path.relative_to(SRC)): sorted(n for n in _imports(path) if n.startswith(DATABASE_PACKAGES))
        for path in SRC.rglob("*.py")
        if path.relative_to(SRC).parts[0] != "stores"
    }
    assert {path: names for path, names in offenders.items() if names} == {}


DATABASE_PACKAGES = ("outboxkit.stores.postgres", "outboxkit.stores.mariadb", "outboxkit.stores.sqlite")


def test_the_relay_does_not_import_the_configuration() -> None:
    """``config`` imports the relay's settings: the relay importing it back was the package cycle."""
    for path in (SRC / "relay").rglob("*.py"):
        assert "outboxkit.config" not in _imports(path), path
