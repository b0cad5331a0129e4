"""What the log-tailing relay (``relay/tail.py``) needs of a database's log: a reader and a decoder.

The Protocols live with the log-capture role (``stores/logcapture.py``), which hands them out; they
are named here too for the relay's modules."""

from __future__ import annotations

from outboxkit.stores.logcapture import TailDecoder, TailReader

__all__ = ["TailDecoder", "TailReader", "waits_in_peek"]


def waits_in_peek(reader: object) -> bool:
    """Whether ``reader.peek`` waits for the next change itself (a streaming reader), so that the
    relay must not add a pause of its own between peeks: that pause would be pure latency."""
    return bool(getattr(reader, "waits_in_peek", False))
