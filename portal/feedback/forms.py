"""The feedback settings form: GitLab project and token, notification webhook and members.
"""

from __future__ import annotations

import re

from django import forms
from django.contrib.auth import get_user_model

from portal.feedback.models import FeedbackSettings
from portal.sources import url_host

GITLAB_PROJECT = re.compile(r"^(?:\d{1,12}|[A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)+)$")


GITLAB_TOKEN = re.compile(r"^[A-Za-z0-9_.:-]{8,255}$")


class FeedbackForm(forms.ModelForm):
    """Where a function reports: its GitLab project (commit statuses, with a project
    access token that is write-only: empty keeps the stored one) and its notifications
    (a webhook URL, members to email)."""

    gitlab_token = forms.CharField(
        label="GitLab project access token", required=False, strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="A project access token with the api scope (Developer role or above). Never shown again; "
                  "leave empty to keep the one stored.")
    remove_gitlab_token = forms.BooleanField(label="Remove the stored token", required=False)

    class Meta:
        model = FeedbackSettings
        fields = ["gitlab_api_url", "gitlab_project", "notify_webhook_url", "notify_members"]
        widgets = {"notify_members": forms.CheckboxSelectMultiple}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        members = get_user_model().objects.filter(memberships__function_id=self.instance.function_id, is_active=True)
        self.fields["notify_members"].queryset = members.order_by("username")
        self.fields["notify_members"].label_from_instance = (
            lambda user: f"{user.get_username()} ({user.email or 'no email address'})")

    def _url(self, field: str, what: str, base: bool = False) -> str:
        from portal.feedback import status as feedback

        try:
            return feedback.validate_outgoing_url(self.cleaned_data.get(field, ""), what, base=base)
        except feedback.BadURL as exc:
            raise forms.ValidationError(str(exc)) from None

    def clean_gitlab_api_url(self):
        return self._url("gitlab_api_url", "The GitLab URL", base=True)

    def clean_notify_webhook_url(self):
        return self._url("notify_webhook_url", "The webhook URL")

    def clean_gitlab_project(self):
        value = self.cleaned_data.get("gitlab_project", "").strip().strip("/")
        if value and (not GITLAB_PROJECT.match(value) or any(part in (".", "..") for part in value.split("/"))):
            raise forms.ValidationError("a numeric project id, or the project's path such as group/project")
        return value

    def clean_gitlab_token(self):
        value = self.cleaned_data.get("gitlab_token", "")
        if value and not GITLAB_TOKEN.match(value):
            raise forms.ValidationError("not a GitLab token: 8 to 255 letters, digits and - _ . :")
        return value

    def clean(self):
        data = super().clean()
        self._clean_token_host(data)
        token_after = bool(data.get("gitlab_token")) or (bool(self.instance.gitlab_status_token)
                                                         and not data.get("remove_gitlab_token"))
        parts = {"gitlab_api_url": bool(data.get("gitlab_api_url")), "gitlab_project": bool(data.get("gitlab_project")),
                 "gitlab_token": token_after}
        if any(parts.values()) and not all(parts.values()) and not self.errors:
            missing = {"gitlab_api_url": "the GitLab URL", "gitlab_project": "the project",
                       "gitlab_token": "a project access token"}
            self.add_error(None, "commit statuses need the GitLab URL, the project and a token: "
                           + ", ".join(missing[k] for k, v in parts.items() if not v) + " missing")
        return data

    def _clean_token_host(self, data: dict) -> None:
        """The rule repository credentials follow: a stored token is only sent to the host it
        was set for. A URL on another host needs the token again (or its removal)."""
        stored, url = self.instance, data.get("gitlab_api_url")
        if not stored.gitlab_status_token or not url or data.get("gitlab_token") or data.get("remove_gitlab_token"):
            return  # nothing stored, a URL error or none (said elsewhere), or a new token or none at all
        if url_host(url) != url_host(stored.gitlab_api_url):
            self.add_error("gitlab_token", f"the GitLab URL moved to another host ({url_host(url)}): "
                                           "enter the token again, or remove it (a stored one is only sent where "
                                           "it was set for)")
