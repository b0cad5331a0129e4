"""Projections on real PostgreSQL and SQLite: catch-up, exactly-once checkpoints, one runner at a
time, rebuild, status, and H1 for readers (a late commit is seen, once)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from outboxkit.eventstore import NewEvent, ProjectionRunner, projection_statuses
from tests.integration.eventstore_support import Counts, Db, db_fixture  # noqa: F401 - the fixture


def _setup(db: Db, name: str = "counts") -> Counts:
    projection = Counts(name, db.name, db.store.ref.schema)
    conn = db.connect()
    try:
        projection.create(conn)
        if db.name == "postgres":
            conn.commit()
    finally:
        conn.close()
    return projection


def _fill(db: Db, streams: int, per_stream: int) -> None:
    conn = db.connect()
    try:
        for v in range(per_stream):
            for s in range(streams):
                db.begin(conn)
                db.store.append(conn, f"s-{s}", [NewEvent("E", {"v": v})], expected=v)
                conn.execute("COMMIT")
    finally:
        conn.close()


def _state(db: Db, projection: Counts) -> dict[str, tuple[int, int]]:
    conn = db.connect()
    try:
        return projection.state(conn)
    finally:
        conn.close()


def _wait(check: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


def test_catch_up_checkpoint_rebuild_and_status(db: Db) -> None:
    projection = _setup(db)
    _fill(db, 3, 5)
    runner = ProjectionRunner(db.store, projection, db.url, batch=4)
    try:
        _wait(lambda: runner.catch_up() >= 0 and _state(db, projection) == {f"s-{s}": (5, 5) for s in range(3)})
        assert runner.run_once() == 0
        [status] = projection_statuses(db.store, db.url)
        assert (status.name, status.events, status.backlog) == ("counts", 15, 0)
        _fill_more(db)
        [status] = projection_statuses(db.store, db.url)
        assert status.backlog == 2
        assert runner.rebuild() >= 0
        _wait(lambda: runner.catch_up() >= 0 and _state(db, projection)["s-0"] == (7, 7))
        assert _state(db, projection) == {"s-0": (7, 7), "s-1": (5, 5), "s-2": (5, 5)}
        [status] = projection_statuses(db.store, db.url)
        assert status.events == 17, "the rebuild started the count again"
    finally:
        runner.close()


def _fill_more(db: Db) -> None:
    conn = db.connect()
    try:
        db.begin(conn)
        db.store.append(conn, "s-0", [NewEvent("E", {}), NewEvent("E", {})], expected=5)
        conn.execute("COMMIT")
    finally:
        conn.close()


def test_a_failing_handler_rolls_back_its_batch_and_checkpoint(db: Db) -> None:
    projection = _setup(db)
    _fill(db, 1, 6)

    class Failing(Counts):
        def handle(self, conn: Any, event: Any) -> None:
            if event.version == 5:
                raise RuntimeError("boom at 5")
            super().handle(conn, event)

    failing = Failing("counts", db.name, db.store.ref.schema)
    runner = ProjectionRunner(db.store, failing, db.url, batch=3)
    try:
        _wait(lambda: runner.run_once() == 3)  # versions 1-3 committed
        with pytest.raises(RuntimeError, match="boom at 5"):
            runner.run_once()  # 4 handled, 5 fails: the batch (and 4's row) rolls back
        assert _state(db, projection) == {"s-0": (3, 3)}
        fixed = ProjectionRunner(db.store, projection, db.url, batch=3)
        try:
            assert fixed.run_once() == 3  # 4, 5, 6: 4 again, since its first application rolled back
            assert _state(db, projection) == {"s-0": (6, 6)}
        finally:
            fixed.close()
    finally:
        runner.close()


def test_two_runners_of_one_projection_apply_each_event_once(db: Db) -> None:
    projection = _setup(db)
    _fill(db, 4, 25)
    errors: list[BaseException] = []
    runners = [ProjectionRunner(db.store, projection, db.url, batch=7) for _ in range(2)]

    def work(runner: ProjectionRunner) -> None:
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and _state(db, projection) != {f"s-{s}": (25, 25) for s in range(4)}:
                runner.run_once()
        except BaseException as exc:  # reported below: Counts raises on a duplicate
            errors.append(exc)
        finally:
            runner.close()

    threads = [threading.Thread(target=work, args=(r,)) for r in runners]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert _state(db, projection) == {f"s-{s}": (25, 25) for s in range(4)}


def test_h1_a_late_commit_is_seen_by_a_running_projection_once(db: Db) -> None:
    """T1 appends first and commits last; T2 appends and commits in between. A reader paging by
    seq would pass T2's row and never see T1's; the running projection sees both, once each."""
    if db.name == "sqlite":
        pytest.skip("SQLite serialises writers: T2 cannot commit while T1 is open")
    projection = _setup(db)
    runner = ProjectionRunner(db.store, projection, db.url, batch=100, poll_interval=0.05)
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(stop,))
    thread.start()
    t1, t2, peek = db.connect(), db.connect(), db.connect()
    try:
        db.begin(t1)
        first = db.store.append(t1, "late", [NewEvent("E", {"who": "t1"})], expected=0)
        db.begin(t2)
        second = db.store.append(t2, "early", [NewEvent("E", {"who": "t2"})], expected=0)
        t2.execute("COMMIT")
        # The hazard is real: T2's row is committed and has the higher seq.
        seqs = peek.execute(f"SELECT seq, stream_id FROM {db.store.ref.qualified} ORDER BY seq").fetchall()
        peek.commit()
        assert [s for _, s in seqs] == ["early"] and seqs[0][0] > 1, "T1's seq is below T2's"
        time.sleep(1.0)  # the runner polls 20 times meanwhile
        t1.execute("COMMIT")
        _wait(lambda: _state(db, projection) == {"late": (1, 1), "early": (1, 1)})
        time.sleep(0.3)
        assert projection.seen == [first.ids[0], second.ids[0]], "each once, T1 first (global order)"
    finally:
        stop.set()
        thread.join(10)
        runner.close()
        for c in (t1, t2, peek):
            c.close()


def test_a_running_projection_wakes_on_commit_not_on_its_poll(db: Db) -> None:
    """poll_interval 30 s: on PostgreSQL the NOTIFY of the commit wakes the runner (and it looks
    again soon if an older open transaction still holds the readers' bound); SQLite polls."""
    projection = _setup(db)
    interval = 30.0 if db.name == "postgres" else 0.1
    runner = ProjectionRunner(db.store, projection, db.url, poll_interval=interval)
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(stop,))
    thread.start()
    try:
        time.sleep(0.5)  # the runner is idle, listening
        started = time.monotonic()
        _fill(db, 1, 1)
        _wait(lambda: _state(db, projection) == {"s-0": (1, 1)}, timeout=20)
        assert time.monotonic() - started < interval or db.name == "sqlite"
    finally:
        stop.set()
        thread.join(40)
        runner.close()
