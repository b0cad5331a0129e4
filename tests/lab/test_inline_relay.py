"""outbox-inline+relay: the writer publishes right after commit, a relay is the safety net.

Two failures seen in the default run (seed 1) and fixed:

* the relay stopped publishing after a fault (its lease keeper restored trust without waking it,
  see tests/integration/test_lease_keeper.py) and every later settle waited its full time — 96 s
  for the event left by ``instance-lost``. A settle that runs out of time now stops the run at once
  and says why (pending rows, leases, relay process and log, the writer's own publishing);
* the new writer instance published a key's events while an earlier event of the key, left by the
  crashed instance, still waited for the relay: per-key reordering. The writer now steps aside for
  such a key, as ``InlinePublisher`` does.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from outboxkit.lab.runner import LabOptions, LabStalled, _Companion, _settle, run_lab
from outboxkit.lab.strategies import STRATEGIES
from outboxkit.lab.strategy import Env
from outboxkit.migrate import migrate
from outboxkit.testing.workload import OrdersWorkload
from tests.conftest import unique
from tests.helpers import emit_many

FAULTS = ("broker-restart", "kill-after-commit", "instance-lost", "kill-relay")


async def test_inline_relay_keeps_every_key_in_order_across_crashes_and_a_broker_restart(lab_pg: str) -> None:
    options = LabOptions(strategies=("outbox-inline+relay",), faults=FAULTS, events=120, seed=1, db=lab_pg)
    (run,) = (await run_lab(options)).runs  # a stalled relay raises LabStalled with its diagnostic
    assert run.restarts == 2
    assert run.verdict.tally.lost == 0
    assert run.verdict.tally.phantom == 0
    assert run.verdict.tally.order_violations == 0


async def test_a_settle_that_runs_out_of_time_stops_with_a_diagnostic(lab_pg: str, tmp_path: Path) -> None:
    schema = unique("lab_stall")
    env = Env(lab_pg, schema, "nats://127.0.0.1:1", f"{schema}.orders", str(tmp_path / "run" / "instance"))
    workload = OrdersWorkload(lab_pg, schema=schema)
    workload.setup()
    strategy = STRATEGIES["outbox-inline+relay"]
    try:
        migrate(lab_pg, env.ref)
        emit_many(lab_pg, env.ref, env.topic, [{"n": 1}, {"n": 2}], key=lambda _: "customer-007")
        # A companion that is alive and delivers nothing: the stall the runner must explain.
        companion = _Companion([sys.executable, "-c", "import time; time.sleep(600)"], tmp_path / "c.log")
        companion.start()
        try:
            with pytest.raises(LabStalled) as stalled:
                await _settle(strategy, env, 0.2, companion, "a settle before a fault")
        finally:
            companion.kill()
    finally:
        workload.drop()
    message = str(stalled.value)
    assert "a settle before a fault timed out" in message and "2 events not delivered" in message
    assert "2 pending rows" in message and "key customer-007" in message
    assert "leases: none held" in message
    assert "companion running" in message
    assert "writer: no failed publish of its own" in message


NEVER_DELIVERS = [sys.executable, "-c", "import time; print('relay started: stuck', flush=True); time.sleep(600)"]


async def test_a_stalled_relay_stops_the_lab_run_at_its_first_settle(
    lab_pg: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The real write path (the writer subprocess runs it), with a relay that says it started and
    # then delivers nothing: the first settle must stop the run, not wait out every fault.
    monkeypatch.setattr(STRATEGIES["outbox-relay-notify"], "companion", lambda env: NEVER_DELIVERS)
    options = LabOptions(
        strategies=("outbox-relay-notify",), faults=("kill-relay", "db-kill"), events=40, db=lab_pg, settle_timeout=1
    )
    with pytest.raises(LabStalled) as stalled:
        await run_lab(options)
    message = str(stalled.value)
    assert "outbox-relay-notify: a settle before a fault timed out after 1s" in message
    assert "pending rows" in message and "companion running" in message and "relay started: stuck" in message
