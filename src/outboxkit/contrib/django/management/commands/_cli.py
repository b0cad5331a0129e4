"""Run an ``outboxkit`` command from ``manage.py``, its settings taken from Django's.

The management commands are thin: they turn ``DATABASES`` and ``OUTBOXKIT`` into the command's
flags and hand over to :func:`outboxkit.cli.main`, so the relay, the consumer and the status report
are exactly the ones ``outboxkit relay | consume | status`` run (same flags, logging, exit codes:
2 for bad configuration). Flags given after the command name are passed on and win, since the
``outboxkit`` commands take the last occurrence of a flag.
"""

from __future__ import annotations

import argparse
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from django.core.management.base import BaseCommand

from outboxkit.contrib.django.conf import broker_url, db_url, outbox_ref, setting


def base_flags(*, broker: bool, table: bool = True) -> list[str]:
    flags = ["--db", db_url()]
    ref = outbox_ref()
    if table:
        flags += ["--table", ref.table]
    if ref.schema:
        flags += ["--schema", ref.schema]
    url = broker_url()
    if broker and url:
        flags += ["--broker", url]
    return flags


def relay_flags(conf: Mapping[str, Any] | None = None) -> list[str]:
    """``OUTBOXKIT["RELAY"]`` (``{"batch_size": 500}``) as ``--batch-size 500``; ``SOURCE`` too.
    An unknown name fails like a mistyped flag: one line, exit code 2."""
    conf = setting() if conf is None else conf
    flags: list[str] = []
    source = conf.get("SOURCE")
    if source:
        flags += ["--source", str(source)]
    for name, value in (conf.get("RELAY") or {}).items():
        flag = f"--{str(name).replace('_', '-')}"
        if isinstance(value, bool):  # switches: {"skip_dead_keys": True} -> --skip-dead-keys
            flags += [flag] if value else []
        else:
            flags += [flag, str(value)]
    return flags


class OutboxkitCommand(BaseCommand):
    """Base of the three commands: ``manage.py outbox_<name> [outboxkit flags...]``."""

    outboxkit_command = ""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "outboxkit_args",
            nargs="*",  # from manage.py, run_from_argv fills it; call_command(outboxkit_args=[...])
            default=[],
            help=f"more `outboxkit {self.outboxkit_command}` flags (see `outboxkit {self.outboxkit_command} --help`)",
        )

    def run_from_argv(self, argv: list[str]) -> None:
        # argparse cannot tell Django's options from outboxkit's unknown ones
        # (`outbox_relay --window 10 --settings=x`): Django's own are picked out by name here,
        # everything else goes to outboxkit as it was given, in its order.
        from django.core.management.base import handle_default_options
        from django.db import connections

        django_args, outboxkit_args = split_args(argv[2:])
        parser = self.create_parser(argv[0], argv[1])
        options = parser.parse_args(django_args)
        handle_default_options(options)
        cmd_options = vars(options)
        cmd_options["outboxkit_args"] = outboxkit_args
        cmd_options.pop("args", None)
        try:
            self.execute(**cmd_options)
        finally:
            connections.close_all()

    def flags(self) -> list[str]:
        raise NotImplementedError

    def handle(self, *args: Any, **options: Any) -> None:
        global_args, command_args = split_globals(options["outboxkit_args"])
        run([*global_args, self.outboxkit_command, *self.flags(), *command_args])


# Options every management command has (BaseCommand.create_parser), with or without a value.
_DJANGO_VALUED = {"--settings", "--pythonpath", "--verbosity", "-v"}
# outboxkit's own options, which it takes before the command name (`outboxkit --debug relay`).
_GLOBAL_VALUED = {"--log-format"}
_GLOBAL_SWITCHES = {"--debug", "--verbose", "--quiet", "-q"}
_DJANGO_SWITCHES = {"--traceback", "--no-color", "--force-color", "--skip-checks"}


def _split(args: Sequence[str], valued: Collection[str], switches: Collection[str]) -> tuple[list[str], list[str]]:
    """(the options named in ``valued`` or ``switches``, the rest), each in its given order; a valued
    option's value is its next token unless given as ``--name=value``."""
    picked: list[str] = []
    rest: list[str] = []
    tokens = iter(args)
    for token in tokens:
        if token.split("=", 1)[0] in valued:
            picked.append(token)
            if "=" not in token:
                picked.append(next(tokens, ""))
        elif token in switches:
            picked.append(token)
        else:
            rest.append(token)
    return picked, rest


def split_args(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """(Django's options, the rest) of a management command line, each in its given order."""
    return _split(args, _DJANGO_VALUED, _DJANGO_SWITCHES)


def split_globals(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """(outboxkit's global options, the command's) of the arguments given to a management command."""
    return _split(args, _GLOBAL_VALUED, _GLOBAL_SWITCHES)


def run(argv: Sequence[str]) -> None:
    """Run ``outboxkit argv``; a non-zero exit code leaves ``manage.py`` with that code."""
    from outboxkit.cli import main

    try:
        main(list(argv), prog_name="outboxkit")
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
