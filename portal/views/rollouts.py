"""A rollout on the pages: its part of the deployment page (the timeline of weights and the
chart of the weight over time) and its manual control (promote now, pause, resume, abort:
deployers, plain POST forms with CSRF). The control is rollout_summary.control, the one
the API calls; a refusal (`rollout-not-running`) is shown as a message.
"""

from __future__ import annotations

from itertools import groupby

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.http import require_POST

from deploy.errors import SlipwayError
from portal.deployments import rollout_summary
from portal.functions import access
from portal.models import Deployment
from portal.views import charts

DONE = {"promote": "Promoted: the next tick moves the whole alias to version {new}.",
        "pause": "Paused at {weight:.0%} on version {new}; the signals are still watched.",
        "resume": "Resumed.",
        "abort": "Aborting: the alias goes back to version {stable}, routing cleared."}


def context(deployment: Deployment) -> dict | None:
    """What the deployment page shows of its rollout; None when it had none."""
    item = rollout_summary.of(deployment)
    if item is None:
        return None
    shown = rollout_summary.summary(item)
    points = rollout_summary.weight_series(item)
    shares = " → ".join(share for share, _ in groupby(f"{p.weight:.0%}" for p in points))  # 0 → 10 → 0: aborted
    desc = (f"Version {item.new_version}'s share of the alias over time, from {points[0].at:%H:%M:%S} to "
            f"{points[-1].at:%H:%M:%S} UTC: {shares}; now {item.weight:.0%} ({shown['state'].replace('_', ' ')}).")
    return {**shown, "chart": charts.weight_chart(points, title=f"Rollout of version {item.new_version}: weight "
                                                               "over time", desc=desc)}


@require_POST
@login_required
def rollout_control(request, pk, action):
    deployment = Deployment.objects.select_related("function").filter(pk=pk).first()
    if deployment is None:
        raise Http404("no such deployment")
    access.function_for(request.user, deployment.function.name, access.DEPLOY)  # 404 or 403 as for its function
    try:
        rollout_summary.control(deployment, action, request.user)
    except SlipwayError as exc:
        messages.error(request, exc.message)
    else:
        item = deployment.rollout
        messages.success(request, DONE[action].format(new=item.new_version, stable=item.stable_version,
                                                      weight=item.weight))
    if request.POST.get("back") == "function":
        return redirect(reverse("portal-function", args=[deployment.function.name]) + "#environments")
    return redirect("portal-deployment", pk=deployment.pk)
