"""PostgreSQL: waking the relay without making every writer pay for NOTIFY (hazard H2).

PostgreSQL takes one database-wide lock at the commit of every transaction that issued NOTIFY,
so a trigger that notifies on every insert serialises the commits of concurrent writers. A busy
relay does not need the notification (it fetches again anyway); only a sleeping one does. So:

* **A sleeper holds a slot.** A relay (or a projection runner) that goes to sleep takes one of
  :data:`SLOTS` session advisory locks of the outbox *exclusively*, and gives it back when it wakes
  up with work. The locks live in the lock manager's shared memory: no row, no WAL, no MVCC
  snapshot (a writer in REPEATABLE READ sees a sleeper as soon as anyone does), and a sleeper that
  dies releases its slot with its connection.
* **A writer notifies only when a slot is taken.** The outbox's statement trigger fires only WHEN
  one of the slots cannot be taken *shared* (a plain expression evaluated by the executor: no
  PL/pgSQL call at all while nobody sleeps). Otherwise the writer now holds every slot shared
  until its transaction ends.
* **The race, closed.** A writer that found no sleeper did not notify. A relay that goes to sleep
  can only take a slot once no writer holds it shared, that is once every such writer has committed
  or rolled back (a lock is released after the commit became visible), and it then fetches once
  more before it waits (``PostgresOutboxStore.wait_for_new``): that fetch sees their rows. Every
  writer that checks after the slot was taken notifies. So no committed row waits for the polling
  fallback, however the writer's and the relay's steps interleave (tests/integration/
  test_pg_wakeup.py checks generated interleavings). What remains is what NOTIFY always had: a
  notification lost with a broken LISTEN connection is covered by the poll interval (1 s default).
* **Busy means polling.** A relay whose fetch returned :data:`BUSY_ROWS` rows or more (commits come
  faster than it wakes, which is when writers would queue on the notify lock) does not sleep: it
  fetches again after :data:`POLL_MIN_S`, growing by half each empty fetch, and sleeps
  once no fetch was busy for :data:`QUIET_S`. Below that rate it stays asleep and each commit's
  notification wakes it (a single row per wake-up: notifying then costs a writer little, and
  saves the polling delay). A writer in a long transaction keeps a relay from sleeping (it holds
  the slots shared): the relay then polls, backing off to :data:`POLL_MAX_S`.

Pure text and arithmetic: ``migrate --sql`` prints the trigger without psycopg.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from outboxkit.stores.base import TableRef

#: Sleepers one outbox can have at once (relays sharing it, projection runners of an event store).
#: One more polls (backing off to POLL_MAX_S) until a slot is free. A writer that finds no sleeper
#: takes this many shared locks (in its first inserting statement; later ones find them held).
SLOTS = 4

#: Polling while busy (seconds): the first wait after a fetch that returned rows, the growth per
#: empty fetch, and the longest wait while a sleep is refused (a writer's transaction is open).
POLL_MIN_S = 0.002
POLL_GROWTH = 1.5
POLL_MAX_S = 0.05
#: No busy fetch for this long: go to sleep (take a slot) and wait for a notification.
QUIET_S = 0.025
#: A fetch that returned this many rows or more is busy: commits arrive faster than one per
#: wake-up, so the relay polls instead of making every writer notify.
BUSY_ROWS = 2


def wake_keys(ref: TableRef) -> list[int]:
    """The outbox's slot locks: :data:`SLOTS` consecutive bigint advisory-lock keys, derived from
    its name (the writers' trigger and every sleeper compute the same ones)."""
    digest = hashlib.sha1(f"outboxkit-wake:{ref.schema or ''}.{ref.table}".encode(), usedforsecurity=False).digest()
    base = int.from_bytes(digest[:8], "big", signed=True) & ~0xFF
    return [base + slot for slot in range(SLOTS)]


def sleeper_waits(ref: TableRef) -> str:
    """The trigger's WHEN: true while a sleeper holds (any) slot. CASE evaluates its branches in
    order and stops at the first true one, so a writer stops at the first taken slot; with no
    sleeper, it ends up holding every slot shared until its transaction ends."""
    branches = " ".join(f"WHEN NOT pg_try_advisory_xact_lock_shared({key}) THEN true" for key in wake_keys(ref))
    return f"CASE {branches} ELSE false END"


def sleep_sql(ref: TableRef) -> str:
    """Take the first free slot exclusively (session lock): its index, or -1 when none is free (a
    writer holds them shared, or other sleepers hold them)."""
    branches = " ".join(f"WHEN pg_try_advisory_lock({key}) THEN {slot}" for slot, key in enumerate(wake_keys(ref)))
    return f"SELECT CASE {branches} ELSE -1 END"


def wake_sql(ref: TableRef, slot: int) -> str:
    """Give a slot back (the sleeper woke up with work to do)."""
    return f"SELECT pg_advisory_unlock({wake_keys(ref)[slot]})"


def trigger_ddl(ref: TableRef) -> list[str]:
    """The notify function and its statement trigger (dropped and re-created by every migrate, so
    an outbox migrated by an earlier version, whose trigger notified on every insert, is upgraded)."""
    fn, trigger, t = ref.derived("notify"), ref.index_name("notify"), ref.qualified
    return [
        f"""CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Runs only when a relay sleeps (the trigger's WHEN). PostgreSQL folds identical notifications
    -- of one transaction into one, so a transaction emitting 100 events notifies once.
    PERFORM pg_notify('{ref.channel}', '');
    RETURN NULL;
END
$$""",
        f"CREATE TRIGGER {trigger} AFTER INSERT ON {t} FOR EACH STATEMENT"
        f" WHEN ({sleeper_waits(ref)}) EXECUTE FUNCTION {fn}()",
    ]


@dataclass
class WakePolicy:
    """When a relay polls and when it sleeps (no I/O; the store does what it says).

    ``fetched(now, rows)``: a fetch returned ``rows`` rows; True if it was busy (the store then
    gives its slot back). ``sleepy(now)``: no busy fetch for long enough to sleep.
    ``next_poll()``: how long the next polling wait lasts (grows while fetches come back empty)."""

    poll_min: float = POLL_MIN_S
    poll_max: float = POLL_MAX_S
    growth: float = POLL_GROWTH
    quiet: float = QUIET_S
    busy_rows: int = BUSY_ROWS
    last_rows: float = float("-inf")  # the last busy fetch; none yet: sleep at once
    interval: float = field(default=POLL_MIN_S)

    def fetched(self, now: float, rows: int) -> bool:
        if rows:
            self.interval = self.poll_min  # rows came: the next ones are likely close behind
        if rows < self.busy_rows:
            return False
        self.last_rows = now
        return True

    def sleepy(self, now: float) -> bool:
        return now - self.last_rows >= self.quiet

    def next_poll(self) -> float:
        interval = self.interval
        self.interval = min(self.poll_max, interval * self.growth)
        return interval
