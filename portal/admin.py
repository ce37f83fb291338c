import json

from django.contrib import admin

from portal.functions import masking
from portal.models import (
    ApiToken,
    Approval,
    AuditEvent,
    Build,
    ConsoleImage,
    ConsoleRun,
    DeliveryRing,
    Deployment,
    DeploymentStep,
    DriftState,
    Environment,
    FeedbackSettings,
    FreezeWindow,
    Function,
    GoldenCase,
    HookKeys,
    ImageDeletion,
    Membership,
    NotificationAttempt,
    Preview,
    PreviewPolicy,
    Rollout,
    RolloutEvent,
    SeenSignature,
    SourceAccess,
    WebhookDelivery,
)

SHOWN_MASKED = ("variables",)
SHOWN_MASKED_DRIFT = ("expected_state", "drift_observed")
# The sealed tokens and keys of a function, by the side row that keeps each.
SEALED = (("hook_keys", "webhook_secret_hash"), ("hook_keys", "webhook_signing_key"),
          ("source_access", "source_secret"), ("feedback_settings", "gitlab_status_token"),
          ("feedback_settings", "notify_webhook_secret"))


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


def _shown(function: Function, value: dict) -> str:
    """A recorded value as the admin shows it: JSON, with the function's secret values masked."""
    return masking.scrub(json.dumps(value, indent=1, ensure_ascii=False), function)


def _drift_shown(state: DriftState, field: str) -> str:
    """A drift state's recorded Lambda state (expected_state, drift_observed), secret variables masked."""
    function = state.environment.function
    return _shown(function, masking.masked_state(function, getattr(state, field)))


@admin.register(Function)
class FunctionAdmin(admin.ModelAdmin):
    list_display = ["name", "architecture", "lambda_name", "alias", "branch", "auto_deploy", "paused_reason"]
    list_filter = ["architecture", "auto_deploy"]
    search_fields = ["name", "environments__lambda_name", "repository_url"]
    inlines = [MembershipInline]
    # Read-only here: the portal's edit page (staff may use it on any function) runs the
    # pipeline's validators, keeps secrets write-only and audits the change; the admin would do none.
    # Secret values are masked here as everywhere else: the environment and the recorded Lambda
    # states show secret variables masked, the sealed tokens and keys only whether they are set.
    readonly_fields = [f.name for f in Function._meta.fields] + [
        "lambda_name", "alias", "paused_reason", "environment_masked", "expected_state_masked",
        "drift_observed_masked", "secrets_set"]

    def has_add_permission(self, request) -> bool:
        return False  # registering goes through the portal's form for the same reasons

    # Its first environment's Lambda settings (the environments have their own admin page).
    @admin.display(description="Lambda")
    def lambda_name(self, function: Function) -> str:
        return function.first_environment.lambda_name

    @admin.display(description="alias")
    def alias(self, function: Function) -> str:
        return function.first_environment.alias

    @admin.display(description="paused")
    def paused_reason(self, function: Function) -> str:
        return function.first_environment.paused_reason

    @admin.display(description="environment")
    def environment_masked(self, function: Function) -> str:
        return _shown(function, function.first_environment.masked_variables())

    @admin.display(description="expected state")
    def expected_state_masked(self, function: Function) -> str:
        return _drift_shown(function.first_environment.drift_state, "expected_state")

    @admin.display(description="drift observed")
    def drift_observed_masked(self, function: Function) -> str:
        return _drift_shown(function.first_environment.drift_state, "drift_observed")

    @admin.display(description="secrets set")
    def secrets_set(self, function: Function) -> str:
        return ", ".join(name for side, name in SEALED if getattr(getattr(function, side), name)) or "none"


@admin.register(Build)
class BuildAdmin(admin.ModelAdmin):
    list_display = ["function", "tag", "status", "digest", "size_bytes", "created_at"]
    list_filter = ["status", "architecture"]
    search_fields = ["commit_sha", "digest"]
    readonly_fields = [f.name for f in Build._meta.fields]


class DeploymentStepInline(admin.TabularInline):
    model = DeploymentStep
    extra = 0
    can_delete = False
    readonly_fields = ["position", "name", "status", "started_at", "finished_at", "exit_status", "output"]


@admin.register(Deployment)
class DeploymentAdmin(admin.ModelAdmin):
    list_display = ["pk", "function", "kind", "trigger", "status", "version", "error_code", "created_at"]
    list_filter = ["status", "kind", "trigger"]
    search_fields = ["commit_sha", "function__name"]
    readonly_fields = [f.name for f in Deployment._meta.fields]
    inlines = [DeploymentStepInline]


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = ["received_at", "function", "event_type", "outcome", "detail"]
    list_filter = ["outcome", "event_type"]
    readonly_fields = [f.name for f in WebhookDelivery._meta.fields]


@admin.register(DeliveryRing)
class DeliveryRingAdmin(admin.ModelAdmin):
    """Refusals per ring (owner 0: unknown names; its rows are the deliveries without a function)."""

    list_display = ["owner", "rejected"]
    readonly_fields = ["owner", "rejected"]


@admin.register(SeenSignature)
class SeenSignatureAdmin(admin.ModelAdmin):
    list_display = ["function", "webhook_id", "timestamp", "delivery"]
    readonly_fields = [f.name for f in SeenSignature._meta.fields]


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ["created_at", "actor_label", "action", "function"]
    list_filter = ["action"]
    readonly_fields = [f.name for f in AuditEvent._meta.fields]

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Approval)
class ApprovalAdmin(admin.ModelAdmin):
    """Decisions are the audit trail of a release: shown, never edited here."""

    list_display = ["created_at", "deployment", "user", "decision", "environment", "expires_at"]
    list_filter = ["decision"]
    readonly_fields = [f.name for f in Approval._meta.fields]

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Staff see and revoke tokens; the token itself is never stored, so never shown."""

    list_display = ["user", "name", "hint", "function", "deploy_only", "expires_at", "last_used_at", "revoked_at"]
    list_filter = ["deploy_only"]
    search_fields = ["user__username", "name", "hint"]
    readonly_fields = ["user", "name", "hint", "token_hash", "function", "deploy_only", "expires_at", "last_used_at",
                       "created_at"]


@admin.register(ConsoleImage)
class ConsoleImageAdmin(admin.ModelAdmin):
    """Images kept for the console and its golden cases (the bytes are not shown here)."""

    list_display = ["function", "name", "format", "width", "height", "size_bytes", "last_used_at"]
    list_filter = ["format"]
    exclude = ["data"]
    readonly_fields = [f.name for f in ConsoleImage._meta.fields if f.name != "data"]


@admin.register(ConsoleRun)
class ConsoleRunAdmin(admin.ModelAdmin):
    list_display = ["pk", "function", "user", "target", "executed_version", "outcome", "box_count", "round_trip_ms",
                    "created_at"]
    list_filter = ["outcome"]
    readonly_fields = [f.name for f in ConsoleRun._meta.fields]


@admin.register(GoldenCase)
class GoldenCaseAdmin(admin.ModelAdmin):
    list_display = ["function", "name", "version", "created_by", "created_at"]
    readonly_fields = ["function", "image", "saved_from", "version", "created_by", "created_at"]


@admin.register(NotificationAttempt)
class NotificationAttemptAdmin(admin.ModelAdmin):
    list_display = ["created_at", "function", "channel", "event", "attempt", "outcome", "status_code"]
    list_filter = ["channel", "outcome"]
    readonly_fields = [f.name for f in NotificationAttempt._meta.fields]

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(ImageDeletion)
class ImageDeletionAdmin(admin.ModelAdmin):
    """Images retention is deleting right now (a mark older than half an hour is a dead run's)."""

    list_display = ["repository", "digest", "marked_at"]
    readonly_fields = [f.name for f in ImageDeletion._meta.fields]


class RolloutEventInline(admin.TabularInline):
    model = RolloutEvent
    extra = 0
    can_delete = False
    readonly_fields = ["action", "weight", "note", "at"]

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Rollout)
class RolloutAdmin(admin.ModelAdmin):
    """Read-only: a rollout moves by its ticks and by the page's and API's controls, which
    check who may and audit it (portal/deployments/rollout.py)."""

    list_display = ["deployment", "strategy", "stable_version", "new_version", "weight", "next_tick_at", "ended_at"]
    readonly_fields = [f.name for f in Rollout._meta.fields]
    inlines = [RolloutEventInline]

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class ReadOnlyAdmin(admin.ModelAdmin):
    """Managed on the portal's pages or the API, which check who may and audit the change."""

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Preview)
class PreviewAdmin(ReadOnlyAdmin):
    """Merge requests' previews (portal/deployments/previews.py): opened and closed by webhooks."""

    list_display = ["function", "mr_iid", "state", "author", "head_sha", "version", "created_at"]


@admin.register(PreviewPolicy)
class PreviewPolicyAdmin(ReadOnlyAdmin):
    """What an owner allows previews (the function's page sets it)."""

    list_display = ["environment", "allow_forks", "url_auth", "commit_status", "allow_drafts"]


@admin.register(FreezeWindow)
class FreezeWindowAdmin(admin.ModelAdmin):
    """Read-only: windows are managed on the portal's pages or the API, which check who may
    and audit the change (portal/deployments/freezing.py)."""

    list_display = ["reason", "environment", "start_cron", "end_cron", "timezone", "starts_at", "ends_at"]
    readonly_fields = [f.name for f in FreezeWindow._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class SideAdmin(admin.ModelAdmin):
    """A function's side row, read-only like the function itself (the portal's pages edit it,
    validated and audited); made with its function, never added or deleted on its own. The
    sealed tokens and keys show only whether they are set."""

    sealed: tuple[str, ...] = ()  # shown only as set or not
    shown: tuple[str, ...] = ()  # what the subclass shows its own way instead of an excluded field
    list_display = ["function"]
    search_fields = ["function__name"]

    def get_readonly_fields(self, request, obj=None):
        hidden = set(self.exclude or ())
        return [f.name for f in self.model._meta.fields if f.name not in hidden] + [
            *self.shown, *(["sealed_set"] if self.sealed else [])]

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="secrets set")
    def sealed_set(self, side) -> str:
        return ", ".join(name for name in self.sealed if getattr(side, name)) or "none"


@admin.register(HookKeys)
class HookKeysAdmin(SideAdmin):
    sealed = ("webhook_secret_hash", "webhook_signing_key")
    exclude = [*sealed]


@admin.register(SourceAccess)
class SourceAccessAdmin(SideAdmin):
    sealed = ("source_secret",)
    exclude = [*sealed]
    list_display = ["function", "source_auth", "reconcile_outcome", "reconcile_checked_at"]


@admin.register(FeedbackSettings)
class FeedbackSettingsAdmin(SideAdmin):
    sealed = ("gitlab_status_token", "notify_webhook_secret")
    exclude = [*sealed, "notify_members"]
    shown = ("members_notified",)
    list_display = ["function", "gitlab_api_url", "gitlab_project", "notify_webhook_url"]

    @admin.display(description="members to notify")
    def members_notified(self, settings: FeedbackSettings) -> str:
        return ", ".join(settings.notify_members.order_by("username").values_list("username", flat=True)) or "none"


@admin.register(DriftState)
class DriftStateAdmin(SideAdmin):
    """The recorded Lambda states show secret variables masked, as on the function's admin page."""

    exclude = [*SHOWN_MASKED_DRIFT]
    shown = ("expected_state_masked", "drift_observed_masked")
    list_display = ["environment", "drift_detected_at", "drift_checked_at"]
    search_fields = ["environment__function__name"]

    @admin.display(description="expected state")
    def expected_state_masked(self, state: DriftState) -> str:
        return _drift_shown(state, "expected_state")

    @admin.display(description="drift observed")
    def drift_observed_masked(self, state: DriftState) -> str:
        return _drift_shown(state, "drift_observed")


@admin.register(Environment)
class EnvironmentAdmin(admin.ModelAdmin):
    """Read-only, as a function is (its settings are edited on the portal's page); the
    variables show secret values masked."""

    list_display = ["function", "name", "position", "lambda_name", "alias", "paused_reason"]
    search_fields = ["function__name", "lambda_name"]
    exclude = [*SHOWN_MASKED]
    readonly_fields = [f.name for f in Environment._meta.fields if f.name not in SHOWN_MASKED] + ["variables_masked"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="variables")
    def variables_masked(self, environment: Environment) -> str:
        return _shown(environment.function, environment.masked_variables())
