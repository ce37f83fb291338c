"""Rows for previews as intake leaves them: a function's preview environment with its policy, an
open Preview for a merge request, and a queued preview deployment of its head."""

from __future__ import annotations

from portal.functions.models import PREVIEW_POSITION
from portal.models import Deployment, Environment, Preview, PreviewPolicy
from tests.conftest import add_environment


def preview_environment(function, lambda_name: str = "", **policy) -> Environment:
    lambda_name = lambda_name or f"{function.first_environment.lambda_name}-preview"
    environment = add_environment(function, "preview", lambda_name, PREVIEW_POSITION, preview=True,
                                  execution_role_arn="arn:aws:iam::000000000000:role/slipway-preview")
    PreviewPolicy.objects.create(environment=environment, **policy)
    return environment


def open_preview(environment: Environment, iid: int, sha: str, **fields) -> Preview:
    fields.setdefault("source_branch", f"feature-{iid}")
    return Preview.objects.create(function=environment.function, environment=environment, mr_iid=iid,
                                  head_sha=sha, target_branch=environment.function.branch, **fields)


def queued(preview: Preview, sha: str = "", **fields) -> Deployment:
    return Deployment.objects.create(function=preview.function, environment=preview.environment, preview=preview,
                                     kind=Deployment.Kind.PREVIEW, trigger=Deployment.Trigger.WEBHOOK,
                                     commit_sha=sha or preview.head_sha, ref=preview.source_branch, **fields)
