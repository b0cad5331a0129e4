"""Operator commands: ``status``, ``dead-letters list|retry|discard``, ``replay``, ``cleanup``.

Registered on the main ``outboxkit`` app by ``outboxkit/cli.py``; :data:`app` bundles them all for
tests and embedding. Human output is Rich tables on stdout; ``--json`` prints one JSON document on
stdout instead (keys in docs/operations.md); progress and prompts go to stderr.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console

from outboxkit.config import resolve
from outboxkit.errors import ConfigurationError, OutboxkitError
from outboxkit.ops import queries as q
from outboxkit.stores.logcapture import LogStatus
from outboxkit.stores.registry import database_for
from outboxkit.terminal import output_console, print_error, print_rows

# Tables keep full ids and topics when piped (a very wide console) or on a narrow terminal (one
# "name: value" line per field instead of a table that would cut them).
out = output_console()
err = Console(stderr=True, soft_wrap=True)

DbOpt = Annotated[str | None, typer.Option("--db", help="Database URL (env OUTBOXKIT_DB).", show_default=False)]
TableOpt = Annotated[str | None, typer.Option("--table", help="Outbox table name (default outbox).")]
SchemaOpt = Annotated[str | None, typer.Option("--schema", help="Database schema (PostgreSQL).")]
ConfigOpt = Annotated[str | None, typer.Option("--config", help="TOML config file (env OUTBOXKIT_CONFIG).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of tables.")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
IdOpt = Annotated[list[str] | None, typer.Option("--id", help="Event id (UUID); repeatable.", show_default=False)]
TopicOpt = Annotated[str | None, typer.Option("--topic", help="Only this topic.")]
KeyOpt = Annotated[str | None, typer.Option("--key", help="Only this key.")]
AllOpt = Annotated[bool, typer.Option("--all", help="Every dead letter.")]


def _exit(code: int) -> SystemExit:
    # SystemExit rather than typer.Exit: outboxkit.cli.main() runs the app with
    # standalone_mode=False, where click *returns* typer.Exit's code instead of exiting with it.
    return SystemExit(code)


def _refuse(message: str) -> NoReturn:
    """A usage refusal: one line, exit status 2, nothing changed."""
    print_error(err, message)
    raise _exit(2)


@contextmanager
def _session(db: str | None, table: str | None, schema: str | None, config: str | None) -> Iterator[q.Db]:
    """Settings resolved like every other command, one connection, our errors as one line.

    Under ``outboxkit --debug`` (root logger at DEBUG) errors propagate for the traceback."""
    try:
        settings = resolve({"db": db, "table": table, "schema": schema}, config_file=config)
        with q.open_db(settings.require_db(), settings.ref) as conn:
            yield conn
    except OutboxkitError as exc:
        if logging.getLogger().isEnabledFor(logging.DEBUG):
            raise
        print_error(err, str(exc))
        raise _exit(2 if isinstance(exc, ConfigurationError) else 1) from None


def _log_positions(db: str | None, table: str | None, schema: str | None, config: str | None) -> list[LogStatus]:
    """The outbox's log-capture positions (``migrate --capture wal|binlog``), those it has."""
    settings = resolve({"db": db, "table": table, "schema": schema}, config_file=config)
    url = settings.require_db()
    found = (capture.status(url, settings.ref) for capture in database_for(url).log_captures())
    return [status for status in found if status.exists]


def _emit_json(doc: Any) -> None:
    typer.echo(json.dumps(doc, indent=2, default=str))


def _report(as_json: bool, doc: dict[str, Any], text: str) -> None:
    """The outcome of a command: ``doc`` as JSON on stdout for scripts, else ``text`` for humans."""
    if as_json:
        _emit_json(doc)
    else:
        err.print(text)


def _fleet_status(path: str, as_json: bool) -> None:
    """``status --fleet FILE``: every outbox's backlog, oldest pending, dead letters, owners; exit 1
    when one of them could not be read."""
    from outboxkit.fleet.config import load_fleet
    from outboxkit.fleet.ops import fleet_status

    found = fleet_status(load_fleet(path))
    if as_json:
        _emit_json({"outboxes": [s.to_json() for s in found]})
    else:
        headers = ("tenant", "outbox", "pending", "oldest pending", "dead", "owners")
        rows: list[tuple[object, ...]] = [
            (
                s.tenant,
                f"{s.table} ({s.db})",
                f"{s.pending:,}" if s.ok and s.pending is not None else "-",
                _age(s.oldest_pending_age_s) if s.ok else "-",
                f"{s.dead:,}" if s.ok and s.dead is not None else "-",
                ", ".join(s.owners) if s.ok else f"UNREACHABLE: {s.error}",
            )
            for s in found
        ]
        print_rows(out, f"fleet {path}: {len(found)} outboxes", headers, rows, whole={"tenant"}, right=headers[2:5])
    if any(not s.ok for s in found):
        raise _exit(1)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def _selector(ids: list[str] | None, topic: str | None, key: str | None, everything: bool) -> q.Selector:
    return q.Selector(ids=tuple(ids or ()), topic=topic, key=key, everything=everything)


def _confirm(question: str, yes: bool) -> None:
    # The prompt goes to stderr so that --json output on stdout stays parseable. Closing the input
    # (EOF, Ctrl-D, no terminal at all) is a "no", as documented: nothing changed, exit 1.
    if yes:
        return
    try:
        agreed = typer.confirm(question, default=False, err=True)
    except typer.Abort:
        err.print()
        agreed = False
    if not agreed:
        err.print("nothing changed")
        raise _exit(1)


def status(
    db: DbOpt = None,
    table: TableOpt = None,
    schema: SchemaOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
    fleet: Annotated[
        str | None, typer.Option("--fleet", help="Fleet file: one line per outbox it lists (docs/fleet.md).")
    ] = None,
) -> None:
    """Backlog per topic, dead letters, retained rows, and live relays with their buckets."""
    if fleet:
        _fleet_status(fleet, as_json)
        return
    with _session(db, table, schema, config) as conn:
        doc = q.status(conn).to_json()
    positions = _log_positions(db, table, schema, config)
    for position in positions:
        doc[position.key] = position.doc
    if as_json:
        _emit_json(doc)
        return
    headers = ("topic", "pending", "oldest pending", "dead", "delivered (kept)", "discarded", "oldest kept")
    rows: list[tuple[object, ...]] = [
        (
            t["topic"],
            f"{t['pending']:,}",
            _age(t["oldest_pending_age_s"]),
            f"{t['dead']:,}",
            f"{t['delivered']:,}",
            f"{t['discarded']:,}",
            _age(t["oldest_delivered_age_s"]),
        )
        for t in doc["topics"]
    ]
    rows.append(
        (
            "total",
            f"{doc['pending']:,}",
            _age(doc["oldest_pending_age_s"]),
            f"{doc['dead']:,}",
            f"{doc['delivered']:,}",
            f"{doc['discarded']:,}",
            _age(doc["oldest_delivered_age_s"]),
        )
    )
    print_rows(out, f"outbox {doc['table']} ({doc['database']})", headers, rows, whole={"topic"}, right=headers[1:])
    if doc["dead"]:
        out.print(
            f"{doc['dead_keys']:,} key(s) with dead letters hold {doc['held_pending']:,} pending row(s) back "
            "(see `outboxkit dead-letters list`)"
        )
    for position in positions:
        out.print(position.line)
    relays = doc["relays"]
    if relays["mode"] == "single":
        out.print("relays: single relay mode (no leases)")
        return
    if not relays["live"]:
        out.print(f"relays: none live (no heartbeat within {q.LIVE_WINDOW_S}s); nothing is being published")
    if relays["live"]:
        print_rows(
            out,
            f"live relays (heartbeat within {q.LIVE_WINDOW_S}s)",
            ("owner", "heartbeat", "started", "buckets", "info"),
            [
                (
                    r["owner"],
                    f"{_age(r['heartbeat_age_s'])} ago",
                    r["started_at"],
                    f"{len(r['buckets'])}: {_ranges(r['buckets'])}" if r["buckets"] else "0",
                    json.dumps(r["info"], separators=(",", ":")) if r["info"] else "",
                )
                for r in relays["live"]
            ],
            whole={"owner"},
        )
    _print_supervisors(relays["live"])
    free = relays["buckets_free"] or []
    out.print(
        f"buckets: {relays['buckets_held']}/{relays['buckets_total']} leased"
        + (f", free: {_ranges(free)}" if free else "")
        + (f"; {relays['stale']} stale relay row(s)" if relays["stale"] else "")
    )


def _print_supervisors(live: list[dict[str, Any]]) -> None:
    """One line per ``outboxkit relay --workers N`` among the live relays: its workers and buckets."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in live:
        if r.get("supervisor"):
            groups.setdefault(r["supervisor"], []).append(r)
    for name, members in sorted(groups.items()):
        members.sort(key=lambda r: r["worker"])
        parts = ", ".join(f"w{r['worker']} {len(r['buckets'])}" for r in members)
        total = sum(len(r["buckets"]) for r in members)
        out.print(f"supervisor {name}: {len(members)} live worker(s) holding {total} bucket(s) ({parts})")


def _ranges(numbers: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2,5'."""
    spans: list[str] = []
    for n in sorted(numbers):
        if spans and spans[-1].split("-")[-1] == str(n - 1):
            spans[-1] = f"{spans[-1].split('-')[0]}-{n}"
        else:
            spans.append(str(n))
    return ",".join(spans)


dead_letters_app = typer.Typer(
    name="dead-letters",
    help="List, retry or discard dead letters (rows the broker refused for good).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@dead_letters_app.command("list")
def dead_list(
    topic: TopicOpt = None,
    key: KeyOpt = None,
    limit: Annotated[int, typer.Option("--limit", help="At most this many rows, oldest first.")] = 50,
    db: DbOpt = None,
    table: TableOpt = None,
    schema: SchemaOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Dead letters in seq order, with the broker's last error."""
    if limit < 1:
        _refuse("--limit must be at least 1")
    with _session(db, table, schema, config) as conn:
        total, rows = q.list_dead(conn, q.Selector(topic=topic, key=key), limit)
    if as_json:
        _emit_json({"total": total, "dead_letters": [vars(r) for r in rows]})
        return
    print_rows(
        out,
        f"dead letters: {len(rows)} of {total}",
        ("seq", "id", "topic", "key", "attempts", "dead at", "last error"),
        [(r.seq, r.id, r.topic, r.key or "", r.attempts, r.dead_at, (r.last_error or "")[:200]) for r in rows],
        whole={"id", "topic"},
        right={"seq", "attempts"},
    )


def _dead_selector(ids: list[str] | None, topic: str | None, key: str | None, everything: bool) -> q.Selector:
    selector = _selector(ids, topic, key, everything)
    if selector.empty and not everything:
        _refuse("say which dead letters: --id ID (repeatable), --topic T, --key K, or --all")
    if everything and not selector.empty:
        _refuse("--all cannot be combined with --id, --topic or --key")
    return selector


@dead_letters_app.command("retry")
def dead_retry(
    ids: IdOpt = None,
    topic: TopicOpt = None,
    key: KeyOpt = None,
    everything: AllOpt = False,
    db: DbOpt = None,
    table: TableOpt = None,
    schema: SchemaOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Make dead letters pending again (attempts reset, last error kept); the relay resends them
    in seq order, before later events of their keys."""
    selector = _dead_selector(ids, topic, key, everything)
    with _session(db, table, schema, config) as conn:
        count = q.retry_dead(conn, selector)
    _report(as_json, {"action": "retry", "rows": count}, f"{count:,} dead letter(s) pending again")


@dead_letters_app.command("discard")
def dead_discard(
    ids: IdOpt = None,
    topic: TopicOpt = None,
    key: KeyOpt = None,
    everything: AllOpt = False,
    delete: Annotated[
        bool, typer.Option("--delete", help="Delete the rows instead of marking them delivered as discarded.")
    ] = False,
    yes: YesOpt = False,
    db: DbOpt = None,
    table: TableOpt = None,
    schema: SchemaOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Give up on dead letters: they are never sent, and their keys flow again. By default the rows
    are kept as delivered with last_error 'discarded: ...' until cleanup removes them."""
    selector = _dead_selector(ids, topic, key, everything)
    with _session(db, table, schema, config) as conn:
        if not yes:
            _confirm(f"{'Delete' if delete else 'Discard'} {q.count_dead(conn, selector):,} dead letter(s)?", yes)
        count = q.discard_dead(conn, selector, delete=delete)
    _report(
        as_json,
        {"action": "delete" if delete else "discard", "rows": count},
        f"{count:,} dead letter(s) {'deleted' if delete else 'discarded'}",
    )


def replay(
    topic: TopicOpt = None,
    key: KeyOpt = None,
    ids: IdOpt = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Created at or after: ISO-8601 (UTC by default) or ago (2h).")
    ] = None,
    until: Annotated[str | None, typer.Option("--until", help="With --since: created before this time.")] = None,
    yes: YesOpt = False,
    db: DbOpt = None,
    table: TableOpt = None,
    schema: SchemaOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Publish delivered events again (same ids: inboxes drop what they already processed)."""
    if until is not None and since is None:
        _refuse("--until needs --since")
    if topic is None and key is None and not ids and since is None:
        _refuse("replay needs a selector: --topic T, --key K, --id ID (repeatable) or --since TIME [--until TIME]")
    try:
        start = q.parse_time(since) if since else None
        end = q.parse_time(until) if until else None
    except ConfigurationError as exc:
        _refuse(str(exc))
    selector = q.Selector(ids=tuple(ids or ()), topic=topic, key=key, since=start, until=end)
    with _session(db, table, schema, config) as conn:
        if not yes:
            _confirm(f"Replay {q.count_replay(conn, selector):,} delivered event(s)?", yes)
        count = q.replay(conn, selector)
    _report(
        as_json,
        {"action": "replay", "rows": count},
        f"{count:,} event(s) pending again; the relay publishes them in seq order",
    )


def cleanup(
    older_than: Annotated[
        str, typer.Option("--older-than", help="Keep delivered rows this long (7d, 12h, 30m).")
    ] = "7d",
    batch: Annotated[int, typer.Option("--batch", help="Rows deleted per transaction.")] = 10_000,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only count what would be deleted.")] = False,
    explain_partitioning: Annotated[
        bool,
        typer.Option("--explain-partitioning", help="Print the PostgreSQL recipe for day partitions dropped whole."),
    ] = False,
    db: DbOpt = None,
    table: TableOpt = None,
    schema: SchemaOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Delete delivered rows older than --older-than, in batches (retention). Never touches pending
    rows or dead letters."""
    if explain_partitioning:
        settings = resolve({"db": db, "table": table, "schema": schema}, config_file=config)
        try:
            recipe = q.partitioning_recipe(
                settings.ref, database_for(settings.db).name if settings.db else "postgresql"
            )
        except ConfigurationError as exc:
            _refuse(str(exc))
        for stmt in recipe:
            typer.echo(stmt.rstrip() + ";\n")
        return
    try:
        keep = q.parse_duration(older_than)
    except ConfigurationError as exc:
        _refuse(str(exc))
    if batch < 1:
        _refuse("--batch must be at least 1")
    with _session(db, table, schema, config) as conn:
        if dry_run:
            count = q.count_cleanup(conn, keep)
            _report(
                as_json,
                {"dry_run": True, "deleted": 0, "would_delete": count},
                f"would delete {count:,} delivered row(s) older than {older_than}",
            )
            return
        shown = 0.0
        last = None
        for last in q.cleanup(conn, keep, batch):
            # Progress on stderr at most twice a second: a cleanup of millions of rows takes minutes.
            if last.done or time.monotonic() - shown >= 0.5:
                shown = time.monotonic()
                err.print(f"deleted {last.deleted:,} row(s) in {last.batches} batch(es), {last.rows_per_s:,.0f} rows/s")
    assert last is not None  # cleanup() yields at least once
    if as_json:
        _emit_json(
            {
                "dry_run": False,
                "deleted": last.deleted,
                "batches": last.batches,
                "seconds": round(last.seconds, 3),
                "rows_per_s": round(last.rows_per_s, 1),
                "cutoff": last.cutoff,
            }
        )


app = typer.Typer(
    name="ops",
    help="Operate an outbox: status, dead letters, replay, retention.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command()(status)
app.add_typer(dead_letters_app, name="dead-letters")
app.command()(replay)
app.command()(cleanup)

__all__ = ["app", "cleanup", "dead_letters_app", "replay", "status"]
