"""The command line's edges a newcomer hits in the first hour, one test each: messages printed
literally (never as Rich markup), handlers imported from the current directory, wildcard topics on
buses without wildcards, bad ports, the "is it running?" hint only where it fits, EOF at a
confirmation prompt, and full ids and topics in piped or narrow tables."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from rich.console import Console

from outboxkit import migrate
from outboxkit.extras import missing_extra_message
from outboxkit.terminal import print_rows
from outboxkit.testing.servers import free_port
from tests.conftest import require

#: The console script, as a user runs it (sys.path then starts at the script's directory, not the cwd).
OUTBOXKIT = str(Path(sys.executable).parent / "outboxkit")


def run(
    *args: str, cwd: Path | None = None, stdin: int | None = subprocess.DEVNULL
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTBOXKIT_") and k != "PYTHONPATH"}
    return subprocess.run([OUTBOXKIT, *args], capture_output=True, text=True, timeout=60, env=env, cwd=cwd, stdin=stdin)


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_error_text_in_brackets_is_printed_literally(tmp_path: Path) -> None:
    result = run("relay", "--db", f"sqlite:///{tmp_path}/[relay].db", "--broker", "nats://127.0.0.1:4222")
    assert result.returncode == 1
    assert "[relay].db" in error_line(result)


def test_rich_markup_in_an_option_is_a_one_line_error_not_a_crash() -> None:
    result = run("migrate", "--db", "sqlite:///x.db", "--table", "x[/]y")
    assert result.returncode == 2
    assert "'x[/]y'" in error_line(result)


def test_consume_imports_the_handler_from_the_current_directory(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/billing.db"
    assert run("migrate", "--inbox", "--db", db).returncode == 0
    (tmp_path / "myhandlers.py").write_text("def on_order(conn, event):\n    pass\n")
    broker = f"nats://127.0.0.1:{free_port()}"  # nobody there: the run stops right after the import
    args = ["consume", "--db", db, "--broker", broker, "--group", "g", "--topic", "orders.>"]

    found = run(*args, "--handler", "myhandlers:on_order", cwd=tmp_path)
    assert found.returncode == 1 and "is unavailable" in error_line(found), found.stderr
    missing = run(*args, "--handler", "nosuchmodule:on_order", cwd=tmp_path)
    assert missing.returncode == 2 and "cannot import handler module 'nosuchmodule'" in error_line(missing)


def test_projections_rebuild_imports_from_the_current_directory_like_consume(tmp_path: Path) -> None:
    """Every module:attr option goes through one import (outboxkit.imports): --projection too."""
    db = f"sqlite:///{tmp_path}/es.db"
    assert run("migrate", "--event-store", "--db", db).returncode == 0
    (tmp_path / "myprojections.py").write_text("def not_a_projection():\n    return object()\n")
    found = run("projections", "rebuild", "--db", db, "--projection", "myprojections:not_a_projection", cwd=tmp_path)
    assert found.returncode == 2 and "is not a projection" in error_line(found), found.stderr
    missing = run("projections", "rebuild", "--db", db, "--projection", "myprojections:nope", cwd=tmp_path)
    assert missing.returncode == 2 and "has no attribute 'nope'" in error_line(missing), missing.stderr


@pytest.mark.parametrize("broker", ["redis://127.0.0.1:6379/0", "kafka://127.0.0.1:9092"])
def test_a_wildcard_topic_on_a_bus_without_wildcards_is_a_configuration_error(broker: str, tmp_path: Path) -> None:
    result = run(
        "consume", "--db", f"sqlite:///{tmp_path}/x.db", "--broker", broker,
        "--group", "g", "--topic", "nu.*", "--handler", "x:y",
    )  # fmt: skip
    assert result.returncode == 2
    assert "'nu.*' is a pattern" in error_line(result) and "no wildcards" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["--db", "sqlite:///x.db", "--broker", "nats://127.0.0.1:99999"],
        ["--db", "postgresql://app@127.0.0.1:70000/app", "--broker", "nats://127.0.0.1:4222"],
        ["--db", "sqlite:///x.db", "--broker", "kafka://127.0.0.1:9092,127.0.0.1:x"],
        ["--db", "sqlite:///x.db", "--broker", "amqp://guest:secret@127.0.0.1:0/"],
    ],
)
def test_an_invalid_port_is_a_configuration_error(args: list[str]) -> None:
    result = run("relay", *args)
    assert result.returncode == 2
    line = error_line(result)
    assert "invalid port" in line and "secret" not in result.stderr
    assert "is the service running" not in result.stderr


def test_running_hint_only_when_nothing_answered(sqlite_url: str) -> None:
    nobody = run("relay", "--db", sqlite_url, "--broker", f"nats://127.0.0.1:{free_port()}")
    assert nobody.returncode == 1 and "is the service running and the URL right?" in nobody.stderr
    require("RabbitMQ", "127.0.0.1", 5672)
    refused = run("relay", "--db", sqlite_url, "--broker", "amqp://guest:wrong-password@127.0.0.1:5672/")
    assert refused.returncode == 1
    assert "ACCESS_REFUSED" in error_line(refused) and "wrong-password" not in refused.stderr
    assert "is the service running" not in refused.stderr


def dead_letter_db(tmp_path: Path, topic: str) -> tuple[str, str]:
    db = tmp_path / "app.db"
    migrate(f"sqlite:///{db}")
    event_id = str(uuid.uuid4())
    conn = sqlite3.connect(db)
    with conn:
        conn.execute(
            "INSERT INTO outbox (id, topic, key, payload, dead_at, last_error, attempts)"
            " VALUES (?, ?, 'k-1', x'7b7d', '2026-01-01T00:00:00.000Z', '[relay] refused: too large', 1)",
            (event_id, topic),
        )
    conn.close()
    return f"sqlite:///{db}", event_id


def test_closing_the_prompt_input_changes_nothing_and_exits_1(tmp_path: Path) -> None:
    db, _ = dead_letter_db(tmp_path, "orders.created")
    result = run("dead-letters", "discard", "--all", "--db", db, stdin=subprocess.DEVNULL)
    assert result.returncode == 1, result.stderr
    assert "nothing changed" in result.stderr and "Traceback" not in result.stderr
    still = sqlite3.connect(db.removeprefix("sqlite:///")).execute(
        "SELECT count(*) FROM outbox WHERE dead_at IS NOT NULL"
    )
    assert still.fetchone()[0] == 1


LONG_TOPIC = "orders." + ".".join(f"segment{i:02d}" for i in range(14))  # 160 characters


def test_piped_status_and_dead_letter_list_keep_full_ids_and_topics(tmp_path: Path) -> None:
    db, event_id = dead_letter_db(tmp_path, LONG_TOPIC)
    status = run("status", "--db", db)
    assert status.returncode == 0, status.stderr
    assert any(LONG_TOPIC in line for line in status.stdout.splitlines()), status.stdout
    listed = run("dead-letters", "list", "--db", db)
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if event_id in line)
    assert LONG_TOPIC in row and "[relay] refused: too large" in listed.stdout


def test_narrow_terminal_prints_rows_as_lines_instead_of_cutting_ids() -> None:
    event_id = str(uuid.uuid4())
    console = Console(width=50, force_terminal=True, color_system=None, record=True)
    print_rows(
        console,
        "dead letters: 1 of 1",
        ("seq", "id", "topic", "last error"),
        [(1, event_id, LONG_TOPIC, "[relay] refused")],
        whole={"id", "topic"},
    )
    lines = console.export_text().splitlines()
    assert f"id: {event_id}" in lines and f"topic: {LONG_TOPIC}" in lines
    assert "last error: [relay] refused" in lines
    wide = Console(width=400, force_terminal=True, color_system=None, record=True)
    print_rows(wide, "t", ("seq", "id", "topic"), [(1, event_id, LONG_TOPIC)], whole={"id", "topic"})
    assert any(event_id in line and LONG_TOPIC in line for line in wide.export_text().splitlines())


def test_missing_extra_is_named_with_its_pip_install_line() -> None:
    message = missing_extra_message(ModuleNotFoundError("No module named 'psycopg'", name="psycopg"))
    assert (
        message
        == "this needs the postgres extra: pip install 'outboxkit[postgres]' (module 'psycopg' is not installed)"
    )
    assert missing_extra_message(ModuleNotFoundError("x", name="aio_pika.abc")) is not None
    assert missing_extra_message(ModuleNotFoundError("x", name="somethingelse")) is None
    assert missing_extra_message(ValueError("psycopg")) is None


def test_help_shows_no_type_for_flags() -> None:
    """`--sql` takes no value: its row shows none (typer's `<bool>` read as if it took one)."""
    from typer.testing import CliRunner

    from outboxkit.cli import app

    for command in (["migrate"], ["relay"], ["dead-letters", "discard"], ["inbox", "dead-letters", "retry"]):
        result = CliRunner().invoke(app, [*command, "--help"], terminal_width=120)
        assert result.exit_code == 0, result.output
        assert "<bool>" not in result.output and "--help" in result.output, command
    assert "<int>" in CliRunner().invoke(app, ["relay", "--help"], terminal_width=120).output  # values still say


@pytest.mark.parametrize(
    ("flags", "names", "never"),
    [
        (["--db", "sqlite:///x.db", "--broker", "postgresql://h/db"], "nats://, amqp://, kafka://", "sqlite"),
        (["--db", "sqlite:///x.db", "--broker", "http://h"], "redis:// or mqtt://", "postgresql"),
        (["--db", "nats://h:4222", "--broker", "nats://h:4222"], "postgresql://... or sqlite://...", "nats"),
    ],
)
def test_a_bad_url_hint_names_the_schemes_of_its_kind(flags: list[str], names: str, never: str) -> None:
    line = error_line(run("relay", *flags))
    hint = line.split(": use ", 1)[1]
    assert names in hint and never not in hint, line


def test_demo_takes_only_a_nats_broker() -> None:
    result = run("demo", "--broker", "amqp://guest:guest@127.0.0.1:5672/")
    assert result.returncode == 2 and "demo --broker takes a NATS URL" in error_line(result)
