"""``outboxkit relay --workers N``: one supervisor process and N relay processes sharing the buckets.

Built on the relay and web floors (a worker is ``web.serve_relay`` around an ordinary relay), never
imported by them. The decisions (names, ports, restart timing) are in ``core.workers``; see
``docs/operations.md`` ("Several relay processes on one machine").
"""

from outboxkit.workers.spec import WorkerSpec
from outboxkit.workers.supervisor import Supervisor, run_workers

__all__ = ["Supervisor", "WorkerSpec", "run_workers"]
