"""The user's own API tokens: create (shown once), list, revoke."""

from __future__ import annotations

from datetime import timedelta

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models.functions import Now
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from portal.functions import access
from portal.models import ApiToken, AuditEvent


class TokenForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="What uses it, e.g. “gitlab-ci detector”.")
    expires_in_days = forms.IntegerField(required=False, min_value=1, max_value=3650, label="Expires in (days)",
                                         help_text="Empty: never expires.")
    function = forms.ChoiceField(required=False, label="Only this function",
                                 help_text="Empty: every function you may see.")
    deploy_only = forms.BooleanField(required=False, label="Deploy only",
                                     help_text="Trigger, read and follow deployments; nothing else.")

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.visible = {f.name: f for f in access.visible_functions(user).filter(archived_at__isnull=True)}
        self.fields["function"].choices = [("", "—")] + [(name, name) for name in sorted(self.visible)]

    def clean_function(self):
        name = self.cleaned_data["function"]
        return self.visible[name] if name else None


@require_http_methods(["GET", "POST"])
@login_required
def tokens(request):
    form = TokenForm(request.POST or None, user=request.user)
    raw = ""
    if request.method == "POST" and form.is_valid():
        days = form.cleaned_data["expires_in_days"]
        token, raw = ApiToken.issue(request.user, form.cleaned_data["name"], function=form.cleaned_data["function"],
                                    deploy_only=form.cleaned_data["deploy_only"],
                                    expires_at=timezone.now() + timedelta(days=days) if days else None)
        AuditEvent.record("token.created", actor=request.user, function=token.function, token=token.name,
                          hint=token.hint, deploy_only=token.deploy_only)
        form = TokenForm(user=request.user)
    mine = ApiToken.objects.filter(user=request.user).select_related("function")
    return render(request, "portal/tokens.html", {"form": form, "tokens": mine, "raw": raw},
                  status=400 if form.errors else 200)


@require_POST
@login_required
def token_revoke(request, pk):
    token = get_object_or_404(ApiToken, pk=pk, user=request.user)
    if ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=Now()):
        AuditEvent.record("token.revoked", actor=request.user, function=token.function, token=token.name,
                          hint=token.hint)
        messages.success(request, f"Token {token.name!r} revoked.")
    return redirect("portal-tokens")
