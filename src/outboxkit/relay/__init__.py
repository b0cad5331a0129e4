"""The relay: claim committed outbox rows, publish them with confirmation, mark them delivered."""

from outboxkit.relay.loop import Relay, RelayConfig, RelayStats

__all__ = ["Relay", "RelayConfig", "RelayStats"]
