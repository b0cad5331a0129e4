"""The orders service: FastAPI + SQLAlchemy ``AsyncSession``.

``POST /orders`` writes the order and its ``orders.created`` event in ONE transaction, on the
request's own session: ``emit_async`` adds a row to the outbox table and never commits. Either both
commit or neither does; ``outboxkit relay`` publishes the event after the commit.

Run:  uvicorn orders_service:app --port 8000
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException
from pydantic import BaseModel, Field
from sqlalchemy import String
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from outboxkit import emit_async

DATABASE_URL = os.environ.get("DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/orders")
ORDER_CREATED = os.environ.get("TOPIC_PREFIX", "shop") + ".orders.created"

engine = create_async_engine(DATABASE_URL)
Session = async_sessionmaker(engine, expire_on_commit=False)


class Base(DeclarativeBase):
    pass


class Order(Base):
    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(primary_key=True)
    customer: Mapped[str] = mapped_column(String(100))
    amount_cents: Mapped[int]


class OrderIn(BaseModel):
    customer: str = Field(min_length=1, max_length=100)
    amount_cents: int = Field(gt=0)


class OrderOut(BaseModel):
    id: int
    customer: str
    amount_cents: int


class Created(OrderOut):
    event_id: str


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # The outbox table comes from `outboxkit migrate`; the service's own table from its models.
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    yield
    await engine.dispose()


app = FastAPI(title="orders", lifespan=lifespan)


async def session() -> AsyncIterator[AsyncSession]:
    async with Session() as s:
        yield s


DB = Annotated[AsyncSession, Depends(session)]


@app.post("/orders", status_code=201)
async def create_order(order: OrderIn, db: DB) -> Created:
    async with db.begin():  # one transaction: the order and its event commit together, or neither
        row = Order(customer=order.customer, amount_cents=order.amount_cents)
        db.add(row)
        await db.flush()  # assigns row.id
        event_id = await emit_async(
            db,
            ORDER_CREATED,
            {"order_id": row.id, "customer": row.customer, "amount_cents": row.amount_cents},
            key=row.customer,  # per-customer order on the bus
        )
    return Created(id=row.id, customer=row.customer, amount_cents=row.amount_cents, event_id=event_id)


@app.get("/orders/{order_id}")
async def get_order(order_id: int, db: DB) -> OrderOut:
    row = await db.get(Order, order_id)
    if row is None:
        raise HTTPException(status_code=404, detail="no such order")
    return OrderOut(id=row.id, customer=row.customer, amount_cents=row.amount_cents)
