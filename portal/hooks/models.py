"""The webhook delivery log, the ring that keeps refused deliveries at a bounded
cost, and the signatures already seen.
"""

from __future__ import annotations

from django.conf import settings
from django.db import connection, models

from portal.deployments import Deployment, Preview
from portal.functions import Function


class WebhookDelivery(models.Model):
    """Every webhook delivery as received, with what Slipway did about it.

    Exactly once: a delivery that requested a deployment claims its dedupe key
    (GitLab's Idempotency-Key, which a manual "Resend" repeats; X-Gitlab-Event-UUID
    from older GitLab) through a partial unique constraint, so of ten identical
    deliveries arriving together one deploys and nine are logged as duplicates."""

    class Outcome(models.TextChoices):
        ACCEPTED = "accepted"  # a deployment was requested
        STALE = "stale"  # accepted, then skipped by the worker: an older commit than one live or queued
        IGNORED = "ignored"  # authenticated, nothing to deploy (another branch, a deletion, another event)
        PAUSED = "paused"  # would have deployed; auto-deploy is paused
        DUPLICATE = "duplicate"  # its key was already accepted
        REJECTED = "rejected"  # not authenticated, too large or malformed

    # The outcomes that hold a dedupe key: a stale delivery still did its one deployment.
    CLAIMS_KEY = (Outcome.ACCEPTED, Outcome.STALE)
    AUTHENTICATED = (Outcome.ACCEPTED, Outcome.STALE, Outcome.IGNORED, Outcome.PAUSED, Outcome.DUPLICATE)

    function = models.ForeignKey(Function, on_delete=models.SET_NULL, null=True, blank=True,
                                 related_name="webhook_deliveries")
    event_uuid = models.CharField(max_length=64, blank=True, db_index=True, help_text="X-Gitlab-Event-UUID")
    webhook_uuid = models.CharField(max_length=64, blank=True, help_text="X-Gitlab-Webhook-UUID: this request")
    dedupe_key = models.CharField(max_length=128, blank=True,
                                  help_text="Idempotency-Key, else X-Gitlab-Event-UUID; empty for replays.")
    event_type = models.CharField(max_length=64, blank=True)
    headers = models.JSONField(default=dict, help_text="As received, without the token.")
    body = models.TextField(blank=True, help_text="As received; only the start of it for a rejected delivery.")
    body_bytes = models.PositiveIntegerField(default=0, help_text="The size of the body as received.")
    outcome = models.CharField(max_length=10, choices=Outcome.choices)
    detail = models.CharField(max_length=500, blank=True)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True, help_text="What Slipway answered.")
    deployment = models.ForeignKey(Deployment, on_delete=models.SET_NULL, null=True, blank=True)
    # A merge request event: the preview it opened, moved, closed or left waiting for approval.
    preview = models.ForeignKey(Preview, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    duplicate_of = models.ForeignKey("self", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    replay_of = models.ForeignKey("self", on_delete=models.SET_NULL, null=True, blank=True, related_name="replays")
    replayed_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                                    related_name="+")
    took_ms = models.FloatField(null=True, blank=True, help_text="From the request's arrival to its answer.")
    received_at = models.DateTimeField(auto_now_add=True, db_index=True)
    # A refused delivery (not authenticated, too large, no length) fills a slot of a bounded ring
    # instead of adding a row: see DeliveryRing. Empty for everything else.
    ring = models.ForeignKey("DeliveryRing", on_delete=models.CASCADE, null=True, blank=True, related_name="+")
    ring_slot = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-received_at", "-pk"]
        verbose_name_plural = "webhook deliveries"
        indexes = [models.Index(fields=["function", "-received_at"], name="delivery_log")]
        constraints = [models.UniqueConstraint(
            fields=["function", "dedupe_key"],
            condition=models.Q(outcome__in=["accepted", "stale"]) & ~models.Q(dedupe_key=""),
            name="one_accepted_delivery_per_key"),
            # Unconditional (NULLs are distinct), so that the slot's upsert can name it in ON CONFLICT.
            models.UniqueConstraint(fields=["ring", "ring_slot"], name="one_delivery_per_ring_slot")]

    def __str__(self) -> str:
        return f"{self.event_type or 'webhook'} {self.outcome} at {self.received_at:%Y-%m-%d %H:%M:%S}"

    @property
    def authenticated(self) -> bool:
        return self.outcome in self.AUTHENTICATED

    @classmethod
    def mark_stale(cls, deployment_id: int, message: str) -> int:
        """The worker skipped this delivery's deployment as stale: the log says so."""
        return cls.objects.filter(deployment_id=deployment_id, outcome=cls.Outcome.ACCEPTED).update(
            outcome=cls.Outcome.STALE, detail=message[:500])


class DeliveryRing(models.Model):
    """Where refused deliveries are kept: a ring of SLIPWAY_WEBHOOK_REJECTED_KEPT slots per
    function, and one ring for every name that is no function (owner 0), so that anyone
    may knock without growing the database, and a known name costs the same queries as an
    unknown one. `rejected` counts every refusal ever written to the ring: the log says how
    many more there were than it keeps."""

    UNKNOWN = 0  # the owner of the ring for names that are no function

    owner = models.PositiveBigIntegerField(unique=True, help_text="The function's primary key; 0 for unknown names.")
    rejected = models.PositiveBigIntegerField(default=0)

    def __str__(self) -> str:
        return f"ring of {'unknown names' if self.owner == self.UNKNOWN else f'function #{self.owner}'}"

    @classmethod
    def count_one(cls, owner: int) -> tuple[int, int]:
        """Count one more refusal for `owner`'s ring, creating the ring on the first: (ring pk, count).
        One statement (an upsert that returns the new count), so concurrent refusals get distinct
        counts, hence distinct slots, and the path is the same whether the ring exists or not."""
        table = connection.ops.quote_name(cls._meta.db_table)
        with connection.cursor() as cursor:
            cursor.execute(f'INSERT INTO {table} ("owner", "rejected") VALUES (%s, 1) ON CONFLICT ("owner") '
                           f'DO UPDATE SET "rejected" = {table}."rejected" + 1 RETURNING "id", "rejected"', [owner])
            return cursor.fetchone()


class SeenSignature(models.Model):
    """A signed delivery's (webhook-id, webhook-timestamp), claimed before it is processed: the
    same pair again is a replay, whatever the first one's outcome. GitLab's own resend signs
    the id again with a new timestamp, so it is a new pair. Kept while a delivery with that
    timestamp could still pass the signature window (up to 300 s old or ahead), then pruned."""

    KEPT_S = 900  # twice the window either way, with room for clocks that differ between web hosts

    function = models.ForeignKey(Function, on_delete=models.CASCADE, related_name="+")
    webhook_id = models.CharField(max_length=128)
    timestamp = models.BigIntegerField(db_index=True, help_text="webhook-timestamp, Unix seconds.")
    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["function", "webhook_id", "timestamp"],
                                               name="one_sighting_per_signature")]

    @classmethod
    def prune(cls, now: float, batch: int = 200) -> int:
        """Delete at most `batch` sightings whose timestamp no signature check would accept any
        more. Safe beside concurrent prunes and claims: it only deletes, and only the expired."""
        expired = cls.objects.filter(timestamp__lt=int(now) - cls.KEPT_S).order_by("timestamp").values("pk")[:batch]
        return cls.objects.filter(pk__in=expired).delete()[0]  # one DELETE … WHERE id IN (SELECT … LIMIT)


class HookKeys(models.Model):
    """A function's GitLab webhook tokens. One row per function (created with it)."""

    function = models.OneToOneField(Function, on_delete=models.CASCADE, primary_key=True, related_name="hook_keys")
    # GitLab's secret token (X-Gitlab-Token), as SHA-256: it only has to be compared.
    webhook_secret_hash = models.CharField(max_length=128, blank=True, editable=False)
    # GitLab's signing token (whsec_…), Fernet-encrypted (portal.core.crypto): verifying needs the key itself.
    webhook_signing_key = models.TextField(blank=True, editable=False)

    class Meta:
        verbose_name_plural = "hook keys"

    def __str__(self) -> str:
        return f"{self.function_id}"

    @property
    def configured(self) -> bool:
        """A secret token or a signing token is set: without one, every delivery is refused."""
        return bool(self.webhook_secret_hash or self.webhook_signing_key)
