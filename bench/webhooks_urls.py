"""The portal's URLs plus a bare POST view answering 204: the same server's floor."""

from django.http import HttpResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from portal.urls import urlpatterns as portal_urlpatterns


@csrf_exempt
def bare(request):
    return HttpResponse(status=204)


urlpatterns = [path("bench/bare", bare), *portal_urlpatterns]
