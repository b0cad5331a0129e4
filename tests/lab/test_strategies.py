"""Each strategy's known failure mode, reproduced by its exact crash point; the outbox ones hold.

Runs are small (a few dozen events) and use ``rollback_ratio=0`` so every anomaly comes from the
fault alone: the expected counts are exact, not "at least one".
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from outboxkit.lab.faults import Scheduled, plan, schedule
from outboxkit.lab.runner import LabOptions, StrategyRun, run_lab
from outboxkit.stores.base import BUCKETS
from tests.conftest import MARIADB_URL, PG_URL, require

EVENTS, SEED = 40, 11


async def lab(db: str, strategies: tuple[str, ...], faults: tuple[str, ...]) -> list[StrategyRun]:
    options = LabOptions(strategies=strategies, faults=faults, events=EVENTS, seed=SEED, db=db, rollback_ratio=0.0)
    return (await run_lab(options)).runs


def fault_events(kind: str, faults: tuple[str, ...]) -> int:
    """How many events the transaction hit by ``kind`` carries."""
    txns = plan(EVENTS, SEED, rollback_ratio=0.0)
    hit: Scheduled = next(f for f in schedule(list(faults), len(txns), SEED) if f.kind == kind)
    return txns[hit.tx].events


def window(run: StrategyRun, kind: str) -> dict[str, int]:
    return next(f for f in run.verdict.per_fault if f["kind"] == kind)


async def test_dual_write_loses_the_events_of_a_crash_after_commit(lab_pg: str) -> None:
    faults = ("kill-after-commit",)
    (run,) = await lab(lab_pg, ("dual-write",), faults)
    expected = fault_events("kill-after-commit", faults)
    assert run.verdict.tally.lost == expected
    assert window(run, "kill-after-commit")["lost"] == expected
    assert run.verdict.tally.phantom == 0


async def test_publish_then_commit_leaves_phantoms_after_a_crash_before_commit(lab_pg: str) -> None:
    faults = ("kill-after-publish",)
    (run,) = await lab(lab_pg, ("publish-then-commit",), faults)
    assert run.verdict.tally.phantom == fault_events("kill-after-publish", faults)
    assert run.verdict.tally.lost == 0


async def test_local_log_survives_a_crash_but_not_the_loss_of_its_instance(lab_pg: str) -> None:
    faults = ("kill-after-commit", "instance-lost")
    (run,) = await lab(lab_pg, ("local-log",), faults)
    assert window(run, "kill-after-commit")["lost"] == 0  # replayed from the log at restart
    assert window(run, "instance-lost")["lost"] == fault_events("instance-lost", faults)
    assert run.verdict.tally.phantom == 0


CRASHES = ("kill-after-commit", "kill-after-publish", "kill-before-mark", "instance-lost")


@pytest.mark.parametrize("strategy", ["outbox-inline", "outbox-relay-notify", "outbox-inline+relay"])
async def test_outbox_strategies_lose_nothing_and_invent_nothing_under_the_same_crashes(
    lab_pg: str, strategy: str
) -> None:
    (run,) = await lab(lab_pg, (strategy,), CRASHES)
    assert run.restarts == len(CRASHES)
    assert run.verdict.tally.lost == 0
    assert run.verdict.tally.phantom == 0
    assert run.verdict.tally.committed > EVENTS // 2  # a crash before COMMIT takes its transaction along


async def test_relay_strategies_recover_from_relay_broker_and_database_faults(lab_pg: str) -> None:
    (run,) = await lab(lab_pg, ("outbox-relay-poll",), ("kill-relay", "broker-restart", "db-kill"))
    assert not run.not_applicable
    assert run.verdict.tally.lost == 0
    assert run.verdict.tally.phantom == 0


async def test_sqlite_main_database_same_failure_modes(tmp_path: object) -> None:
    faults = ("kill-after-commit", "db-kill")
    runs = await lab("sqlite", ("dual-write", "outbox-inline"), faults)
    dual, inline = runs
    assert dual.not_applicable == ["db-kill"]  # SQLite has no server connections to kill
    assert dual.verdict.tally.lost == fault_events("kill-after-commit", faults)
    assert inline.verdict.tally.lost == 0
    assert inline.verdict.tally.phantom == 0


async def test_a_seed_reproduces_the_same_anomalies(lab_pg: str) -> None:
    faults = ("kill-after-commit", "kill-after-publish")
    first = await lab(lab_pg, ("dual-write", "publish-then-commit"), faults)
    second = await lab(lab_pg, ("dual-write", "publish-then-commit"), faults)
    assert anomalies(first) == anomalies(second)


def anomalies(runs: list[StrategyRun]) -> list[object]:
    """What a seed must reproduce exactly: the anomalies per fault window (timings vary, these do not)."""
    keys = ("tx", "kind", "point", "lost", "phantom", "duplicates", "order_violations")
    return [
        (r.verdict.tally.lost, r.verdict.tally.phantom, [{k: f[k] for k in keys} for f in r.verdict.per_fault])
        for r in runs
    ]


@pytest.mark.parametrize("database", ["postgresql", "sqlite", "mariadb"])
async def test_trigger_capture_loses_nothing_and_invents_nothing(database: str) -> None:
    """No emit: a capture trigger writes the outbox row; crashes of the writer and the relay lose
    nothing, and a crash before COMMIT publishes nothing (the trigger's row rolls back too)."""
    if database == "postgresql":
        require("PostgreSQL", "127.0.0.1", 5432)
        db = PG_URL
    elif database == "mariadb":
        require("MariaDB", "127.0.0.1", 3306)
        db = MARIADB_URL
    else:
        db = "sqlite"
    faults = ("kill-after-publish", "kill-after-commit", "kill-relay")  # the first SIGKILLs before COMMIT
    (run,) = await lab(db, ("trigger",), faults)
    assert run.restarts == 2
    assert run.verdict.tally.committed > EVENTS // 2
    assert run.verdict.tally.lost == 0
    assert run.verdict.tally.phantom == 0
    assert run.verdict.tally.order_violations == 0


# One group: the check that the run left no lab slot behind looks at every lab slot of the server.
@pytest.mark.xdist_group("wal-lab")
@pytest.mark.parametrize("strategy", ["wal", "wal-message"])
async def test_log_tailing_strategies_lose_nothing_and_invent_nothing(lab_pg: str, strategy: str) -> None:
    """``relay --capture wal`` as the lab's companion, rows or table-less events: crashes of the
    writer and of the relay lose nothing, a crash before COMMIT publishes nothing, and the slot is
    dropped after the run."""
    import psycopg

    (run,) = await lab(lab_pg, (strategy,), ("kill-after-commit", "kill-after-publish", "kill-relay", "broker-restart"))
    assert run.verdict.tally.lost == 0
    assert run.verdict.tally.phantom == 0
    assert run.verdict.tally.order_violations == 0
    with psycopg.connect(lab_pg) as conn:
        left = conn.execute("SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'outboxkit_lab_%'")
        assert left.fetchone() == (0,)


# Binlog dumps are server-wide: the binlog tests that kill "the relay's" dump thread run apart from
# every other reader of the shared server's binlog (one xdist group).
@pytest.mark.xdist_group("binlog")
async def test_binlog_strategy_loses_nothing_and_invents_nothing() -> None:
    """``relay --capture binlog`` as the lab's companion on MariaDB: crashes of the writer and of
    the relay lose nothing, a crash before COMMIT publishes nothing."""
    require("MariaDB", "127.0.0.1", 3306)
    (run,) = await lab(MARIADB_URL, ("binlog",), ("kill-after-commit", "kill-after-publish", "kill-relay"))
    assert run.verdict.tally.committed > 0
    assert run.verdict.tally.lost == 0
    assert run.verdict.tally.phantom == 0
    assert run.verdict.tally.order_violations == 0


async def test_log_tailing_is_skipped_where_the_database_cannot_tail(tmp_path: object) -> None:
    options = LabOptions(strategies=("wal", "dual-write"), faults=("kill-after-commit",), events=EVENTS, db="sqlite")
    lab_run = await run_lab(options)
    assert [r.strategy for r in lab_run.runs] == ["dual-write"]
    assert lab_run.skipped == [("wal", "needs postgresql; this run's database is sqlite")]


@pytest.mark.parametrize("database", ["postgresql", "sqlite"])
async def test_event_sourcing_loses_nothing_and_invents_nothing(database: str) -> None:
    """Appends at the expected version are the only write; the relay publishes the event store's
    table. A crash before COMMIT publishes nothing (the append rolls back with the business change),
    a crash after it loses nothing (the relay sends it), and each stream keeps its order."""
    if database == "postgresql":
        require("PostgreSQL", "127.0.0.1", 5432)
        db, faults = PG_URL, ("kill-after-publish", "kill-after-commit", "db-kill", "kill-relay")
    else:
        db, faults = "sqlite", ("kill-after-publish", "kill-after-commit")
    (run,) = await lab(db, ("event-sourcing",), faults)
    assert run.restarts == 2
    assert not run.not_applicable
    assert run.verdict.tally.committed > EVENTS // 2
    assert run.verdict.tally.lost == 0
    assert run.verdict.tally.phantom == 0
    assert run.verdict.tally.order_violations == 0


async def test_event_sourcing_is_skipped_on_mariadb() -> None:
    """The event store has no MariaDB SQL: the runner skips the strategy (no connection needed)."""
    phases: list[tuple[str, str]] = []
    options = LabOptions(strategies=("event-sourcing",), faults=("kill-after-commit",), events=EVENTS, db=MARIADB_URL)
    lab_run = await run_lab(options, on_phase=lambda s, p: phases.append((s, p)))
    assert lab_run.runs == []
    reason = "needs postgresql or sqlite; this run's database is mariadb"
    assert lab_run.skipped == [("event-sourcing", reason)]
    assert ("event-sourcing", f"skipped: {reason}") in phases


def test_a_killed_relay_comes_back_under_its_name_and_takes_its_buckets_back_at_once(
    lab_pg: str, tmp_path: Path
) -> None:
    """The lab starts relays under a stable ``--owner``, as a supervisor would: the relay started
    again after ``kill-relay`` holds every bucket in its first lease round instead of standing by
    until its own dead leases expire (a lease TTL of delivery stalled per kill)."""
    options = LabOptions(
        strategies=("outbox-relay-notify",), faults=("kill-relay",), events=EVENTS, seed=SEED, db=lab_pg,
        workdir=str(tmp_path),
    )  # fmt: skip
    (run,) = asyncio.run(run_lab(options)).runs
    assert run.verdict.tally.lost == 0
    (log,) = tmp_path.glob("lab_*/companion.log")
    starts = [line for line in log.read_text().splitlines() if "relay started:" in line]
    assert len(starts) == 2, starts  # the first start, and the one after the SIGKILL
    assert f"holds {BUCKETS} of {BUCKETS} buckets" in starts[1], starts[1]
