"""``outboxkit inbox dead-letters list|show|retry|discard``: the consumer's dead letters, with the
same shape as the relay's ``outboxkit dead-letters`` (``--json`` on every command, ``--yes`` to
skip the prompt of ``discard``). Registered on the main app by ``outboxkit/cli.py``.

Human output goes to stdout as tables; outcomes and prompts go to stderr, so ``--json`` output on
stdout stays parseable. See docs/operations.md ("The consumer's dead letters").
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console

from outboxkit.config import resolve
from outboxkit.inbox.dead import Filter, InboxDead
from outboxkit.stores.base import TableRef
from outboxkit.terminal import output_console, print_error, print_rows

out = output_console()
err = Console(stderr=True, soft_wrap=True)

DbOpt = Annotated[str | None, typer.Option("--db", help="Inbox database URL (env OUTBOXKIT_DB).", show_default=False)]
InboxOpt = Annotated[str, typer.Option("--inbox-table", help="Inbox table name (as given to consume).")]
SchemaOpt = Annotated[str | None, typer.Option("--schema", help="Database schema (PostgreSQL) or database (MariaDB).")]
ConfigOpt = Annotated[str | None, typer.Option("--config", help="TOML config file (env OUTBOXKIT_CONFIG).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of tables.")]
GroupOpt = Annotated[str | None, typer.Option("--group", help="Only this consumer (its --group).")]
TopicOpt = Annotated[str | None, typer.Option("--topic", help="Only this topic.")]
IdOpt = Annotated[list[str] | None, typer.Option("--id", help="Event id; repeatable.", show_default=False)]
AllOpt = Annotated[bool, typer.Option("--all", help="Every dead letter (of --group, if given).")]

inbox_app = typer.Typer(
    name="inbox",
    help="The consumer's inbox: its dead letters (messages its handler failed --max-attempts times).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
dead_app = typer.Typer(
    name="dead-letters",
    help="List, show, retry (through the handler) or discard the consumer's dead letters.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
inbox_app.add_typer(dead_app, name="dead-letters")


def _refuse(message: str) -> NoReturn:
    """A usage refusal: one line, exit status 2, nothing changed."""
    print_error(err, message)
    raise SystemExit(2)


@contextmanager
def _inbox(db: str | None, table: str, schema: str | None, config: str | None) -> Iterator[InboxDead]:
    # Errors propagate to outboxkit.cli.main(), which prints one line (a traceback with --debug).
    settings = resolve({"db": db, "schema": schema}, config_file=config)
    dead = InboxDead(settings.require_db(), TableRef(table, settings.ref.schema))
    try:
        yield dead
    finally:
        dead.close()


def _filter(group: str | None, ids: list[str] | None, topic: str | None, everything: bool) -> Filter:
    """A selection that changes rows must say what it means: --all alone is every dead letter."""
    f = Filter(consumer=group, ids=tuple(ids or ()), topic=topic)
    if not ids and topic is None and not everything:
        _refuse("say which dead letters: --id ID (repeatable), --topic T, or --all (each narrowed by --group G)")
    if everything and (ids or topic is not None):
        _refuse("--all cannot be combined with --id or --topic (narrow it with --group)")
    return f


def _emit_json(doc: Any) -> None:
    typer.echo(json.dumps(doc, indent=2, default=str))


@dead_app.command("list")
def dead_list(
    group: GroupOpt = None,
    topic: TopicOpt = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many, oldest failure first.")] = 50,
    db: DbOpt = None,
    inbox_table: InboxOpt = "inbox",
    schema: SchemaOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Dead letters, oldest failure first, with the last line of the handler's error."""
    selection = Filter(consumer=group, topic=topic)
    with _inbox(db, inbox_table, schema, config) as dead:
        total, letters = dead.count(selection), dead.select(selection, limit)
    if as_json:
        _emit_json({"total": total, "dead_letters": [d.summary() for d in letters]})
        return
    print_rows(
        out,
        f"inbox dead letters: {len(letters)} of {total}",
        ("consumer", "event id", "topic", "key", "attempts", "failed at", "error"),
        [(d.consumer, d.event_id, d.topic, d.key or "", d.attempts, d.failed_at, _last_line(d.error)) for d in letters],
        whole={"event id", "topic"},
        right={"attempts"},
    )


@dead_app.command("show")
def dead_show(
    event_id: Annotated[str, typer.Option("--id", help="Event id.", show_default=False)],
    group: GroupOpt = None,
    db: DbOpt = None,
    inbox_table: InboxOpt = "inbox",
    schema: SchemaOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """One dead letter in full: payload, headers and the handler's traceback (one per consumer)."""
    with _inbox(db, inbox_table, schema, config) as dead:
        letters = dead.select(Filter(consumer=group, ids=(event_id,)))
    if not letters:
        print_error(err, f"no inbox dead letter with id {event_id!r}" + (f" for --group {group}" if group else ""))
        raise SystemExit(1)
    if as_json:
        _emit_json({"dead_letters": [d.to_json() for d in letters]})
        return
    for d in letters:
        doc = d.to_json()
        for name in ("consumer", "event_id", "topic", "key", "attempts", "failed_at", "headers"):
            value = doc[name]
            out.print(f"{name}: {json.dumps(value) if isinstance(value, dict) else value}", highlight=False)
        out.print(f"payload ({doc['payload_encoding']}): {doc['payload']}", highlight=False, markup=False)
        out.print("error:", highlight=False)
        out.print(d.error.rstrip(), highlight=False, markup=False)


@dead_app.command("retry")
def dead_retry(
    handler: Annotated[
        str, typer.Option("--handler", help="module:function, as given to consume; run here on each letter.")
    ],
    group: GroupOpt = None,
    ids: IdOpt = None,
    topic: TopicOpt = None,
    everything: AllOpt = False,
    db: DbOpt = None,
    inbox_table: InboxOpt = "inbox",
    schema: SchemaOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run the handler on dead letters now, oldest first, each in one transaction with its removal.

    A letter whose handler fails again stays (one attempt more, the new error kept); the exit
    status is then 1."""
    from outboxkit.inbox.process import load_handler

    selection = _filter(group, ids, topic, everything)
    fn = load_handler(handler)
    done: list[str] = []
    failed: list[dict[str, str]] = []
    with _inbox(db, inbox_table, schema, config) as dead:
        for letter in dead.select(selection):
            error = dead.retry(letter, fn)
            if error is None:
                done.append(letter.event_id)
            else:
                failed.append({"consumer": letter.consumer, "event_id": letter.event_id, "error": error})
    if as_json:
        _emit_json({"action": "retry", "processed": len(done), "failed": failed})
    else:
        err.print(f"{len(done):,} dead letter(s) processed, {len(failed):,} failed again")
        for f in failed:
            err.print(f"  {f['consumer']} {f['event_id']}: {_last_line(f['error'])}", highlight=False, markup=False)
    if failed:
        raise SystemExit(1)


@dead_app.command("discard")
def dead_discard(
    group: GroupOpt = None,
    ids: IdOpt = None,
    topic: TopicOpt = None,
    everything: AllOpt = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    db: DbOpt = None,
    inbox_table: InboxOpt = "inbox",
    schema: SchemaOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Delete dead letters: that consumer never processes their events.

    Their ids stay in the inbox, so a copy the bus still holds is skipped as a duplicate."""
    selection = _filter(group, ids, topic, everything)
    with _inbox(db, inbox_table, schema, config) as dead:
        if not yes:
            _confirm(f"Discard {dead.count(selection):,} inbox dead letter(s)?")
        count = dead.discard(selection)
    if as_json:
        _emit_json({"action": "discard", "rows": count})
    else:
        err.print(f"{count:,} inbox dead letter(s) discarded")


def _confirm(question: str) -> None:
    # EOF or no terminal is a "no": nothing changed, exit 1 (as `outboxkit dead-letters discard`).
    try:
        agreed = typer.confirm(question, default=False, err=True)
    except typer.Abort:
        err.print()
        agreed = False
    if not agreed:
        err.print("nothing changed")
        raise SystemExit(1)


def _last_line(error: str) -> str:
    lines = [line for line in error.strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


__all__ = ["inbox_app"]
