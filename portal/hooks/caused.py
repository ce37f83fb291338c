"""What a webhook delivery caused beyond its own deployment: the automatic promotions
that followed it downstream.

A push deploys to the first environment only; each automatic promotion names the
deployment that verified it upstream (Deployment.upstream). Following those links from
a delivery's deployment, environment by environment, gives the releases the push went
on to make: staging's deploy, then production's promotion, and so on. Manual
promotions are someone's own request, not the delivery's, and the chain stops at them.
"""

from __future__ import annotations

from portal.deployments import Deployment

# Each level is one environment further down; a function has a handful of them.
MAX_LEVELS = 20


def promotions_caused(deployment_ids) -> dict[int, list[Deployment]]:
    """{deployment id: the automatic promotions its upstream chain leads to, in promotion
    order} for each of `deployment_ids`: one query per environment level, whatever the
    number of deployments (a page of deliveries)."""
    caused: dict[int, list[Deployment]] = {pk: [] for pk in deployment_ids if pk}
    root_of = {pk: pk for pk in caused}
    for _ in range(MAX_LEVELS):
        if not root_of:
            break
        found = list(Deployment.objects.filter(upstream_id__in=list(root_of), trigger=Deployment.Trigger.PROMOTION,
                                               kind=Deployment.Kind.PROMOTION)
                     .select_related("environment").order_by("pk"))
        following = {}
        for promotion in found:
            root = root_of[promotion.upstream_id]
            caused[root].append(promotion)
            following[promotion.pk] = root
        root_of = following
    return caused
