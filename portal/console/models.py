"""What the console keeps: the images sent, each run's answer, and the golden
cases a deploy must pass.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from portal.functions import Environment, Function


class ConsoleImage(models.Model):
    """An image sent from the console, stored once per function and content. Kept in
    the database (web and workers may run on different hosts, neither keeps files);
    removed by the retention task once no golden case uses it and no run used it lately."""

    function = models.ForeignKey(Function, on_delete=models.CASCADE, related_name="console_images")
    sha256 = models.CharField(max_length=64)
    data = models.BinaryField()
    format = models.CharField(max_length=8, help_text="jpeg, png, webp or bmp, as read from its header")
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    size_bytes = models.PositiveIntegerField()
    name = models.CharField(max_length=200, blank=True, help_text="The uploaded file's name or the sample's.")
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["function", "sha256"], name="one_console_image_per_content")]

    def __str__(self) -> str:
        return f"{self.function} {self.name or self.sha256[:12]} {self.width}x{self.height}"

    CONTENT_TYPES = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp", "bmp": "image/bmp"}

    @property
    def content_type(self) -> str:
        return self.CONTENT_TYPES[self.format]

    @classmethod
    def forget_unused(cls, before) -> int:
        """Delete images last used before `before` that no golden case holds; runs keep
        their results without the image. Returns how many were deleted."""
        stale = cls.objects.filter(last_used_at__lt=before, golden_cases__isnull=True)
        return stale.delete()[1].get(cls._meta.label, 0)


class ConsoleRun(models.Model):
    """One invoke from the console: who sent what to which target, and what came back.
    Stored only once the function answered (an answer that is an error included)."""

    class Outcome(models.TextChoices):
        OK = "ok", "Boxes"
        ERROR_RESULT = "error_result", "Error answer"
        FUNCTION_ERROR = "function_error", "Function error"
        TIMEOUT = "timeout", "Timed out"
        UNEXPECTED = "unexpected", "Not a detector answer"

    function = models.ForeignKey(Function, on_delete=models.CASCADE, related_name="console_runs")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True)
    # The environment whose Lambda answered: a version number means nothing without it.
    environment = models.ForeignKey(Environment, on_delete=models.SET_NULL, null=True, blank=True,
                                    related_name="console_runs")
    image = models.ForeignKey(ConsoleImage, on_delete=models.SET_NULL, null=True, blank=True, related_name="runs")
    image_name = models.CharField(max_length=200, blank=True)
    image_width = models.PositiveIntegerField(default=0)
    image_height = models.PositiveIntegerField(default=0)
    target = models.CharField(max_length=128, help_text="What was asked for: the alias or a version number.")
    executed_version = models.CharField(max_length=20, blank=True, help_text="What Lambda says ran.")
    options = models.JSONField(default=dict, blank=True)
    request = models.JSONField(default=dict, blank=True, help_text="The event as sent, without the image bytes.")
    via_s3 = models.BooleanField(default=False)
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    result = models.JSONField(null=True, blank=True, help_text="The function's answer, decoded.")
    error_code = models.CharField(max_length=100, blank=True)
    error_message = models.TextField(blank=True)
    box_count = models.PositiveIntegerField(null=True, blank=True)
    round_trip_ms = models.FloatField()
    init_ms = models.FloatField(null=True, blank=True)
    duration_ms = models.FloatField(null=True, blank=True)
    billed_ms = models.FloatField(null=True, blank=True)
    memory_used_mb = models.PositiveIntegerField(null=True, blank=True)
    log_tail = models.TextField(blank=True)
    compared_with = models.OneToOneField("self", on_delete=models.SET_NULL, null=True, blank=True,
                                         related_name="compared_by", help_text="Compare mode: the other side.")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.function} console run #{self.pk} {self.target} {self.outcome}"

    @property
    def boxes(self) -> list[dict]:
        if self.outcome != self.Outcome.OK:
            return []
        return list(self.result.get("boxes") or [])

    @property
    def function_timings(self) -> dict:
        timings = (self.result or {}).get("timings_ms") if isinstance(self.result, dict) else None
        return timings if isinstance(timings, dict) else {}

    @property
    def partner(self) -> ConsoleRun | None:
        if self.compared_with_id:
            return self.compared_with
        return ConsoleRun.objects.filter(compared_with=self).first()


class GoldenCase(models.Model):
    """An image, its options and the boxes a release found on it, saved by an owner:
    every later deploy must find the same boxes before its alias moves."""

    function = models.ForeignKey(Function, on_delete=models.CASCADE, related_name="golden_cases")
    name = models.CharField(max_length=100)
    image = models.ForeignKey(ConsoleImage, on_delete=models.PROTECT, related_name="golden_cases")
    options = models.JSONField(default=dict, blank=True)
    boxes = models.JSONField(default=list, blank=True)
    saved_from = models.ForeignKey(ConsoleRun, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    version = models.CharField(max_length=20, blank=True, help_text="The version whose answer was saved.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "pk"]

    def __str__(self) -> str:
        return f"{self.function} golden case {self.name}"
