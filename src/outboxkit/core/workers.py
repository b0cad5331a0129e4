"""Decisions of ``outboxkit relay --workers N``, without I/O: worker names, ports, restart timing.

* **A worker is an ordinary relay with its own owner name** in the lease table, so the bucket
  leases and their fencing (a mark checked against the lease epoch, H6) keep every guarantee
  between workers exactly as between relays on different machines. The name says which
  supervisor it belongs to: ``<host>:<supervisor pid>:<token>/w<i>``.
* **A restarted worker keeps its slot's name.** The supervisor starts a slot again only after it
  reaped the previous process, so two live processes never share a name; if the new one is up
  before its predecessor's leases expired, it renews them (same epoch, as a relay does after
  reconnecting) and resumes those buckets at once; otherwise the other workers took them over and
  the buckets are shared again. Either way it fetches from each bucket's lowest pending seq, so
  nothing the dead worker had in flight is skipped or overtaken (H10: orphaned claims reorder a key).
* **Restart with backoff**: a worker that keeps dying quickly waits longer each time (up to
  :data:`RESTART_CAP` seconds); one that ran for :data:`STABLE_AFTER` seconds starts the count again.
* **Exit status 2 is final**: it means a configuration error, which restarting cannot fix.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

from outboxkit.core.backoff import backoff_delay

#: Exit status of a process that refused its configuration (the CLI's convention).
CONFIG_EXIT = 2
#: A worker that ran this long before it died counts as a fresh failure, not one in a series.
STABLE_AFTER = 30.0
#: Longest wait before a restart (a worker that cannot reach its database at start-up exits).
RESTART_CAP = 30.0
RESTART_BASE = 0.5

_OWNER = re.compile(r"^(?P<supervisor>.+)/w(?P<index>[1-9][0-9]*)$")


def worker_owner(supervisor: str, index: int) -> str:
    """``host:pid:token`` and 2 -> ``host:pid:token/w2``."""
    return f"{supervisor}/w{index}"


def split_owner(owner: str) -> tuple[str, int] | None:
    """``host:pid:token/w2`` -> (``host:pid:token``, 2); None for a relay that is no worker."""
    match = _OWNER.match(owner)
    return (match["supervisor"], int(match["index"])) if match else None


def worker_port(base: int, index: int) -> int:
    """The HTTP port of worker ``index`` (1-based): ``base`` for w1, ``base + 1`` for w2...; 0 = off."""
    return base + index - 1 if base else 0


def ports_fit(base: int, workers: int) -> bool:
    """Whether every worker's port is a valid TCP port."""
    return not base or base + workers - 1 <= 65535


def fatal(returncode: int) -> bool:
    """Whether a worker's exit means "stop everything" rather than "start it again"."""
    return returncode == CONFIG_EXIT


@dataclass
class RestartPolicy:
    """When to start a dead worker again: backoff over quick deaths, reset by a stable run."""

    rng: random.Random = field(default_factory=random.Random)
    failures: int = 0

    def delay(self, lived_s: float) -> float:
        """Seconds to wait before restarting a worker that died after living ``lived_s`` seconds."""
        self.failures = 1 if lived_s >= STABLE_AFTER else self.failures + 1
        return backoff_delay(self.failures, base=RESTART_BASE, cap=RESTART_CAP, rng=self.rng)


__all__ = [
    "CONFIG_EXIT",
    "RESTART_CAP",
    "STABLE_AFTER",
    "RestartPolicy",
    "fatal",
    "ports_fit",
    "split_owner",
    "worker_owner",
    "worker_port",
]
