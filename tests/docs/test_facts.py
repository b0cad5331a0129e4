"""Facts the docs state, checked against the code, so a newcomer's reading stays true: the guide's
configuration table, the Redis field order, the ``sequence`` attribute on every bus page, and the
plain-SQL insert of schema.md (with a backslash in the payload) on PostgreSQL."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import psycopg
import pytest
import typer.main

from outboxkit.brokers.redis import entry_fields
from outboxkit.cli import app
from outboxkit.config import ENV, resolve
from outboxkit.core.envelope import OutboxEvent
from outboxkit.stores.base import TableRef

DOCS = Path(__file__).resolve().parents[2] / "docs"


def table_rows(text: str, header: str) -> list[list[str]]:
    """The rows of the Markdown table whose header line starts with ``header``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def test_guide_configuration_table_matches_the_relay_command(tmp_path: Path) -> None:
    rows = table_rows((DOCS / "guide.md").read_text(), "| flag | environment | TOML | default |")
    documented = {row[0].strip("`"): row for row in rows}
    relay = typer.main.get_command(app).commands["relay"]  # type: ignore[attr-defined]
    options = {p.opts[0]: p for p in relay.params if p.opts[0].startswith("--")}
    assert set(documented) == set(options) - {"--config"}, "every relay option has a row, and only those"
    for flag, (_, env, toml, default) in documented.items():
        param = options[flag]
        envvar = param.envvar if isinstance(param.envvar, str) else None
        name = flag.removeprefix("--").replace("-", "_")
        expected_env = envvar or ENV.get(name)
        assert env.strip("`") == (expected_env or "—"), flag
        if param.default not in (None, False):
            assert str(param.default).removesuffix(".0") in default, (flag, param.default, default)
        if toml != "—":
            key = re.match(r"`(?:\[relay\] )?(\w+)", toml)
            assert key, toml
    # Every TOML key in the table is accepted where the table says it goes.
    cfg = tmp_path / "outboxkit.toml"
    cfg.write_text(
        'db = "sqlite:///x.db"\nbroker = "nats://h:4222"\nhold_dead_keys = false\n'
        "[relay]\nbatch_size = 10\nwindow = 5\npoll_interval = 0.5\nlease_ttl = 3.0\nmax_attempts = 4\n"
    )
    settings = resolve({}, config_file=str(cfg), environ={})
    assert settings.relay.lease_ttl == 3.0 and settings.relay.max_attempts == 4 and not settings.hold_dead_keys
    cfg.write_text("[relay]\nhold_dead_keys = false\n")
    with pytest.raises(Exception, match=r"\[relay\] takes"):
        resolve({}, config_file=str(cfg), environ={})  # not under [relay], as the guide says


def test_relay_defaults_in_the_guide_are_the_code_defaults() -> None:
    from outboxkit.relay.loop import RelayConfig

    rows = {r[0].strip("`"): r[3] for r in table_rows((DOCS / "guide.md").read_text(), "| flag | environment |")}
    defaults = RelayConfig()
    assert rows["--batch-size"].startswith(str(defaults.batch_size))
    assert rows["--window"].startswith(str(defaults.window))
    assert rows["--poll-interval"].startswith(str(defaults.poll_interval))
    assert rows["--lease-ttl"].startswith(str(defaults.lease_ttl))
    assert rows["--max-attempts"].startswith(str(defaults.max_attempts))


def test_redis_field_order_is_the_documented_order() -> None:
    rows = table_rows((DOCS / "buses" / "redis.md").read_text(), "| field | value |")
    documented = [row[0].strip("`") for row in rows]
    event = OutboxEvent(seq=3, id="i", topic="t", payload=b"{}", key="k", headers={"traceparent": "00-a-b-01"})
    written = [str(f) for f in entry_fields(event, "/s")[::2]]
    assert [n for n in written if not n.startswith("h-")] == [n for n in documented if not n.startswith("h-")]
    assert written.index("h-traceparent") == len(written) - 2 and written[-1] == "data"


@pytest.mark.parametrize(
    ("page", "name"),
    [
        ("wire-format.md", "`ce-sequence`"),
        ("buses/nats.md", "`ce-sequence`"),
        ("buses/kafka.md", "`ce_sequence`"),
        ("buses/rabbitmq.md", "`cloudEvents:sequence`"),
        ("buses/redis.md", "`sequence`"),
        ("buses/mqtt.md", "`sequence`"),
    ],
)
def test_every_bus_table_lists_the_sequence_attribute(page: str, name: str) -> None:
    text = (DOCS / page).read_text()
    assert any(line.startswith("|") and name in line for line in text.splitlines()), page


def test_schema_doc_insert_keeps_backslashes(pg_url: str, pg_ref: TableRef) -> None:
    block = re.search(r"```sql\n(.*?)```", (DOCS / "schema.md").read_text(), re.DOTALL)
    assert block
    sql = block.group(1)
    literal = re.search(r"convert_to\('(.*?)', 'UTF8'\)", sql)
    assert literal and "\\" in literal.group(1), "the example shows a backslash"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'SET search_path = "{pg_ref.schema}"'.encode())
        conn.execute(sql.encode())
        (payload,) = conn.execute("SELECT payload FROM outbox").fetchone()  # type: ignore[misc]
        assert bytes(payload) == literal.group(1).encode()
        assert json.loads(bytes(payload))["path"] == "C:\\temp"
        # The cast the page warns about really does change such a payload.
        with pytest.raises(psycopg.errors.InvalidTextRepresentation):
            conn.execute("SELECT %s::text::bytea", ['{"path": "C:\\temp", "n": "\\n"}'])


def test_the_all_extra_is_what_the_install_tables_say() -> None:
    """README and docs/index.md name the extras `all` installs; pyproject's `all` is that list."""
    import re

    listed = tomllib.loads((DOCS.parent / "pyproject.toml").read_text())["project"]["optional-dependencies"]["all"]
    (spec,) = listed
    members = set(re.fullmatch(r"outboxkit\[(.*)\]", spec).group(1).split(","))  # type: ignore[union-attr]
    for page in (DOCS / "index.md", DOCS.parent / "README.md"):
        rows = {r[0].strip("`"): r for r in table_rows(page.read_text(), "| extra | installs |")}
        assert set(re.findall(r"`([a-z]+)`", rows["all"][1])) == members, page
        left_out = set(rows) - members - {"all"}
        assert set(re.findall(r"`([a-z]+)`", rows["all"][2])) == left_out, page  # said what it leaves out


def test_pyproject_extras_match_the_install_tables() -> None:
    extras = set(tomllib.loads((DOCS.parent / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    for page in (DOCS / "index.md", DOCS.parent / "README.md"):
        rows = table_rows(page.read_text(), "| extra | installs |")
        assert {r[0].strip("`") for r in rows} <= extras, page
        assert extras - {"all", "dev"} <= {r[0].strip("`") for r in rows}, page


def test_the_schema_page_states_the_limits_emit_enforces() -> None:
    """docs/schema.md's limits table is the code's: topic length, key bytes, payload bytes."""
    from outboxkit.core.envelope import DEFAULT_MAX_PAYLOAD, MAX_TOPIC_LENGTH, validate_key, validate_topic
    from outboxkit.errors import EncodingError, InvalidTopicError

    rows = {r[0].strip("`"): r[1] for r in table_rows((DOCS / "schema.md").read_text(), "| what | limit | error |")}
    assert f"1 to {MAX_TOPIC_LENGTH} characters" in rows["topic"]
    assert "at most 1,024 bytes in UTF-8" in rows["key"]
    assert f"at most {DEFAULT_MAX_PAYLOAD:,} bytes" in rows["payload"]
    validate_topic("t" * MAX_TOPIC_LENGTH)
    with pytest.raises(InvalidTopicError):
        validate_topic("t" * (MAX_TOPIC_LENGTH + 1))
    validate_key("é" * 512)  # 1,024 bytes
    with pytest.raises(EncodingError):
        validate_key("é" * 512 + "x")
