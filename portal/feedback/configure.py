"""Changing a function's feedback settings, audited.
"""

from __future__ import annotations

from django.db import transaction

from portal.feedback.models import FeedbackSettings
from portal.functions import AuditEvent, Function, store_new_secret


def update_feedback(form, *, user) -> Function:
    """Save where a function reports (the form edits its FeedbackSettings). The GitLab
    token is encrypted (Fernet) and the audit log says only that it was set or removed."""
    from portal.core import crypto

    data = form.cleaned_data
    sealed = None
    if data.get("gitlab_token"):
        sealed = crypto.encrypt(data["gitlab_token"])  # crypto.Unavailable: a RequestRefused
    function = form.instance.function
    with transaction.atomic():
        Function.objects.select_for_update().get(pk=function.pk)
        before = FeedbackSettings.objects.select_for_update().get(function_id=function.pk)
        old_members = sorted(before.notify_members.values_list("username", flat=True))
        settings = form.save(commit=False)
        if sealed is not None:
            settings.gitlab_status_token = sealed
        elif data.get("remove_gitlab_token"):
            settings.gitlab_status_token = ""
        settings.save(update_fields=["gitlab_api_url", "gitlab_project", "notify_webhook_url", "gitlab_status_token"])
        form.save_m2m()
        changed = {field: getattr(settings, field) for field in ("gitlab_api_url", "gitlab_project",
                                                                 "notify_webhook_url")
                   if getattr(before, field) != getattr(settings, field)}
        if sealed is not None:
            changed["gitlab_token"] = "(set)"
        elif before.gitlab_status_token and not settings.gitlab_status_token:
            changed["gitlab_token"] = "(removed)"
        members = sorted(settings.notify_members.values_list("username", flat=True))
        if members != old_members:
            changed["notify_members"] = members
        if changed:
            AuditEvent.record("function.feedback_edited", function=function, actor=user, **changed)
    return function


def set_notify_webhook_secret(function: Function, *, user) -> str:
    """A new signing secret for the notification webhook (replacing any other at once),
    kept Fernet-encrypted; returned to be shown once."""
    from portal.feedback import status as feedback

    return store_new_secret(function, FeedbackSettings, "notify_webhook_secret", feedback.new_webhook_secret(),
                            user=user, audit="function.notify_secret")
