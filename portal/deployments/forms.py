"""The deploy form: a ref or a commit.
"""

from __future__ import annotations

from django import forms

from deploy import source
from deploy.errors import UserError
from portal.functions import user_error


class DeployForm(forms.Form):
    ref = forms.CharField(max_length=200, label="Branch, tag or commit")

    def clean_ref(self):
        try:
            return source.validate_ref(self.cleaned_data["ref"].strip())
        except UserError as exc:
            raise user_error(exc) from None


class DecisionForm(forms.Form):
    """An approver's approval or rejection of a held deployment, with an optional comment."""

    comment = forms.CharField(max_length=500, required=False, label="Comment",
                              widget=forms.TextInput(attrs={"placeholder": "optional"}))

    def clean_comment(self):
        value = self.cleaned_data["comment"].strip()
        if "\x00" in value:
            raise forms.ValidationError("the comment must not contain NUL characters")
        return value
