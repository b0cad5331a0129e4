"""``outboxkit streams list | show`` and ``outboxkit projections status | rebuild``: the event
store's commands. Registered on the main app by ``outboxkit/cli.py``; the work is in
``outboxkit.eventstore.commands``."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from outboxkit.config import resolve

streams_app = typer.Typer(
    name="streams",
    help="Event store streams: list them, show one (docs/event-sourcing.md).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
projections_app = typer.Typer(
    name="projections",
    help="Event store projections: status, rebuild (docs/event-sourcing.md).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True, soft_wrap=True)

DbOpt = Annotated[str | None, typer.Option("--db", help="Database URL (env OUTBOXKIT_DB).", show_default=False)]
SchemaOpt = Annotated[str | None, typer.Option("--schema", help="Database schema (PostgreSQL).")]
ConfigOpt = Annotated[str | None, typer.Option("--config", help="TOML config file (env OUTBOXKIT_CONFIG).")]
EsTableOpt = Annotated[str | None, typer.Option("--table", help="Event store table name (default events).")]


@streams_app.command("list")
def streams_list(
    db: DbOpt = None,
    table: EsTableOpt = None,
    schema: SchemaOpt = None,
    config: ConfigOpt = None,
    after: Annotated[str, typer.Option("--after", help="List streams whose id sorts after this.")] = "",
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many streams.")] = 100,
) -> None:
    """List streams with their version."""
    from outboxkit.eventstore.commands import streams_list as run

    settings = resolve({"db": db}, config_file=config)
    for line in run(settings.require_db(), table, schema, after=after, limit=limit):
        typer.echo(line)


@streams_app.command("show")
def streams_show(
    stream: Annotated[str, typer.Argument(help="The stream id.")],
    db: DbOpt = None,
    table: EsTableOpt = None,
    schema: SchemaOpt = None,
    config: ConfigOpt = None,
    start: Annotated[int | None, typer.Option("--from", min=1, help="First version to show.")] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="At most this many events.")] = None,
) -> None:
    """Show a stream's events in version order."""
    from outboxkit.eventstore.commands import streams_show as run

    settings = resolve({"db": db}, config_file=config)
    for line in run(settings.require_db(), table, schema, stream, start=start, limit=limit):
        typer.echo(line)


@projections_app.command("status")
def projections_status(
    db: DbOpt = None, table: EsTableOpt = None, schema: SchemaOpt = None, config: ConfigOpt = None
) -> None:
    """Each projection's checkpoint, events handled and backlog."""
    from outboxkit.eventstore.commands import projections_status as run

    settings = resolve({"db": db}, config_file=config)
    for line in run(settings.require_db(), table, schema):
        typer.echo(line)


@projections_app.command("rebuild")
def projections_rebuild(
    projection: Annotated[
        str, typer.Option("--projection", help="module:attribute of the projection (or of a factory).")
    ],
    db: DbOpt = None,
    table: EsTableOpt = None,
    schema: SchemaOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Reset a projection and replay every event into it, in order."""
    from outboxkit.eventstore.commands import projections_rebuild as run

    settings = resolve({"db": db}, config_file=config)
    err.print(run(settings.require_db(), table, schema, projection))
