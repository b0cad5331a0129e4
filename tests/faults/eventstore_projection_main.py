"""A projection runner as a child process, for the event store crash test (SIGKILLed, restarted).

Usage: python -m tests.faults.eventstore_projection_main DB_URL SCHEMA
"""

from __future__ import annotations

import signal
import sys
import threading

from outboxkit.eventstore import EventStore, ProjectionRunner
from tests.integration.eventstore_support import Counts


def main() -> None:
    url, schema = sys.argv[1], sys.argv[2]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    runner = ProjectionRunner(EventStore(schema=schema), Counts("counts", "postgres", schema), url, batch=200)
    try:
        runner.run(stop)
    finally:
        runner.close()


if __name__ == "__main__":
    main()
