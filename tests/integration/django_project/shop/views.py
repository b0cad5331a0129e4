"""The order endpoint: the order row and its event in one transaction (no on_commit)."""

from __future__ import annotations

from django.conf import settings
from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from outboxkit.contrib.django import emit
from tests.integration.django_project.shop.models import Order


class PaymentDeclined(Exception):
    pass


@csrf_exempt
@require_POST
def create_order(request: HttpRequest) -> JsonResponse:
    using = settings.OUTBOXKIT["DATABASE"]
    customer = request.POST["customer"]
    try:
        with transaction.atomic(using=using):
            order = Order.objects.using(using).create(customer=customer, total=int(request.POST["total"]))
            event_id = emit(
                request.POST.get("topic", "orders.created"),
                {"order": order.pk, "customer": customer, "total": order.total},
                key=f"customer-{customer}",
                using=using,
            )
            if request.POST.get("declined"):
                raise PaymentDeclined("payment declined")  # rolls back the order and its event
    except PaymentDeclined as exc:
        return JsonResponse({"error": str(exc)}, status=402)
    return JsonResponse({"order": order.pk, "event": event_id}, status=201)


@csrf_exempt
@require_POST
def create_order_in_request_transaction(request: HttpRequest) -> JsonResponse:
    """No atomic() of its own: works only with ATOMIC_REQUESTS, where the request is the transaction."""
    using = settings.OUTBOXKIT["DATABASE"]
    order = Order.objects.using(using).create(customer=request.POST["customer"], total=1)
    event_id = emit(request.POST["topic"], {"order": order.pk}, using=using)
    return JsonResponse({"order": order.pk, "event": event_id}, status=201)
