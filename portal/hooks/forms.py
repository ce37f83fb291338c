"""Which webhook token to make or remove.
"""

from __future__ import annotations

from django import forms


class WebhookTokenForm(forms.Form):
    """Generate (or rotate) a webhook token, or remove it."""

    action = forms.ChoiceField(choices=[("generate", "Generate"), ("remove", "Remove")])
