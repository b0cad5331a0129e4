"""The inbox as a FastStream middleware: effectively-once handlers, and follow-up events emitted in
the handler's own transaction (consume -> act -> emit, exactly once end to end).

>>> inbox = Inbox(async_sessionmaker(engine), name="billing")             # doctest: +SKIP
>>> broker = NatsBroker("nats://localhost:4222", middlewares=[inbox])     # doctest: +SKIP
>>> @broker.subscriber("orders.created", stream="ORDERS", durable="billing")
... async def on_order(body: dict, tx: InboxTx) -> None:                  # doctest: +SKIP
...     tx.session.add(Invoice(order=body["id"]))
...     await tx.emit("invoices.created", {"order": body["id"]}, key=tx.event.key)

Install with ``pip install "outboxkit[faststream,sqlalchemy]"``; see docs/faststream.md.
"""

from outboxkit.extras import missing_extra_message

try:
    import faststream as _faststream  # noqa: F401
    import sqlalchemy as _sqlalchemy  # noqa: F401
except ImportError as exc:  # one line naming the install, not a traceback into our imports
    raise ImportError(missing_extra_message(exc) or str(exc), name=exc.name) from None

from outboxkit.contrib.faststream.middleware import CONTEXT_KEY, Inbox, InboxTransaction, InboxTx

__all__ = ["CONTEXT_KEY", "Inbox", "InboxTransaction", "InboxTx"]
