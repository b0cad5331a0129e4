"""``outboxkit dashboard``: registered on the main app by ``outboxkit/cli.py``."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from outboxkit.config import resolve

TOKEN_ENV = "OUTBOXKIT_DASHBOARD_TOKEN"  # noqa: S105 (the variable's name, not a secret)


def dashboard(
    db: Annotated[str | None, typer.Option("--db", help="Database URL (env OUTBOXKIT_DB).", show_default=False)] = None,
    broker: Annotated[
        str | None, typer.Option("--broker", help="Broker URL the relays publish to, shown on the page.")
    ] = None,
    table: Annotated[str | None, typer.Option("--table", help="Outbox table name (default outbox).")] = None,
    schema: Annotated[str | None, typer.Option("--schema", help="Database schema (PostgreSQL).")] = None,
    config: Annotated[str | None, typer.Option("--config", help="TOML config file (env OUTBOXKIT_CONFIG).")] = None,
    host: Annotated[
        str, typer.Option("--host", help="Address to bind; anything but loopback needs a token.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port to serve on.")] = 9465,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar=TOKEN_ENV,
            show_envvar=True,
            help="Token asked on the login form (at least 16 characters); required off loopback.",
        ),
    ] = None,
) -> None:
    """Serve the outbox dashboard (backlog, lag, relays, dead letters) until Ctrl-C."""
    from outboxkit.web.dashboard import Dashboard, run_dashboard

    settings = resolve({"db": db, "broker": broker, "table": table, "schema": schema}, config_file=config)
    board = Dashboard(settings.require_db(), settings.ref, host=host, token=token, broker_url=settings.broker)
    asyncio.run(run_dashboard(board, host=host, port=port))
