"""Write cost of ``outboxkit.contrib.django.emit`` inside ``transaction.atomic()``, next to its ceiling.

One Django process, one connection, transactions one after another for ``--duration`` seconds in
three modes, interleaved in each of ``--reps`` rounds:

* ``none``: ``with atomic(): INSERT INTO bench_orders ...`` through Django's cursor (the ceiling:
  no event);
* ``core``: the same plus ``outboxkit.emit()`` on Django's underlying DB-API connection (what the
  Django integration adds nothing to);
* ``django``: the same plus ``outboxkit.contrib.django.emit()`` (Django's transaction state, Django's
  cursor).

Prints transactions/s per mode (medians), each mode's cost against ``none``, and ``django`` as a
ratio of ``core``. SQLite file by default; ``--pg`` uses the test PostgreSQL in a schema of its own.

    .venv/bin/python -m benchmarks.django_emit [--pg] [--duration 3] [--reps 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from typing import Any

import psycopg

from benchmarks.common import PG_URL, median, new_tag, payload, table, write_results


def configure(pg_schema: str | None, sqlite_path: str) -> None:
    import django
    from django.conf import settings

    if pg_schema:
        db = {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": "test",
            "USER": "postgres",
            "HOST": "127.0.0.1",
            "PORT": "5432",
            "OPTIONS": {"options": f"-c search_path={pg_schema}"},
        }
    else:
        db = {"ENGINE": "django.db.backends.sqlite3", "NAME": sqlite_path, "OPTIONS": {"transaction_mode": "IMMEDIATE"}}
    settings.configure(
        DATABASES={"default": db},
        INSTALLED_APPS=["django.contrib.contenttypes", "outboxkit.contrib.django"],
        USE_TZ=True,
        OUTBOXKIT={"SOURCE": "/bench"},
    )
    django.setup()


def run_mode(mode: str, duration: float, start: int) -> tuple[int, float]:
    from django.db import connection, transaction

    import outboxkit
    from outboxkit.contrib.django import emit

    i, stop_at = start, time.perf_counter() + duration
    began = time.perf_counter()
    while time.perf_counter() < stop_at:
        i += 1
        with transaction.atomic():
            with connection.cursor() as cur:
                cur.execute("INSERT INTO bench_orders (customer, amount) VALUES (%s, %s)", [f"c-{i % 1000}", i])
            if mode == "core":
                outboxkit.emit(connection.connection, "orders.created", payload(i), key=f"c-{i % 1000}")
            elif mode == "django":
                emit("orders.created", payload(i), key=f"c-{i % 1000}")
    return i - start, time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg", action="store_true", help="PostgreSQL (default: a SQLite file)")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per mode per round")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--no-json", action="store_true")
    args = parser.parse_args()

    schema = new_tag() if args.pg else None
    tmp = tempfile.mkdtemp(prefix="bench-django-")
    if schema:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"'.encode())
    try:
        configure(schema, os.path.join(tmp, "bench.db"))
        from django import get_version
        from django.core.management import call_command
        from django.db import connection

        call_command("migrate", verbosity=0)
        auto = "bigserial" if schema else "INTEGER"
        with connection.cursor() as cur:
            cur.execute(
                f"CREATE TABLE bench_orders (id {auto} PRIMARY KEY, customer varchar(20) NOT NULL, amount int NOT NULL)"
            )
        rates: dict[str, list[float]] = {"none": [], "core": [], "django": []}
        counter = 0
        for _ in range(args.reps):
            for mode in rates:
                n, secs = run_mode(mode, args.duration, counter)
                counter += n
                rates[mode].append(n / secs)
        med = {mode: median(values) for mode, values in rates.items()}
        rows: list[list[Any]] = [
            [mode, f"{med[mode]:,.0f}", "-" if mode == "none" else f"{1 - med[mode] / med['none']:.0%}"]
            for mode in rates
        ]
        print(f"database: {connection.vendor} {'' if not schema else '(schema ' + schema + ')'}")
        print(table(["mode", "tx/s (median)", "cost vs none"], rows))
        ratio = med["django"] / med["core"]
        print(f"contrib.django.emit / outboxkit.emit: {ratio:.2f}")
        path = write_results(
            "django_emit",
            {
                "database": connection.vendor,
                "django": get_version(),
                "duration_s": args.duration,
                "reps": args.reps,
                "tx_per_s": rates,
                "median_tx_per_s": med,
                "django_over_core": ratio,
                "emit_cost_vs_none": 1 - med["django"] / med["none"],
            },
            disabled=args.no_json,
        )
        if path:
            print(f"results: {path}")
    finally:
        if schema:
            with psycopg.connect(PG_URL, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'.encode())


if __name__ == "__main__":
    main()
