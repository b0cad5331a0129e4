"""The billing service: a FastStream subscriber behind the outboxkit inbox.

For each ``orders.created`` it writes one invoice and emits ``invoices.created``, in one transaction
with the inbox row, effectively once: a redelivered or duplicated event finds its id in the inbox
and is acknowledged without billing twice; a failure rolls back the invoice and the follow-up event
and the message comes back.

Run:  python billing_service.py
"""

from __future__ import annotations

import asyncio
import os

from faststream import FastStream
from faststream.nats import JStream, NatsBroker
from nats.js.api import ConsumerConfig
from pydantic import BaseModel
from sqlalchemy import String
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from outboxkit.contrib.faststream import Inbox, InboxTx

DATABASE_URL = os.environ.get("DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/billing")
NATS_URL = os.environ.get("NATS_URL", "nats://127.0.0.1:4222")
PREFIX = os.environ.get("TOPIC_PREFIX", "shop")
STREAM = os.environ.get("NATS_STREAM", "SHOP")
# Seconds JetStream waits for an ack before redelivering (after a crash, say).
ACK_WAIT = float(os.environ.get("BILLING_ACK_WAIT", "30"))

engine = create_async_engine(DATABASE_URL)
inbox = Inbox(engine, name="billing")
broker = NatsBroker(NATS_URL, middlewares=[inbox])
app = FastStream(broker)


class Base(DeclarativeBase):
    pass


class Invoice(Base):
    __tablename__ = "invoices"

    id: Mapped[int] = mapped_column(primary_key=True)
    # No unique constraint on purpose: the inbox alone keeps it at one invoice per order.
    order_id: Mapped[int]
    customer: Mapped[str] = mapped_column(String(100))
    amount_cents: Mapped[int]


class OrderCreated(BaseModel):
    order_id: int
    customer: str
    amount_cents: int


@broker.subscriber(
    f"{PREFIX}.orders.created",
    stream=JStream(STREAM, declare=False),  # made by `outboxkit provision`
    durable="billing",
    pull_sub=True,
    config=ConsumerConfig(ack_wait=ACK_WAIT),
)
async def bill(order: OrderCreated, tx: InboxTx) -> None:
    invoice = Invoice(order_id=order.order_id, customer=order.customer, amount_cents=order.amount_cents)
    tx.session.add(invoice)
    await tx.session.flush()  # assigns invoice.id
    await tx.emit(
        f"{PREFIX}.invoices.created",
        {"invoice_id": invoice.id, "order_id": order.order_id, "amount_cents": order.amount_cents},
        key=order.customer,
    )
    # No commit here: the inbox commits the invoice, the event and its own row together, then acks.


@app.on_startup
async def create_tables() -> None:
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)


if __name__ == "__main__":
    asyncio.run(app.run())
