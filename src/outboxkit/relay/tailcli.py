"""``outboxkit slot status|drop`` and the ``--capture`` choice of ``relay`` and ``migrate``.

Registered by ``cli.py`` (nothing here imports the CLI module)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from outboxkit.config import resolve
from outboxkit.errors import ConfigurationError
from outboxkit.stores.base import TableRef

CAPTURES = ("table", "wal", "binlog")

slot_app = typer.Typer(
    help="The replication slot of `relay --capture wal`: lag and retention (status), removal (drop).",
    no_args_is_help=True,
)


def capture_mode(capture: str, db: str) -> str:
    """Validate ``--capture`` against the database (one line, exit 2, on a mismatch)."""
    if capture not in CAPTURES:
        raise ConfigurationError(f"--capture must be one of {', '.join(CAPTURES)}, got {capture!r}")
    if capture == "wal" and not db.startswith(("postgresql", "postgres")):
        raise ConfigurationError("--capture wal needs PostgreSQL (a postgresql:// database)")
    if capture == "binlog" and not db.startswith(("mysql", "mariadb")):
        raise ConfigurationError("--capture binlog needs MariaDB or MySQL (a mysql:// or mariadb:// database)")
    return capture


def _ref_and_db(db: str | None, table: str | None, schema: str | None, config: str | None) -> tuple[str, TableRef]:
    settings = resolve({"db": db, "table": table, "schema": schema}, config_file=config)
    url = settings.require_db()
    capture_mode("wal", url)
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
    from outboxkit.stores.postgres.wal import resolve_slot, slot_info

    url, ref = _ref_and_db(db, table, schema, config)
    info = slot_info(url, resolve_slot(url, ref))
    if as_json:
        typer.echo(json.dumps(info.__dict__))
    elif not info.exists:
        typer.echo(f"slot {info.name}: missing (run `outboxkit migrate --capture wal`)")
    else:
        reader = f"read by pid {info.active_pid}" if info.active_pid else "no reader attached right now"
        seconds = "-" if info.lag_seconds is None else f"{info.lag_seconds:.1f}s"
        typer.echo(
            f"slot {info.name}: confirmed {info.confirmed_lsn}, lag {info.lag_bytes} bytes / {seconds}, "
            f"wal_status {info.wal_status}, {reader}"
            + (
                "; invalidated: recover with `outboxkit relay --capture wal --resume-from-now`"
                if info.wal_status == "lost"
                else ""
            )
        )
    if info.exists and info.max_slot_wal_keep_size_mb < 0:
        typer.echo(
            "warning: max_slot_wal_keep_size is unlimited (-1): a stalled relay makes PostgreSQL keep WAL "
            "until the disk is full; set it (e.g. ALTER SYSTEM SET max_slot_wal_keep_size = '10GB')",
            err=True,
        )
    raise typer.Exit(0 if info.exists else 1)


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
    from outboxkit.stores.postgres.wal import drop_slot, resolve_slot

    url, ref = _ref_and_db(db, table, schema, config)
    if not yes:
        raise ConfigurationError(
            "slot drop releases the WAL the slot holds: events not relayed yet stay only in "
            "the outbox table (if any); pass --yes"
        )
    name = resolve_slot(url, ref)
    dropped = drop_slot(url, ref, name)
    typer.echo(f"slot {name}: {'dropped' if dropped else 'did not exist'}")
