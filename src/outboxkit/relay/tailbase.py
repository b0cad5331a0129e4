"""What the log-tailing relay (``relay/tail.py``) needs of a database's log: a reader and a decoder.

The Protocols live with the log-capture role (``stores/logcapture.py``), which hands them out; they
are named here too for the relay's modules."""

from __future__ import annotations

from outboxkit.stores.logcapture import TailDecoder, TailReader

__all__ = ["TailDecoder", "TailReader"]
