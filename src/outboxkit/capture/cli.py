"""``outboxkit capture add | list | remove``: triggers that write outbox rows for changes made by any
program. Registered on the main app by ``outboxkit/cli.py``."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from outboxkit.capture.triggers import add_capture, list_captures, remove_capture
from outboxkit.config import resolve
from outboxkit.stores.base import TableRef
from outboxkit.stores.capture import OPERATIONS, CaptureSpec

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

capture_app = typer.Typer(
    name="capture",
    help="Capture changes of business tables by database triggers (docs/capture.md).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

DbOpt = Annotated[str | None, typer.Option("--db", help="Database URL (env OUTBOXKIT_DB).", show_default=False)]
SchemaOpt = Annotated[
    str | None, typer.Option("--schema", help="Schema (PostgreSQL) or database (MariaDB) of the outbox.")
]
OutboxOpt = Annotated[str | None, typer.Option("--outbox-table", help="Outbox table name (default outbox).")]
TableSchemaOpt = Annotated[
    str | None, typer.Option("--table-schema", help="Schema of the business table (default: --schema).")
]
ConfigOpt = Annotated[str | None, typer.Option("--config", help="TOML config file (env OUTBOXKIT_CONFIG).")]


def _split(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(part.strip() for part in text.split(",") if part.strip())


@capture_app.command("add")
def add(
    table: Annotated[str, typer.Option("--table", help="The business table to capture.")],
    topic: Annotated[str, typer.Option("--topic", help="Topic of the events, e.g. orders.changed.")],
    key: Annotated[str | None, typer.Option("--key", help="Column whose value is the event key.")] = None,
    on: Annotated[str, typer.Option("--on", help="Operations to capture: insert,update,delete.")] = ",".join(
        OPERATIONS
    ),
    columns: Annotated[
        str | None, typer.Option("--columns", help="Columns in the payload (default: all), e.g. id,status.")
    ] = None,
    db: DbOpt = None,
    schema: SchemaOpt = None,
    outbox_table: OutboxOpt = None,
    table_schema: TableSchemaOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Install (or replace) the trigger(s) that write an outbox row for each change of --table."""
    settings = resolve({"db": db, "table": outbox_table, "schema": schema}, config_file=config)
    spec = CaptureSpec(TableRef(table, table_schema or schema), topic, key, _split(on) or (), _split(columns))
    add_capture(settings.require_db(), spec, settings.ref)
    err.print(f"capturing {', '.join(spec.on)} on {table} as {topic} into {settings.ref.table}")


@capture_app.command("list")
def list_(
    db: DbOpt = None,
    schema: SchemaOpt = None,
    outbox_table: OutboxOpt = None,
    config: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")] = False,
) -> None:
    """Captured tables, with their topic, key, operations and columns."""
    settings = resolve({"db": db, "table": outbox_table, "schema": schema}, config_file=config)
    found = list_captures(settings.require_db(), settings.ref)
    docs = [
        {
            "schema": spec.target.schema,
            "table": spec.target.table,
            "topic": spec.topic,
            "key": spec.key,
            "on": list(spec.on),
            "columns": None if spec.columns is None else list(spec.columns),
            "trigger_version": version,
        }
        for spec, version in found
    ]
    if as_json:
        typer.echo(json.dumps(docs, indent=2))
        return
    view = Table(title=f"captured tables ({len(docs)})")
    for name in ("table", "topic", "key", "on", "columns"):
        view.add_column(name)
    for d in docs:
        name = f"{d['schema']}.{d['table']}" if d["schema"] else str(d["table"])
        cols = "all" if d["columns"] is None else ",".join(d["columns"])  # type: ignore[arg-type]
        view.add_row(name, str(d["topic"]), str(d["key"] or ""), ",".join(d["on"]), cols)  # type: ignore[arg-type]
    out.print(view)


@capture_app.command("remove")
def remove(
    table: Annotated[str, typer.Option("--table", help="The business table to stop capturing.")],
    db: DbOpt = None,
    schema: SchemaOpt = None,
    outbox_table: OutboxOpt = None,
    table_schema: TableSchemaOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Drop the capture trigger(s) of --table (rows already in the outbox stay and are relayed)."""
    settings = resolve({"db": db, "table": outbox_table, "schema": schema}, config_file=config)
    if not remove_capture(settings.require_db(), TableRef(table, table_schema or schema), settings.ref):
        err.print(f"{table} is not captured; nothing changed")
        raise SystemExit(1)
    err.print(f"stopped capturing {table}")


__all__ = ["capture_app"]
