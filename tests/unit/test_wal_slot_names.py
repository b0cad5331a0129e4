"""Slot names (issue 18 item 4): valid, at most 63 characters, distinct across databases."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from outboxkit.stores.base import TableRef
from outboxkit.stores.postgres.walddl import legacy_slot_name, slot_name, wal_ddl

names = st.text(st.characters(codec="utf-8", exclude_characters="\0"), min_size=1, max_size=80)
idents = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,47}", fullmatch=True)


@given(names, idents, st.one_of(st.none(), idents))
def test_a_slot_name_is_always_valid(database: str, table: str, schema: str | None) -> None:
    name = slot_name(TableRef(table, schema), database)
    assert len(name) <= 63 and re.fullmatch(r"[a-z0-9_]+", name)


@given(names, names)
def test_two_databases_never_share_a_slot_name(a: str, b: str) -> None:
    ref = TableRef("outbox", "app")
    assert (slot_name(ref, a) == slot_name(ref, b)) == (a == b)


def test_names_that_were_changed_end_in_a_hash() -> None:
    ref = TableRef("outbox")
    assert slot_name(ref, "shop") == "outboxkit_shop_outbox"
    assert slot_name(ref, "my-shop") != slot_name(ref, "my_shop")
    assert legacy_slot_name(TableRef("outbox", "app")) == "outboxkit_app_outbox"


def test_the_ddl_adopts_an_old_slot_of_this_database_only() -> None:
    ddl = "\n".join(wal_ddl(TableRef("outbox", "app"), "shop"))
    assert "slot_name = 'outboxkit_app_outbox' AND database = current_database()" in ddl
    assert "pg_create_logical_replication_slot('outboxkit_shop_app_outbox'" in ddl


def test_the_ddl_in_the_docs_is_what_migrate_sql_prints() -> None:
    from pathlib import Path

    page = (Path(__file__).parents[2] / "docs" / "log-tailing.md").read_text()
    assert "\n\n".join(stmt.rstrip() + ";" for stmt in wal_ddl(TableRef("outbox"), "orders")) in page
