"""What the supervisor tells a worker: everything it needs to run, as JSON on the worker's stdin.

Stdin rather than arguments or environment variables: the database and broker URLs may carry
passwords, and a process's arguments are visible to every user of the machine (``ps``)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from outboxkit.relay.loop import RelayConfig
from outboxkit.stores.base import TableRef


@dataclass(frozen=True)
class WorkerSpec:
    index: int  # 1-based: w1..wN
    workers: int
    supervisor_pid: int  # the worker stops when its parent is no longer this process
    db: str
    broker: str
    table: str
    schema: str | None
    source: str
    relay: RelayConfig  # with this worker's owner name
    hold_dead_keys: bool = True
    http_host: str = "127.0.0.1"
    http_port: int = 0
    summary_interval: float = 60.0
    log_level: int = 30
    life_level: int = 20
    log_format: str = "plain"
    debug: bool = False

    @property
    def name(self) -> str:
        return f"w{self.index}"

    @property
    def ref(self) -> TableRef:
        return TableRef(self.table, self.schema)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> WorkerSpec:
        data = json.loads(text)
        data["relay"] = RelayConfig(**data["relay"])
        return cls(**data)
