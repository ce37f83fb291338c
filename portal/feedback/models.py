"""Each attempt to deliver a notification, for the function's page and for retries.
"""

from __future__ import annotations

from django.db import models

from portal.deployments import Deployment
from portal.functions import Function


class NotificationAttempt(models.Model):
    """One outgoing request (or email) Slipway made to tell someone something: a commit
    status posted to GitLab, a notification webhook, an email. Every attempt is kept,
    failed ones with why; none of them ever changes the deployment it is about."""

    class Channel(models.TextChoices):
        GITLAB = "gitlab", "GitLab commit status"
        WEBHOOK = "webhook", "Webhook"
        EMAIL = "email", "Email"

    class Outcome(models.TextChoices):
        OK = "ok"
        FAILED = "failed"

    function = models.ForeignKey(Function, on_delete=models.CASCADE, related_name="notification_attempts")
    deployment = models.ForeignKey(Deployment, on_delete=models.SET_NULL, null=True, blank=True,
                                   related_name="notification_attempts")
    channel = models.CharField(max_length=10, choices=Channel.choices)
    event = models.CharField(max_length=20, help_text="The commit status state, or the notification's event.")
    attempt = models.PositiveSmallIntegerField(default=1)
    outcome = models.CharField(max_length=10, choices=Outcome.choices)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    target = models.CharField(max_length=500, blank=True, help_text="Where it went (host and path, or addresses).")
    detail = models.CharField(max_length=500, blank=True)
    took_ms = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["function", "-created_at"], name="notification_log")]

    def __str__(self) -> str:
        return f"{self.function} {self.channel} {self.event} #{self.attempt} {self.outcome}"
