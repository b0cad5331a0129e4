"""The ``outboxkit`` command. Parses arguments and calls the layers below; nothing imports it."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from typer.exceptions import TyperException

from outboxkit.config import Settings, resolve
from outboxkit.errors import ConfigurationError, OutboxkitError, UnavailableError
from outboxkit.extras import missing_extra_message
from outboxkit.terminal import hide_flag_types, print_error

app = typer.Typer(
    name="outboxkit",
    help="Transactional outbox toolkit: migrate the schema, provision the bus, run the relay and consumers, the demo.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True, soft_wrap=True)
hide_flag_types()
_state: dict[str, Any] = {"debug": False}

DbOpt = Annotated[str | None, typer.Option("--db", help="Database URL (env OUTBOXKIT_DB).", show_default=False)]
BrokerOpt = Annotated[
    str | None, typer.Option("--broker", help="Broker URL, e.g. nats://127.0.0.1:4222 (env OUTBOXKIT_BROKER).")
]
TableOpt = Annotated[str | None, typer.Option("--table", help="Outbox table name (default outbox).")]
SchemaOpt = Annotated[str | None, typer.Option("--schema", help="Database schema (PostgreSQL).")]
ConfigOpt = Annotated[str | None, typer.Option("--config", help="TOML config file (env OUTBOXKIT_CONFIG).")]
FleetOpt = Annotated[
    str | None,
    typer.Option("--fleet", help="Fleet file (TOML): every outbox it lists, in one process (docs/fleet.md)."),
]
SummaryOpt = Annotated[
    float,
    typer.Option(
        "--summary-interval",
        envvar="OUTBOXKIT_SUMMARY_INTERVAL",
        min=0,
        help="Seconds between one-line progress summaries in the log (0 = none).",
    ),
]


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show info logs.")] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Only warnings and errors: no start line, no summaries.")
    ] = False,
    log_format: Annotated[
        str,
        typer.Option("--log-format", envvar="OUTBOXKIT_LOG_FORMAT", help="plain, or json: one JSON object per line."),
    ] = "plain",
) -> None:
    from outboxkit.core.logfmt import LIFE_LOGGER, LOG_FORMATS, configure_logging

    _state["debug"] = debug
    if log_format not in LOG_FORMATS:
        raise ConfigurationError(f"--log-format must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}")
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    configure_logging(level, "json" if log_format == "json" else "plain", sys.stderr)
    # The start line and the periodic summaries of the relay and the consumer are shown at the
    # default level: a process that says nothing looks dead. --quiet silences them.
    logging.getLogger(LIFE_LOGGER).setLevel(logging.WARNING if quiet else min(level, logging.INFO))
    if not debug:
        # Driver chatter (nats-py logs every reconnect attempt) is summarised by our own lines.
        logging.getLogger("nats").setLevel(logging.CRITICAL)


def _settings(config: str | None, **flags: Any) -> Settings:
    return resolve(flags, config_file=config)


@app.command()
def migrate(
    db: DbOpt = None,
    table: TableOpt = None,
    schema: SchemaOpt = None,
    config: ConfigOpt = None,
    sql: Annotated[bool, typer.Option("--sql", help="Print the DDL instead of running it.")] = False,
    dialect: Annotated[
        str | None, typer.Option("--dialect", help="With --sql and no --db: postgresql, sqlite or mariadb.")
    ] = None,
    no_notify: Annotated[
        bool, typer.Option("--no-notify", help="PostgreSQL: no NOTIFY trigger (the relay then polls).")
    ] = False,
    inbox: Annotated[
        bool, typer.Option("--inbox", help="Create the consumer's inbox tables (default table inbox) instead.")
    ] = False,
    event_store: Annotated[
        bool,
        typer.Option("--event-store", help="Create the event store's tables (default table events) instead."),
    ] = False,
    capture: Annotated[
        str,
        typer.Option(
            "--capture",
            help="wal: also the publication and replication slot of `relay --capture wal`; "
            "binlog: the binlog position table of `relay --capture binlog`.",
        ),
    ] = "table",
    fleet: FleetOpt = None,
) -> None:
    """Create or upgrade the outbox schema (idempotent)."""
    from outboxkit.migrate import migrate as run_migrate
    from outboxkit.migrate import migration_sql

    if fleet:
        _migrate_fleet(fleet)
        return

    settings = _settings(config, db=db, table=table, schema=schema)
    if event_store:
        from outboxkit.eventstore.commands import migrate_command

        done = migrate_command(
            settings.db, table, schema, sql=sql, dialect=dialect, notify=not no_notify, echo=typer.echo
        )
        if done:
            err.print(done)
        return
    if inbox:
        from outboxkit.inbox.schema import inbox_sql, migrate_inbox
        from outboxkit.stores.base import TableRef

        ref = TableRef(table or "inbox", schema)
        if sql:
            target = settings.db or dialect
            if not target:
                raise ConfigurationError("--sql needs --db URL or --dialect NAME")
            for stmt in inbox_sql(target, ref):
                typer.echo(stmt.rstrip() + ";\n")
            return
        migrate_inbox(settings.require_db(), ref)
        err.print(f"migrated inbox {ref.qualified}: schema is up to date")
        return
    if sql:
        target = settings.db or dialect
        if not target:
            raise ConfigurationError("--sql needs --db URL or --dialect NAME")
        for stmt in migration_sql(target, settings.ref, notify=not no_notify):
            typer.echo(stmt.rstrip() + ";\n")
        log_capture = capture_mode(capture, target)
        if log_capture is not None:
            script = log_capture.sql(settings.db, settings.ref)
            typer.echo(script.heading)
            for stmt in script.statements:
                typer.echo(stmt.rstrip() + ";\n")
            if script.note:
                typer.echo(script.note)
        return
    log_capture = capture_mode(capture, settings.require_db())
    count = run_migrate(settings.require_db(), settings.ref, notify=not no_notify)
    err.print(f"migrated {settings.ref.qualified}: {count} statements, schema is up to date")
    if log_capture is not None:
        err.print(log_capture.migrate(settings.require_db(), settings.ref))


@app.command()
def relay(
    db: DbOpt = None,
    broker: BrokerOpt = None,
    table: TableOpt = None,
    schema: SchemaOpt = None,
    config: ConfigOpt = None,
    source: Annotated[str | None, typer.Option("--source", help="CloudEvents source for rows without one.")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Rows per fetch (default 2000).")] = None,
    window: Annotated[int | None, typer.Option("--window", help="Unconfirmed publishes at once (1000).")] = None,
    poll_interval: Annotated[
        float | None, typer.Option("--poll-interval", help="Seconds between polls without notification (1.0).")
    ] = None,
    skip_dead_keys: Annotated[
        bool, typer.Option("--skip-dead-keys", help="Let a key's later events pass its dead letters.")
    ] = False,
    lease_ttl: Annotated[
        float | None, typer.Option("--lease-ttl", help="Seconds a bucket lease lives without renewal (6).")
    ] = None,
    max_attempts: Annotated[
        int | None,
        typer.Option("--max-attempts", help="Failed attempts before a dead letter (20, about 14 min of retries)."),
    ] = None,
    owner: Annotated[
        str | None,
        typer.Option(
            "--owner",
            help="This relay's name in the lease table, the same across its restarts (unique among running "
            "relays): started again, it takes its buckets back at once (default host:pid:random).",
        ),
    ] = None,
    http_port: Annotated[
        int,
        typer.Option(
            "--http-port",
            envvar="OUTBOXKIT_HTTP_PORT",
            min=0,
            max=65535,
            help="Serve /metrics, /healthz and /readyz on this port (0 = off, e.g. 9464).",
        ),
    ] = 0,
    http_host: Annotated[
        str,
        typer.Option(
            "--http-host",
            envvar="OUTBOXKIT_HTTP_HOST",
            help="Address for --http-port; anything but loopback (e.g. 0.0.0.0) is logged as a warning.",
        ),
    ] = "127.0.0.1",
    summary_interval: SummaryOpt = 60.0,
    dashboard: Annotated[
        bool,
        typer.Option("--dashboard", envvar="OUTBOXKIT_DASHBOARD", help="Also serve the dashboard on --http-port."),
    ] = False,
    dashboard_token: Annotated[
        str | None,
        typer.Option(
            "--dashboard-token",
            envvar="OUTBOXKIT_DASHBOARD_TOKEN",
            help="Token for the dashboard's login (16+ characters); required when --http-host is not loopback.",
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            help="Relay processes sharing the buckets, supervised by this one (env OUTBOXKIT_WORKERS; default 1).",
        ),
    ] = None,
    capture: Annotated[
        str,
        typer.Option(
            "--capture",
            envvar="OUTBOXKIT_CAPTURE",
            help="table: poll the outbox table; wal: tail PostgreSQL's log (migrate --capture wal first); "
            "binlog: tail the MariaDB/MySQL binlog (migrate --capture binlog first).",
        ),
    ] = "table",
    resume_from_now: Annotated[
        bool,
        typer.Option(
            "--resume-from-now",
            help="--capture wal or binlog, after the log the relay needs is gone (slot invalidated, dropped, "
            "missing; binlog purged): drain pending rows with the table relay, then tail from now.",
        ),
    ] = False,
    until_empty: Annotated[
        bool,
        typer.Option(
            "--until-empty",
            help="Publish what is pending, wait for every confirmation and mark, exit 0 (CI, migrations, "
            "tests); exit 1 with the reason if rows stay pending past --timeout, are held behind dead keys, "
            "or were dead-lettered.",
        ),
    ] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, help="With --until-empty: seconds before giving up.")
    ] = 60.0,
    fleet: FleetOpt = None,
) -> None:
    """Publish committed outbox rows to the broker until SIGTERM/SIGINT (or, with --until-empty,
    until none is pending)."""
    if fleet:
        if db or table or schema or workers or until_empty or dashboard or capture != "table":
            raise ConfigurationError(
                "--fleet takes its outboxes from the file: no --db, --table, --schema, --workers, "
                "--until-empty, --dashboard or --capture with it (run several fleet processes to share the work)"
            )
        _relay_fleet(fleet, owner=owner, http_host=http_host, http_port=http_port, summary=summary_interval)
        return
    from outboxkit.relay.loop import Relay
    from outboxkit.relay.process import build_relay
    from outboxkit.relay.tail import TailRelay, build_tail_relay
    from outboxkit.web import RelayMetrics, serve_relay

    settings = _settings(
        config,
        db=db,
        broker=broker,
        table=table,
        schema=schema,
        source=source,
        batch_size=batch_size,
        window=window,
        poll_interval=poll_interval,
        lease_ttl=lease_ttl,
        max_attempts=max_attempts,
        hold_dead_keys=False if skip_dead_keys else None,
        workers=workers,
        owner=owner,
    )
    db_url, broker_url = settings.require_db(), settings.require_broker()
    if until_empty:
        _relay_until_empty(settings, db_url, broker_url, capture, timeout, busy=bool(dashboard or http_port))
        return
    if settings.workers > 1:
        from outboxkit.workers import run_workers

        if dashboard:
            raise ConfigurationError(
                "--dashboard is not served by --workers: run `outboxkit dashboard` beside them (same --db)"
            )
        if capture_mode(capture, db_url) is not None:
            # A slot has one reader at a time: more processes would only stand by.
            raise ConfigurationError(
                f"--capture {capture} reads the log with one reader: --workers cannot share it; "
                "run one relay (others on other machines stand by)"
            )

        raise typer.Exit(
            run_workers(
                workers=settings.workers,
                db=db_url,
                broker=broker_url,
                table=settings.ref.table,
                schema=settings.ref.schema,
                source=settings.source,
                relay=settings.relay,
                hold_dead_keys=settings.hold_dead_keys,
                http_host=http_host,
                http_port=http_port,
                summary_interval=summary_interval,
                debug=_state["debug"],
            )
        )
    board = None
    if dashboard:
        from outboxkit.web.dashboard import Dashboard

        if not http_port:
            raise ConfigurationError("--dashboard is served on the relay's HTTP port: add --http-port (e.g. 9464)")
        board = Dashboard(
            db_url,
            settings.ref,
            host=http_host,
            token=dashboard_token,
            broker_url=broker_url,
            flag_name="--dashboard-token",
        )
    metrics = RelayMetrics()
    log_capture = capture_mode(capture, db_url)
    if resume_from_now:
        if log_capture is None:
            raise ConfigurationError(f"--resume-from-now is for --capture {' or --capture '.join(capture_names())}")
        from outboxkit.relay.resume import resume_from_now as resume

        # A new position in the log, then drain the pending rows committed before it (docs/log-tailing.md).
        asyncio.run(
            resume(
                log_capture,
                db_url,
                broker_url,
                ref=settings.ref,
                source=settings.source,
                config=settings.relay,
                hold_dead_keys=settings.hold_dead_keys,
            )
        )
    common: dict[str, Any] = {
        "ref": settings.ref,
        "source": settings.source,
        "config": settings.relay,
        "hold_dead_keys": settings.hold_dead_keys,
        "observer": metrics,
    }
    relay_: Relay | TailRelay
    if log_capture is None:
        relay_ = build_relay(db_url, broker_url, **common)
    else:
        relay_ = build_tail_relay(db_url, broker_url, capture=log_capture.name, **common)
        metrics.slot_lag = relay_.slot_lag
    stats = asyncio.run(
        serve_relay(
            relay_,
            metrics,
            db=db_url,
            broker=broker_url,
            host=http_host,
            port=http_port,
            table=settings.ref.qualified,
            summary_interval=summary_interval,
            dashboard=board,
        )
    )
    err.print(
        f"relay stopped: {stats.published} published, {stats.dead_lettered} dead-lettered, "
        f"{stats.fenced} fenced, {stats.handovers} buckets taken over"
    )


def _relay_fleet(path: str, *, owner: str | None, http_host: str, http_port: int, summary: float) -> None:
    """``relay --fleet FILE``: the outboxes of the file in this process; the file says the rest."""
    from outboxkit.config import check_owner
    from outboxkit.fleet.runner import Fleet
    from outboxkit.web.fleet import serve_fleet

    fleet_ = Fleet(path, owner=check_owner(owner))  # a bad file fails here, in one line
    asyncio.run(serve_fleet(fleet_, host=http_host, port=http_port, summary_interval=summary))
    err.print(f"fleet stopped: {len(fleet_.spec.outboxes)} outboxes released")


def _migrate_fleet(path: str) -> None:
    """``migrate --fleet FILE``: every outbox of the file; exit 1 if one failed."""
    from outboxkit.fleet.config import load_fleet
    from outboxkit.fleet.ops import fleet_migrate

    results = fleet_migrate(load_fleet(path))
    for m in results:
        err.print(f"{'migrated' if m.ok else 'FAILED  '} {m.tenant} {m.table}: {m.detail}")
    failed = sum(1 for m in results if not m.ok)
    err.print(f"{len(results) - failed} of {len(results)} outboxes migrated")
    if failed:
        raise typer.Exit(1)


def _relay_until_empty(
    settings: Settings, db_url: str, broker_url: str, capture: str, timeout: float, *, busy: bool
) -> None:
    """``relay --until-empty``: one relay process, no HTTP; exit 0 once nothing is pending."""
    from outboxkit.ops import queries as q
    from outboxkit.relay.drain import Pending, drain
    from outboxkit.relay.process import build_relay

    if settings.workers > 1 or capture_mode(capture, db_url) is not None or busy:
        # One table relay is what drains: log tailing starts at the log's end (not at the pending
        # rows), and a process that exits soon has nothing to serve over HTTP.
        raise ConfigurationError("--until-empty runs one table relay: without --workers, --capture, --http-port")

    def count() -> Pending:
        with q.open_db(db_url, settings.ref) as conn:
            status = q.status(conn)
        return Pending(sum(t.pending for t in status.topics), status.held_pending)

    async def probe() -> Pending:
        return await asyncio.to_thread(count)

    relay_ = build_relay(
        db_url,
        broker_url,
        ref=settings.ref,
        source=settings.source,
        config=settings.relay,
        hold_dead_keys=settings.hold_dead_keys,
    )
    result = asyncio.run(drain(relay_, probe, timeout=timeout, hold_dead_keys=settings.hold_dead_keys))
    if result.reason is not None:
        print_error(err, result.reason)  # the one line a CI log shows
        raise typer.Exit(1)
    err.print(f"relay --until-empty: {result.stats.published} published, the outbox has nothing pending")


@app.command()
def consume(
    handler: Annotated[str, typer.Option("--handler", help="module:function called as handler(conn, event).")],
    group: Annotated[str, typer.Option("--group", help="Consumer name: durable subscription and inbox key.")],
    topic: Annotated[list[str], typer.Option("--topic", help="Topic (pattern) to consume; repeatable.")],
    db: DbOpt = None,
    broker: BrokerOpt = None,
    schema: SchemaOpt = None,
    config: ConfigOpt = None,
    inbox_table: Annotated[str, typer.Option("--inbox-table", help="Inbox table name.")] = "inbox",
    max_attempts: Annotated[int, typer.Option("--max-attempts", help="Failures before a dead letter.")] = 5,
    check_order: Annotated[
        bool, typer.Option("--check-order", help="Report per-key out-of-order arrivals (sequence attribute).")
    ] = False,
    skip_failed_keys: Annotated[
        bool,
        typer.Option("--skip-failed-keys", help="Let a key's later messages pass one that is failing (default: wait)."),
    ] = False,
    summary_interval: SummaryOpt = 60.0,
) -> None:
    """Consume effectively once: each event's handler runs in the inbox's transaction, then the ack.

    The handler module is imported like ``python -m`` would: from the current directory first."""
    from outboxkit.brokers.registry import check_topics
    from outboxkit.inbox.process import load_handler, serve_inbox

    settings = _settings(config, db=db, broker=broker, schema=schema)
    if max_attempts < 1:
        raise ConfigurationError("--max-attempts must be at least 1")
    check_topics(settings.require_broker(), topic)
    fn = load_handler(handler)
    stats = asyncio.run(
        serve_inbox(
            settings.require_broker(),
            settings.require_db(),
            group=group,
            topics=topic,
            handler=fn,
            table=inbox_table,
            schema=settings.ref.schema,
            max_attempts=max_attempts,
            check_order=check_order,
            hold_failed_keys=not skip_failed_keys,
            handler_name=handler,
            summary_interval=summary_interval,
        )
    )
    err.print(
        f"consumer stopped: {stats.processed} processed, {stats.duplicates} duplicates skipped, "
        f"{stats.dead_lettered} dead-lettered"
    )


@app.command()
def provision(
    topic: Annotated[
        list[str], typer.Option("--topic", help="Topic or pattern the relay publishes (orders.>); repeatable.")
    ],
    broker: BrokerOpt = None,
    config: ConfigOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only print what would be created or changed.")] = False,
    stream: Annotated[
        str | None, typer.Option("--stream", help="NATS: stream name (default: the first topic's first token).")
    ] = None,
    duplicate_window: Annotated[
        float | None,
        typer.Option("--duplicate-window", min=0.001, help="NATS: seconds re-sent ids are dropped (new: 120)."),
    ] = None,
    replicas: Annotated[int | None, typer.Option("--replicas", min=1, help="NATS: stream replicas (new: 1).")] = None,
    queue: Annotated[
        str | None, typer.Option("--queue", help="RabbitMQ: a quorum queue bound to the topics (the --group).")
    ] = None,
    partitions: Annotated[int | None, typer.Option("--partitions", min=1, help="Kafka: partitions per topic.")] = None,
    replication: Annotated[
        int | None, typer.Option("--replication", min=1, help="Kafka: replication factor of a new topic.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the steps as JSON.")] = False,
) -> None:
    """Create what the relay publishes into (JetStream stream, RabbitMQ exchange and queue, Kafka
    topics), idempotently and durably configured; Redis and MQTT need nothing (it says so)."""
    import json

    from outboxkit.brokers.provision import ProvisionRequest
    from outboxkit.brokers.registry import check_topics, provisioner_for

    url = _settings(config, broker=broker).require_broker()
    check_topics(url, topic)
    request = ProvisionRequest(
        topics=tuple(topic),
        stream=stream,
        duplicate_window=duplicate_window,
        replicas=replicas,
        queue=queue,
        partitions=partitions,
        replication=replication,
    )
    steps = asyncio.run(provisioner_for(url)(url, request, dry_run=dry_run))
    if as_json:
        typer.echo(json.dumps({"dry_run": dry_run, "steps": [s.as_dict() for s in steps]}, indent=2))
        return
    for step in steps:
        typer.echo(step.line(dry_run=dry_run))


@app.command()
def demo(
    events: Annotated[int, typer.Option("--events", "-n", help="Events to commit.")] = 5000,
    writers: Annotated[int, typer.Option("--writers", help="Concurrent writer threads.")] = 4,
    kills: Annotated[int, typer.Option("--kills", help="SIGKILLs of the relay during the run.")] = 3,
    db: Annotated[str | None, typer.Option("--db", help="Use this database instead of a temporary SQLite.")] = None,
    broker: Annotated[
        str | None, typer.Option("--broker", help="Use this NATS instead of an embedded nats-server.")
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Random seed for a repeatable run.")] = None,
) -> None:
    """Run an orders service, a relay that gets SIGKILLed, and a subscriber; print the tally."""
    from outboxkit.config import check_broker_url, check_db_url
    from outboxkit.lab.demo import DemoOptions, run_demo

    options = DemoOptions(
        events=events,
        writers=writers,
        kills=kills,
        db=check_db_url(db) if db else None,
        broker=check_broker_url(broker) if broker else None,
        seed=seed,
    )
    if broker and not broker.startswith(("nats://", "tls://")):
        # The demo's subscriber reads a JetStream stream: of the buses, only NATS will do here.
        raise ConfigurationError(f"demo --broker takes a NATS URL (nats://host:4222), got {broker.split(':', 1)[0]}://")
    if events < 1 or writers < 1 or kills < 0:
        raise ConfigurationError("--events and --writers must be positive, --kills not negative")
    result = run_demo(options, Console())
    raise typer.Exit(0 if result.ok else 1)


# Commands that live with their layer (the lab, operations), registered here so that nothing
# below imports the CLI.
from outboxkit.capture.cli import capture_app  # noqa: E402
from outboxkit.eventstore.cli import projections_app, streams_app  # noqa: E402
from outboxkit.inbox.cli import inbox_app  # noqa: E402
from outboxkit.lab.cli import lab_app  # noqa: E402
from outboxkit.ops.cli import cleanup, dead_letters_app, replay, status  # noqa: E402
from outboxkit.ops.slots import capture_mode, slot_app  # noqa: E402
from outboxkit.stores.registry import capture_names  # noqa: E402
from outboxkit.web.dashboard.cli import dashboard as dashboard_command  # noqa: E402

app.add_typer(lab_app, name="lab")
app.add_typer(capture_app, name="capture")
app.add_typer(streams_app, name="streams")
app.add_typer(projections_app, name="projections")
app.add_typer(slot_app, name="slot")
app.command()(status)
app.add_typer(dead_letters_app, name="dead-letters")
app.add_typer(inbox_app, name="inbox")
app.command()(replay)
app.command()(cleanup)
app.command(name="dashboard")(dashboard_command)


def main(argv: list[str] | None = None, prog_name: str | None = None) -> None:
    """Console entry point: one line per error, tracebacks only with --debug. ``argv`` (default
    ``sys.argv[1:]``) lets other front ends run a command, e.g. Django's ``manage.py outbox_relay``."""
    try:
        # Without standalone mode click returns typer.Exit's code instead of exiting: pass it on.
        rc = app(args=argv, prog_name=prog_name, standalone_mode=False)
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        if _state["debug"]:
            raise
        if isinstance(exc, typer.Abort):
            sys.exit(130)
        show = getattr(exc, "show", None)
        if isinstance(exc, TyperException) and callable(show):  # usage errors: typer's own message
            show()
            sys.exit(int(getattr(exc, "exit_code", 2)))
        missing = missing_extra_message(exc)
        if missing is not None:  # an optional dependency of this command is not installed
            print_error(err, missing)
            sys.exit(2)
        code = 2 if isinstance(exc, ConfigurationError) else 1
        from outboxkit.core.logfmt import redact_text

        text = redact_text(str(exc))  # a driver's message may quote a URL or a password
        if isinstance(exc, OutboxkitError):
            print_error(err, text, hint=_hint(exc))
        else:
            print_error(err, f"{type(exc).__name__}: {text} (run with --debug for details)")
        sys.exit(code)


# Words that say the service answered and refused us: asking whether it runs would mislead.
_REFUSED = ("access_refused", "authentication", "password", "noauth", "wrongpass", "not authorized", "permission")
# Words that say nothing answered at that address: then the question is the right one.
_UNREACHED = (
    "connection refused",
    "connect call failed",
    "timed out",
    "timeout",
    "name or service not known",
    "temporary failure in name resolution",
    "could not translate host name",
    "nodename nor servname",
    "no route to host",
    "network is unreachable",
    "errno 111",
)


def _hint(exc: OutboxkitError) -> str | None:
    """The "is it running?" hint, only where that is the likely cause of the error."""
    if not isinstance(exc, UnavailableError):
        return None
    text = str(exc).lower()
    if any(word in text for word in _REFUSED) or not any(word in text for word in _UNREACHED):
        return None
    return "is the service running and the URL right?"
