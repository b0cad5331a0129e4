"""How much of the machine other work took while a benchmark ran ("foreign" CPU).

The load average cannot tell: a benchmark on 2 cores that drives a relay, a database and a broker
pushes the load to about 2 by itself, so "load < 1.5 at the end" flags every honest run and
"load < 1.5 at the start" misses a test suite that started half-way. What matters is whether
anything *besides* the benchmark used the cores. From ``/proc`` (Linux):

    foreign = machine busy time in user and system mode (``/proc/stat``)
              - busy time of the benchmark's own process tree (children it waited for included)
              - busy time of the services it drives and of kernel threads

over the same interval, as a share of ``wall x cores``. The services (databases, brokers) are
counted as the benchmark's own whoever used them, so another program's queries against them hide
in "ours": the foreign share is a lower bound, which is why the quiet wrapper's load at the start
is kept beside it. A run is quotable when the foreign share stays under :data:`FOREIGN_MAX`.

Elsewhere than Linux the watch reports ``None`` and the verdict falls back to the load average.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

#: Share of the machine (all cores) other work may take for a figure to count as quiet.
FOREIGN_MAX = 0.05
#: Processes that serve the benchmark (databases, brokers) by their ``comm`` name; private servers
#: the benchmarks start (nats-server from its wheel, Tansu, a private PostgreSQL/MariaDB) included.
SERVICES = (
    "postgres",
    "mariadbd",
    "mysqld",
    "nats-server",
    "beam.smp",
    "erl_child_setu",
    "epmd",
    "redis-server",
    "mosquitto",
    "tansu",
)
_PROC = Path("/proc")
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _machine_busy() -> int | None:
    try:
        fields = (_PROC / "stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    # Interrupt time is left out: on loopback it is mostly the benchmark's own packets, and it
    # belongs to no process, so it could not be told apart. Steal (the hypervisor's) likewise.
    user, nice, system = (int(v) for v in fields[:3])
    return user + nice + system


def _processes() -> dict[int, tuple[str, int, int, int]]:
    """pid -> (comm, ppid, own ticks, ticks of waited-for children)."""
    found: dict[int, tuple[str, int, int, int]] = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue  # gone between the listing and the read
        # comm is in parentheses and may hold spaces: split after the last ')'.
        comm = raw[raw.index("(") + 1 : raw.rindex(")")]
        rest = raw[raw.rindex(")") + 2 :].split()
        ppid, utime, stime, cutime, cstime = int(rest[1]), int(rest[11]), int(rest[12]), int(rest[13]), int(rest[14])
        found[int(entry.name)] = (comm, ppid, utime + stime, cutime + cstime)
    return found


def _ours(procs: dict[int, tuple[str, int, int, int]], root: int) -> dict[int, int]:
    """Ticks of the benchmark's tree (with its reaped children) and of the services, by pid."""
    children: dict[int, list[int]] = {}
    for pid, (_comm, ppid, _t, _c) in procs.items():
        children.setdefault(ppid, []).append(pid)
    tree, stack = set(), [root]
    while stack:
        pid = stack.pop()
        if pid in tree or pid not in procs:
            continue
        tree.add(pid)
        stack.extend(children.get(pid, ()))
    ticks: dict[int, int] = {}
    for pid, (comm, ppid, own, reaped) in procs.items():
        if pid in tree:
            ticks[pid] = own + reaped
        elif comm.startswith(SERVICES) or 2 in (pid, ppid):
            ticks[pid] = own  # a service, or a kernel thread (flushing the services' writes)
    return ticks


@dataclass
class CpuWatch:
    """Started on creation; :meth:`foreign_share` is read any time after (Linux only)."""

    root: int = field(default_factory=os.getpid)
    _wall: float = field(default_factory=time.monotonic)
    _busy: int | None = None
    _ours: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._busy = _machine_busy()
        if self._busy is not None:
            self._ours = _ours(_processes(), self.root)

    def foreign_share(self) -> float | None:
        """Other work's CPU since the start, as a share of every core's time (None off Linux)."""
        busy = _machine_busy()
        if busy is None or self._busy is None:
            return None
        now = _ours(_processes(), self.root)
        # A process that ended since the start (and was not reaped inside our tree) drops out of
        # ``now``; leaving its start ticks out too keeps it from counting as negative work.
        ours = sum(t - self._ours.get(pid, 0) for pid, t in now.items())
        capacity = (time.monotonic() - self._wall) * (os.cpu_count() or 1) * _TICK
        if capacity <= 0:
            return 0.0
        return max(0.0, (busy - self._busy - ours) / capacity)
