"""The portal's URLs plus the fairest baseline for the receiver on the same server: the
least any durable receiver must do — find the hook's stored token digest, verify the
token in constant time, insert one row in one transaction — and nothing else (no
dedupe, no decision, no deployment)."""

from django.db import transaction
from django.http import HttpResponse
from django.urls import path
from django.utils.crypto import constant_time_compare
from django.views.decorators.csrf import csrf_exempt

from portal.hooks import gitlab
from portal.models import Function, WebhookDelivery
from portal.urls import urlpatterns as portal_urlpatterns

BASELINE_DETAIL = "bench: durable baseline"


@csrf_exempt
def durable(request, name: str):
    stored = Function.objects.filter(name=name).values_list("pk", "hook_keys__webhook_secret_hash").first()
    given = request.headers.get("X-Gitlab-Token", "")
    if stored is None or not constant_time_compare(gitlab.digest(given), stored[1]):
        return HttpResponse(status=401)
    body = request.body
    with transaction.atomic():
        WebhookDelivery.objects.create(function_id=stored[0], outcome=WebhookDelivery.Outcome.IGNORED,
                                       detail=BASELINE_DETAIL, body=body.decode("utf-8", "replace"),
                                       body_bytes=len(body), headers={}, status_code=204)
    return HttpResponse(status=204)


urlpatterns = [path("bench/durable/<str:name>", durable), *portal_urlpatterns]
