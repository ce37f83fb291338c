"""How Slipway reads a function's repository: the credentials git uses, and what the
last check for missed pushes found. One row per function (created with it).

The function is named by its app label ("portal.Function"), not imported: the
sources package sits below the functions package.
"""

from __future__ import annotations

from django.db import models

from portal.sources.access import SourceAuth


class SourceAccess(models.Model):
    """A function's repository access: public, a deploy token, or an SSH deploy key."""

    function = models.OneToOneField("portal.Function", on_delete=models.CASCADE, primary_key=True,
                                    related_name="source_access")
    source_auth = models.CharField(max_length=10, choices=SourceAuth.choices, default=SourceAuth.NONE)
    source_username = models.CharField(max_length=255, blank=True, help_text="The deploy token's username.")
    # The deploy token or the deploy key's private key, Fernet-encrypted (portal.core.crypto); write-only.
    source_secret = models.TextField(blank=True, editable=False)
    source_known_hosts = models.TextField(blank=True, help_text="known_hosts line(s) pinning the git host's key.")
    # The last check for missed pushes (button or periodic task), shown on the function page:
    # a wrong token nobody clicks the button for must not stay invisible.
    reconcile_checked_at = models.DateTimeField(null=True, blank=True, editable=False)
    reconcile_outcome = models.CharField(max_length=20, blank=True, editable=False)
    reconcile_message = models.CharField(max_length=300, blank=True, editable=False)

    class Meta:
        verbose_name_plural = "source access"

    def __str__(self) -> str:
        return f"{self.function_id}: {self.source_auth}"
