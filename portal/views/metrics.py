"""`/metrics` in Prometheus's text format, read from the database at scrape time.

Workers are other processes, often on other hosts: their figures are in the
rows they write, so the web process that is scraped reads them there instead
of keeping in-process counters that would only see its own requests.
"""

from __future__ import annotations

import ipaddress

from django.conf import settings
from django.db import connection
from django.db.models import Count, F, FloatField, Min, Q, Sum
from django.db.models.functions import Cast, Extract
from django.http import HttpResponse
from django.utils import timezone
from django.utils.crypto import constant_time_compare
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import CollectorRegistry

from portal.deployments import rollout_summary
from portal.models import (
    ConsoleRun,
    DeliveryRing,
    Deployment,
    DeploymentStep,
    Environment,
    Preview,
    Rollout,
    WebhookDelivery,
)

ROLLOUT_STATES = ("idle", "rolling_out", "paused", "promoting", "aborting")
STEP_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
QUEUES = {"deploys": ~Q(kind=Deployment.Kind.ROLLBACK), "rollbacks": Q(kind=Deployment.Kind.ROLLBACK)}


class DatabaseCollector:
    """Everything below is computed from rows, by a handful of aggregate queries."""

    def collect(self):
        deployments = CounterMetricFamily("slipway_deployments", "Deployments that ended, by function, environment, "
                                          "kind, outcome and error code",
                                          labels=["function", "environment", "kind", "status", "error_code"])
        ended = (Deployment.objects.filter(status__in=Deployment.TERMINAL)
                 .values("function__name", "environment__name", "kind", "status", "error_code")
                 .annotate(n=Count("pk")).order_by())
        for row in ended:
            deployments.add_metric([row["function__name"], row["environment__name"], row["kind"], row["status"],
                                    row["error_code"]], row["n"])
        yield deployments
        yield self._soaking()
        yield from self._rollouts()
        yield from self._previews()

        running = GaugeMetricFamily("slipway_deployments_running", "Deployments running, by step",
                                    labels=["status"])
        for row in (Deployment.objects.filter(status__in=Deployment.RUNNING).values("status")
                    .annotate(n=Count("pk")).order_by()):
            running.add_metric([row["status"]], row["n"])
        yield running

        depth = GaugeMetricFamily("slipway_queue_depth", "Queued deployments per queue", labels=["queue"])
        oldest = GaugeMetricFamily("slipway_queue_oldest_age_seconds", "Age of the oldest queued deployment",
                                   labels=["queue"])
        now = timezone.now()
        for queue, condition in QUEUES.items():
            found = Deployment.objects.filter(condition, status=Deployment.Status.QUEUED).aggregate(
                n=Count("pk"), first=Min("created_at"))
            depth.add_metric([queue], found["n"])
            oldest.add_metric([queue], (now - found["first"]).total_seconds() if found["first"] else 0)
        yield depth
        yield oldest

        yield self._step_histogram()

        deliveries = CounterMetricFamily("slipway_webhook_deliveries", "Webhook deliveries by outcome",
                                         labels=["outcome"])
        counts = dict(WebhookDelivery.objects.filter(ring=None).values_list("outcome").annotate(n=Count("pk"))
                      .order_by())
        # Refusals kept in rings are overwritten: each ring counts them all instead.
        rejected = DeliveryRing.objects.aggregate(n=Sum("rejected"))["n"]
        if rejected:
            counts[WebhookDelivery.Outcome.REJECTED] = counts.get(WebhookDelivery.Outcome.REJECTED, 0) + rejected
        for outcome, n in counts.items():
            deliveries.add_metric([outcome], n)
        yield deliveries

        invokes = CounterMetricFamily("slipway_console_invokes", "Test console invokes by outcome",
                                      labels=["outcome"])
        for row in ConsoleRun.objects.values("outcome").annotate(n=Count("pk")).order_by():
            invokes.add_metric([row["outcome"]], row["n"])
        yield invokes

    def _soaking(self):
        """Promotions waiting out a soak, per function and environment; 0 for every environment
        that promotes automatically, so an alert on a soak that never ends has a series to watch."""
        soaking = GaugeMetricFamily("slipway_promotions_soaking", "Promotions waiting out their soak time, by "
                                    "function and environment", labels=["function", "environment"])
        counts = {(env["function__name"], env["name"]): 0 for env in
                  Environment.objects.filter(promotion=Environment.Promotion.AUTOMATIC, function__archived_at=None)
                  .values("function__name", "name")}
        for row in (Deployment.objects.filter(status=Deployment.Status.SOAKING)
                    .values("function__name", "environment__name").annotate(n=Count("pk")).order_by()):
            counts[(row["function__name"], row["environment__name"])] = row["n"]
        for (function, environment), n in sorted(counts.items()):
            soaking.add_metric([function, environment], n)
        return soaking

    def _rollouts(self):
        """Per environment that rolls out (canary or linear) or holds a rollout now: its state
        (one series per state, 1 for the one it is in), the new version's weight, how late its
        next tick is; and the rollouts aborted, by signal ("alarm:<name>" counted as "alarm")."""
        state = GaugeMetricFamily("slipway_rollout_state", "Rollout state per environment (1: the state it is in)",
                                  labels=["function", "environment", "state"])
        weight = GaugeMetricFamily("slipway_rollout_weight", "The new version's share of the alias during a "
                                   "rollout (0-1; 0 when none runs)", labels=["function", "environment"])
        overdue = GaugeMetricFamily("slipway_rollout_tick_overdue_seconds", "How late a running rollout's next "
                                    "tick is (0 when on time, paused or none runs)", labels=["function", "environment"])
        now = timezone.now()
        shown = {(env["function__name"], env["name"]): None for env in
                 Environment.objects.filter(function__archived_at=None).exclude(
                     rollout_strategy=Environment.Strategy.ALL_AT_ONCE).values("function__name", "name")}
        for item in (Rollout.objects.filter(deployment__status__in=Deployment.ROLLOUT)
                     .select_related("deployment__function", "deployment__environment")):
            shown[(item.deployment.function.name, item.deployment.environment.name)] = item
        for (function, environment), item in sorted(shown.items()):
            now_in = rollout_summary.state(item) if item else "idle"
            for each in ROLLOUT_STATES:
                state.add_metric([function, environment, each], 1 if each == now_in else 0)
            weight.add_metric([function, environment], item.weight if item else 0.0)
            late = (now - item.next_tick_at).total_seconds() if item and item.next_tick_at and now_in in (
                "rolling_out", "promoting") else 0.0
            overdue.add_metric([function, environment], max(late, 0.0))
        yield state
        yield weight
        yield overdue
        aborts = CounterMetricFamily("slipway_rollout_aborts", "Rollouts aborted, by function, environment and "
                                     "signal (alarm, probe, manual, worker-lost, rollback, drift)",
                                     labels=["function", "environment", "signal"])
        counted: dict[tuple, int] = {}
        for row in (Rollout.objects.exclude(abort_signal="").values(
                "deployment__function__name", "deployment__environment__name", "abort_signal")
                .annotate(n=Count("pk")).order_by()):
            key = (row["deployment__function__name"], row["deployment__environment__name"],
                   row["abort_signal"].partition(":")[0])
            counted[key] = counted.get(key, 0) + row["n"]
        for labels, n in sorted(counted.items()):
            aborts.add_metric(list(labels), n)
        yield aborts

    def _previews(self):
        """Per function with previews on (0 included, so a series exists to alert on): the live
        previews (open, a version behind their alias: what the cap counts), and the fork heads
        waiting for a deployer's approval."""
        live = GaugeMetricFamily("slipway_previews_live", "Merge-request previews live (open, published), by "
                                 "function", labels=["function"])
        waiting = GaugeMetricFamily("slipway_previews_awaiting_approval", "Fork merge requests whose head waits "
                                    "for a deployer's approval, by function", labels=["function"])
        names = Environment.objects.filter(preview=True, function__archived_at=None).values_list("function__name",
                                                                                                flat=True)
        counts = {name: [0, 0] for name in names}
        for name, version, fork, head, approved in (
                Preview.objects.filter(state=Preview.State.OPEN, function__archived_at=None)
                .values_list("function__name", "version", "fork", "head_sha", "approved_sha")):
            found = counts.setdefault(name, [0, 0])
            found[0] += bool(version)
            found[1] += fork and bool(head) and head != approved
        for name, (n_live, n_waiting) in sorted(counts.items()):
            live.add_metric([name], n_live)
            waiting.add_metric([name], n_waiting)
        yield live
        yield waiting

    def _step_histogram(self):
        histogram = HistogramMetricFamily("slipway_step_duration_seconds", "Pipeline step durations",
                                          labels=["step"])
        took = F("finished_at") - F("started_at")
        buckets = {f"le_{i}": Count("pk", filter=Q(seconds__lte=bound)) for i, bound in enumerate(STEP_BUCKETS)}
        rows = (DeploymentStep.objects.filter(finished_at__isnull=False, status=DeploymentStep.Status.SUCCEEDED)
                .annotate(seconds=_seconds(took)).values("name")
                .annotate(n=Count("pk"), total=_sum_seconds(took), **buckets).order_by())
        for row in rows:
            cumulative = [(str(float(bound)), row[f"le_{i}"]) for i, bound in enumerate(STEP_BUCKETS)]
            histogram.add_metric([row["name"]], cumulative + [("+Inf", row["n"])], row["total"] or 0.0)
        return histogram


def _seconds(expression):
    if connection.vendor == "postgresql":
        return Extract(expression, "epoch")
    return Cast(expression, FloatField()) / 1_000_000  # SQLite gives a duration in microseconds


def _sum_seconds(expression):
    return Sum(_seconds(expression))


def _allowed(request) -> bool:
    token = settings.SLIPWAY_METRICS_TOKEN
    header = request.headers.get("Authorization", "")
    if token and header.startswith("Bearer ") and constant_time_compare(header[len("Bearer "):], token):
        return True
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    if settings.SLIPWAY_BEHIND_TLS_PROXY and address.is_loopback:
        return False  # a proxy on this host connects from loopback for every caller: the token only
    return any(address in network for network in settings.SLIPWAY_METRICS_NETWORKS)


@require_GET
@never_cache
def metrics(request):
    """Open to a bearer token (SLIPWAY_METRICS_TOKEN) or to the networks in SLIPWAY_METRICS_NETWORKS."""
    if not _allowed(request):
        return HttpResponse("metrics need the metrics token or a configured network\n", status=403,
                            content_type="text/plain")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)

