"""A function's webhook deliveries: the log (viewers) and Replay (deployers). Each
delivery shows what it caused: its deployment, and the automatic promotions that
followed it into later environments (portal/hooks/caused.py)."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models.functions import Length, Substr
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from portal import hooks
from portal.functions import access
from portal.hooks import gitlab
from portal.models import DeliveryRing, WebhookDelivery
from portal.views import refusals

PAGE_SIZE = 25
SHOWN_BODY_CHARS = 20_000  # a page of deliveries stays light: the rest is in the admin
MASKED = "•••••• (shown to owners)"


@require_GET
@login_required
def delivery_list(request, name):
    function = access.function_for(request.user, name)
    # Bodies may be megabytes: the page shows the start of each, cut in the database.
    deliveries = (WebhookDelivery.objects.filter(function=function)
                  .select_related("deployment__environment", "replayed_by", "preview")
                  .defer("body").annotate(shown_body=Substr("body", 1, SHOWN_BODY_CHARS), body_chars=Length("body"))
                  .order_by("-received_at", "-pk"))
    page = Paginator(deliveries, PAGE_SIZE).get_page(request.GET.get("page"))
    # With the signature headers and the body, a delivery can be sent again: a replay is refused,
    # but only the owners, who hold the signing token anyway, need to see them.
    owner = access.can(request.user, function, access.ADMIN)
    caused = hooks.promotions_caused([delivery.deployment_id for delivery in page])
    for delivery in page:
        delivery.promotions = caused.get(delivery.deployment_id, [])
        delivery.shown_headers = {name: value if owner or name.lower() not in gitlab.SIGNATURE_HEADERS
                                  else MASKED for name, value in delivery.headers.items()}
    ring = DeliveryRing.objects.filter(owner=function.pk).first()
    not_kept = ring.rejected - WebhookDelivery.objects.filter(ring=ring).count() if ring else 0
    return render(request, "portal/deliveries.html", {
        "function": function, "page": page, "not_kept": not_kept, "ring_size": settings.SLIPWAY_WEBHOOK_REJECTED_KEPT,
        "may_replay": access.can(request.user, function, access.DEPLOY) and not function.is_archived})


@require_POST
@login_required
@refusals.shown_on("portal-deliveries", "name")
def delivery_replay(request, name, delivery_id):
    function = access.function_for(request.user, name, access.DEPLOY)
    delivery = get_object_or_404(WebhookDelivery, pk=delivery_id, function=function)
    replay = hooks.replay_delivery(delivery, user=request.user)
    if replay.deployment_id:
        messages.success(request, f"Delivery #{delivery.pk} replayed as deployment #{replay.deployment_id}.")
        return redirect("portal-deployment", pk=replay.deployment_id)
    messages.success(request, f"Delivery #{delivery.pk} replayed: {replay.detail}")
    return redirect("portal-deliveries", name=function.name)
