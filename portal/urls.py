from django.contrib import admin
from django.urls import path
from django.views.generic import RedirectView

from portal import views

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="portal-health", permanent=False)),
    path("healthz", views.healthz, name="portal-healthz"),
    path("health/", views.health_page, name="portal-health"),
    path("admin/", admin.site.urls),
]
