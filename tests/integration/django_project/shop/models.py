from __future__ import annotations

from django.db import models


class Order(models.Model):
    customer = models.CharField(max_length=100)
    total = models.IntegerField()


class Shipment(models.Model):
    """Written by the consumer's handler (``handlers.ship``), once per order event."""

    order_id = models.BigIntegerField()
    event_id = models.CharField(max_length=36)
