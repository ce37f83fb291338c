"""The audit log: who did what to which function, and when."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.shortcuts import render
from django.views.decorators.http import require_GET

from portal.functions import access
from portal.functions.forms import AuditFilterForm
from portal.models import AuditEvent


@require_GET
@login_required
def audit_log(request):
    form = AuditFilterForm(request.GET or None)
    events = AuditEvent.objects.select_related("function").order_by("-created_at", "-pk")
    if not request.user.is_staff:
        events = events.filter(function__in=access.visible_functions(request.user))
    if form.is_valid():
        if form.cleaned_data["function"]:
            events = events.filter(function__name=form.cleaned_data["function"])
        if form.cleaned_data["user"]:
            events = events.filter(actor_label=form.cleaned_data["user"])
    page = Paginator(events, 50).get_page(request.GET.get("page"))
    return render(request, "portal/audit.html", {"page": page, "form": form})
