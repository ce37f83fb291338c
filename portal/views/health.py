from django.contrib.auth.decorators import login_required
from django.http import JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from portal.core import health


@require_GET
@never_cache
def healthz(request):
    """Machine-readable health: 200 when every part is up, 503 otherwise.

    Open without login so load balancers and `make run` can poll it; it
    carries no secrets (URLs are shown without credentials). The answer is
    cached for SLIPWAY_HEALTH_CACHE_SECONDS (portal.health.cached).
    """
    checks = health.cached()
    ok = all(check.ok for check in checks)
    body = {"ok": ok, "checks": {check.name: check.as_dict() for check in checks}}
    return JsonResponse(body, status=200 if ok else 503)


@require_GET
@never_cache
@login_required
def health_page(request):
    checks = health.cached()
    ok = all(check.ok for check in checks)
    return render(request, "portal/health.html", {"checks": checks, "ok": ok}, status=200 if ok else 503)
