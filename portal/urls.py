from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import path
from django.views.generic import RedirectView

from portal.api import api
from portal.views import account, audit, console, deliveries, deployments, feedback, functions, health, webhooks
from portal.views.metrics import metrics

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="portal-functions", permanent=False), name="portal-home"),
    path("login/", auth_views.LoginView.as_view(template_name="portal/login.html", redirect_authenticated_user=True),
         name="portal-login"),
    path("logout/", auth_views.LogoutView.as_view(), name="portal-logout"),
    path("functions/", functions.function_list, name="portal-functions"),
    path("functions/new/", functions.function_register, name="portal-function-register"),
    path("functions/<slug:name>/", functions.function_detail, name="portal-function"),
    path("functions/<slug:name>/edit/", functions.function_edit, name="portal-function-edit"),
    path("functions/<slug:name>/deploy/", functions.function_deploy, name="portal-function-deploy"),
    path("functions/<slug:name>/rollback/<int:pk>/", functions.function_rollback, name="portal-function-rollback"),
    path("functions/<slug:name>/resume/", functions.function_resume, name="portal-function-resume"),
    path("functions/<slug:name>/reconcile/", functions.function_reconcile, name="portal-function-reconcile"),
    path("functions/<slug:name>/archive/", functions.function_archive, name="portal-function-archive"),
    path("functions/<slug:name>/restore/", functions.function_restore, name="portal-function-restore"),
    path("functions/<slug:name>/members/", functions.member_add, name="portal-member-add"),
    path("functions/<slug:name>/members/<int:user_id>/role/", functions.member_role, name="portal-member-role"),
    path("functions/<slug:name>/members/<int:user_id>/remove/", functions.member_remove,
         name="portal-member-remove"),
    path("functions/<slug:name>/members/<int:user_id>/transfer/", functions.member_transfer,
         name="portal-member-transfer"),
    path("functions/<slug:name>/webhook/secret-token/", functions.webhook_secret_token,
         name="portal-webhook-secret-token"),
    path("functions/<slug:name>/webhook/signing-token/", functions.webhook_signing_token,
         name="portal-webhook-signing-token"),
    path("functions/<slug:name>/deliveries/", deliveries.delivery_list, name="portal-deliveries"),
    path("functions/<slug:name>/deliveries/<int:delivery_id>/replay/", deliveries.delivery_replay,
         name="portal-delivery-replay"),
    path("functions/<slug:name>/feedback/", feedback.feedback_settings, name="portal-feedback"),
    path("functions/<slug:name>/feedback/webhook-secret/", feedback.feedback_webhook_secret,
         name="portal-feedback-webhook-secret"),
    path("functions/<slug:name>/drift/check/", feedback.drift_check, name="portal-drift-check"),
    path("functions/<slug:name>/drift/accept/", feedback.drift_accept, name="portal-drift-accept"),
    # Any name answers the same (401) whether a function has it or not.
    path("hooks/gitlab/<str:name>", webhooks.gitlab_receiver, name="portal-webhook-gitlab"),
    path("functions/<slug:name>/console/", console.console_page, name="portal-console"),
    path("functions/<slug:name>/console/runs/<int:pk>/", console.console_run, name="portal-console-run"),
    path("functions/<slug:name>/console/images/<int:pk>/", console.console_image, name="portal-console-image"),
    path("functions/<slug:name>/console/runs/<int:pk>/golden/", console.golden_save, name="portal-golden-save"),
    path("functions/<slug:name>/golden/<int:pk>/", console.golden_detail, name="portal-golden"),
    path("functions/<slug:name>/golden/<int:pk>/delete/", console.golden_delete, name="portal-golden-delete"),
    path("console/samples/<slug:sample>/", console.console_sample, name="portal-console-sample"),
    path("deployments/<int:pk>/", deployments.deployment_detail, name="portal-deployment"),
    path("deployments/<int:pk>/cancel/", deployments.deployment_cancel, name="portal-deployment-cancel"),
    path("audit/", audit.audit_log, name="portal-audit"),
    path("account/tokens/", account.tokens, name="portal-tokens"),
    path("account/tokens/<int:pk>/revoke/", account.token_revoke, name="portal-token-revoke"),
    path("api/v1/", api.urls),
    path("healthz", health.healthz, name="portal-healthz"),
    path("metrics", metrics, name="portal-metrics"),
    path("health/", health.health_page, name="portal-health"),
    path("admin/", admin.site.urls),
]
