"""``outboxkit slot status|drop`` and the ``--capture`` choice of ``relay`` and ``migrate``.

Registered by ``cli.py`` (nothing here imports the CLI module). The slot is the ``wal`` log
capture's position; the commands reach it through the log-capture role (``stores/logcapture.py``)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from outboxkit.config import resolve
from outboxkit.errors import ConfigurationError
from outboxkit.stores.base import TableRef
from outboxkit.stores.logcapture import LogCapture
from outboxkit.stores.registry import capture_names, log_capture_for

slot_app = typer.Typer(
    help="The replication slot of `relay --capture wal`: lag and retention (status), removal (drop).",
    no_args_is_help=True,
)


def capture_mode(capture: str, db: str) -> LogCapture | None:
    """Validate ``--capture`` against the database (one line, exit 2, on a mismatch): None for
    ``table``, else the database's log capture of that name."""
    if capture == "table":
        return None
    if capture not in capture_names():
        raise ConfigurationError(f"--capture must be one of {', '.join(['table', *capture_names()])}, got {capture!r}")
    return log_capture_for(db, capture)


def _slot_capture(db: str | None, table: str | None, schema: str | None, config: str | None) -> tuple[str, TableRef]:
    settings = resolve({"db": db, "table": table, "schema": schema}, config_file=config)
    url = settings.require_db()
    log_capture_for(url, "wal")
    return url, settings.ref


DbOpt = Annotated[str | None, typer.Option("--db", envvar="OUTBOXKIT_DB", help="postgresql:// URL.")]
TableOpt = Annotated[str | None, typer.Option("--table", help="Outbox table (default outbox).")]
SchemaOpt = Annotated[str | None, typer.Option("--schema", help="Schema of the outbox table.")]
ConfigOpt = Annotated[str | None, typer.Option("--config", help="TOML configuration file.")]


@slot_app.command("status")
def slot_status(
    db: DbOpt = None,
    table: TableOpt = None,
    schema: SchemaOpt = None,
    config: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object instead of text.")] = False,
) -> None:
    """Lag in bytes and seconds, the WAL the slot retains, who reads it; warns when retention is unlimited."""
    url, ref = _slot_capture(db, table, schema, config)
    status = log_capture_for(url, "wal").status(url, ref)
    typer.echo(json.dumps(status.doc) if as_json else status.detail)
    if status.warning:
        typer.echo(status.warning, err=True)
    raise typer.Exit(0 if status.exists else 1)


@slot_app.command("drop")
def slot_drop(
    db: DbOpt = None,
    table: TableOpt = None,
    schema: SchemaOpt = None,
    config: ConfigOpt = None,
    yes: Annotated[
        bool, typer.Option("--yes", help="Really drop (events not yet relayed are lost to the slot).")
    ] = False,
) -> None:
    """Drop the slot and its publication (stop the wal relays first; the table relay takes over)."""
    url, ref = _slot_capture(db, table, schema, config)
    if not yes:
        raise ConfigurationError(
            "slot drop releases the WAL the slot holds: events not relayed yet stay only in "
            "the outbox table (if any); pass --yes"
        )
    what, dropped = log_capture_for(url, "wal").drop(url, ref)
    typer.echo(f"{what}: {'dropped' if dropped else 'did not exist'}")
