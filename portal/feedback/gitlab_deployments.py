"""GitLab sees Slipway's deployments: GitLab environments and deployments (the feedback queue's work).

Each environment of a function with GitLab feedback set is a GitLab environment named
`<environment>/<function>` (two functions of one project never share GitLab's `production`),
its `external_url` the environment's place on the function's page, its `tier` the
environment's gitlab_tier. It is looked up by name and created if missing, then
remembered on the environment (gitlab_environment_key); a changed name, tier or URL, or a
deployment that GitLab answers 404 for, looks it up again.

A Slipway deployment becomes one GitLab deployment: POST status=running when it enters its
first Lambda step (Deployment.enter_lambda: a deploy's or promotion's update, a rollback's
alias move — a rollback touches nothing else), then one PUT with its final status. Never
more than one final status: it is claimed on the row (gitlab_deployment_final, a
conditional UPDATE) before it is sent. One that ended before its Lambda steps sends
nothing; one whose POST never succeeded gets one POST with its final status at the end.

POST is not idempotent: after one that got no answer (a timeout), the environment's
deployments with that status are listed, newest first, and one with the same sha and ref
that no Slipway row stores (gitlab_deployment_id is unique) is adopted before posting again.

Every request is a NotificationAttempt (channel "deployment"), retried as commit statuses
are (delivery.with_attempts); nothing here ever changes a deployment's status. One task at a
time per deployment (gitlab_deployment_lease_until); the holder looks again when it is done.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from fnmatch import fnmatchcase

from django.conf import settings
from django.db import IntegrityError
from django.db.models import DateTimeField as DateTimeOutput
from django.db.models import ExpressionWrapper, Q
from django.db.models.functions import Now
from django.urls import reverse

from deploy import outbound
from portal import functions
from portal.core import crypto
from portal.deployments import Deployment
from portal.feedback import delivery
from portal.feedback import status as feedback
from portal.feedback.models import NotificationAttempt
from portal.functions import Environment

Status, Kind = Deployment.Status, Deployment.Kind
Channel = NotificationAttempt.Channel
RUNNING, SUCCESS, FAILED, CANCELED = "running", "success", "failed", "canceled"
FINAL = {Status.SUCCEEDED: SUCCESS, Status.FAILED: FAILED, Status.CANCELLED: CANCELED, Status.SUPERSEDED: CANCELED}
# The steps that touch the Lambda (portal/deployments/plan.py): a deployment with one recorded entered them.
LAMBDA_STEPS = ("update", "wait", "publish", "verify", "shift")
MAX_ROUNDS = 3
_SHA = re.compile(r"^[0-9a-f]{40}$")


def environment_name(environment: Environment) -> str:
    return f"{environment.name}/{environment.function.name}"


def external_url(environment: Environment) -> str:
    """The environment on the function's page (absolute; "" without SLIPWAY_BASE_URL)."""
    return feedback.absolute(reverse("portal-function", args=[environment.function.name])
                             + f"#environment-{environment.name}")


def is_tag(function, ref: str) -> bool:
    """A deployment's ref is a tag when it is neither the branch nor a SHA and matches the
    function's tag pattern (the only tags Slipway deploys by itself)."""
    return bool(ref and ref != function.branch and not _SHA.match(ref) and function.tag_pattern
                and fnmatchcase(ref, function.tag_pattern))


def ref_of(deployment: Deployment) -> tuple[str, bool]:
    """(ref, tag) for GitLab: the deployed tag, else the function's branch (GitLab answers 400 for
    a ref that is no branch or tag, so never a SHA). A promotion or a rollback asked for a SHA:
    the tag its commit was first deployed by upstream, if it was one."""
    function = deployment.function
    seen, row = set(), deployment
    while row is not None and row.pk not in seen:
        seen.add(row.pk)
        if is_tag(function, row.ref):
            return row.ref, True
        row = row.upstream
    return function.branch, False


def entered_lambda(deployment: Deployment) -> bool:
    if deployment.status in Deployment.TOUCHING_LAMBDA:
        return True
    return deployment.is_terminal and deployment.steps.filter(name__in=LAMBDA_STEPS).exists()


def wanted(deployment: Deployment) -> str:
    """What GitLab should have for the deployment: "" nothing (not configured, no commit, before its
    Lambda steps), running, or its final status. Never for a preview: GitLab's deployments are
    production's history (a preview's feedback is its MR note and optional commit status)."""
    if deployment.kind == Deployment.Kind.PREVIEW:
        return ""
    if not feedback.gitlab_configured(deployment.function) or not deployment.commit_sha:
        return ""
    if not entered_lambda(deployment):
        return ""
    return FINAL.get(deployment.status, RUNNING)


def report(deployment_id: int) -> str:
    """The task: bring GitLab's deployment up to the Slipway deployment's state, under the lease."""
    for _ in range(MAX_ROUNDS):
        deployment = (Deployment.objects.select_related("function", "environment", "upstream")
                      .filter(pk=deployment_id).first())
        if deployment is None:
            return "gone"
        state = wanted(deployment)
        if not state:
            return "nothing to report"
        if deployment.gitlab_deployment_final:
            return f"GitLab has {deployment.gitlab_deployment_final}"
        if state == RUNNING and deployment.gitlab_deployment_id:
            return "GitLab has running"
        until = ExpressionWrapper(Now() + timedelta(seconds=delivery.lease_seconds() * 3),
                                  output_field=DateTimeOutput())
        free = Q(gitlab_deployment_lease_until__isnull=True) | Q(gitlab_deployment_lease_until__lt=Now())
        if not Deployment.objects.filter(free, pk=deployment_id).update(gitlab_deployment_lease_until=until):
            return "busy: the lease holder looks again when it is done"
        try:
            deployment.refresh_from_db()
            state = wanted(deployment)
            if state and not deployment.gitlab_deployment_final:
                _Client(deployment).bring_to(state)
        finally:
            Deployment.objects.filter(pk=deployment_id).update(gitlab_deployment_lease_until=None)
        now = Deployment.objects.select_related("function").filter(pk=deployment_id).first()
        if now is None or now.gitlab_deployment_final or wanted(now) in ("", state):
            return state or "nothing to report"
    return "rounds used up"


class _Client:
    """The requests for one deployment, each recorded as an attempt."""

    def __init__(self, deployment: Deployment):
        self.deployment = deployment
        self.function = deployment.function
        self.environment = deployment.environment
        self.reports = self.function.feedback_settings
        self.secrets = functions.secret_values(self.function)
        self.options = {"timeout": settings.SLIPWAY_NOTIFY_TIMEOUT,
                        "allowed": settings.SLIPWAY_OUTBOUND_ALLOWED_NETWORKS}
        self.name = environment_name(self.environment)
        self.ref, self.tag = ref_of(deployment)

    def record(self, event: str, url: str):
        return delivery.recorder(self.function.pk, self.deployment.pk, Channel.DEPLOYMENT, event,
                                  outbound.where(url), self.secrets)

    def bring_to(self, state: str) -> bool:
        try:
            self.token = crypto.decrypt(self.reports.gitlab_status_token)
        except crypto.Unavailable as exc:
            self.record(state, self.reports.gitlab_api_url)(1, outbound.Answer(None, f"not sent: {exc}", 0.0))
            return False
        if not self.ensure_environment():
            return False
        if state == RUNNING:
            return self.post(RUNNING)
        # The one final status: claimed before it is sent, so no other task ever sends another.
        if not Deployment.objects.filter(pk=self.deployment.pk, gitlab_deployment_final="").update(
                gitlab_deployment_final=state):
            return False
        if self.deployment.gitlab_deployment_id is None and self.running_unanswered():
            self.adopt(RUNNING)  # the running POST that timed out may have made it: end that one
        if self.deployment.gitlab_deployment_id is None:
            return self.post(state)
        return self.put(state)

    def running_unanswered(self) -> bool:
        return NotificationAttempt.objects.filter(deployment_id=self.deployment.pk, channel=Channel.DEPLOYMENT,
                                                  event=RUNNING, status_code__isnull=True).exists()

    # --- The environment ------------------------------------------------------------------

    def environment_key(self) -> str:
        return " ".join((self.reports.gitlab_api_url, self.reports.gitlab_project, self.name,
                         self.environment.gitlab_tier, external_url(self.environment)))[:500]

    def ensure_environment(self) -> bool:
        """Looked up by name (and created if missing) unless remembered with the same key."""
        key = self.environment_key()
        if self.environment.gitlab_environment_key == key:
            return True
        api, project = self.reports.gitlab_api_url, self.reports.gitlab_project
        url = f"{outbound.project_url(api, project)}/environments"
        found = []
        ok = delivery.with_attempts(lambda: self._found(outbound.find_environments(
            api, project, self.token, self.name, **self.options), found), self.record("environment", url))
        if not ok:
            return False
        tier, link = self.environment.gitlab_tier or "other", external_url(self.environment)
        if found:
            current = found[0]
            if current.get("tier") != tier or (link and current.get("external_url") != link):
                ok = delivery.with_attempts(lambda: outbound.edit_environment(
                    api, project, self.token, current["id"], external_url=link, tier=tier, **self.options),
                    self.record("environment", f"{url}/{current['id']}"))
        else:
            ok = delivery.with_attempts(lambda: outbound.create_environment(
                api, project, self.token, name=self.name, external_url=link, tier=tier, **self.options),
                self.record("environment", url))
        if ok:
            Environment.objects.filter(pk=self.environment.pk).update(gitlab_environment_key=key)
        return ok

    def _found(self, answer: outbound.Answer, found: list) -> outbound.Answer:
        if answer.ok:
            found[:] = [env for env in _json_list(answer.body) if env.get("name") == self.name]
        return answer

    def forget_environment(self) -> None:
        Environment.objects.filter(pk=self.environment.pk).update(gitlab_environment_key="")

    # --- The deployment -------------------------------------------------------------------

    def post(self, state: str) -> bool:
        """POST the deployment; after an attempt that got no answer, adopt what GitLab made of it."""
        api, project = self.reports.gitlab_api_url, self.reports.gitlab_project
        url = f"{outbound.project_url(api, project)}/deployments"
        unanswered = []

        def attempt() -> outbound.Answer:
            if unanswered:
                adopted = self.adopt(state)
                if adopted is not None:
                    return adopted
            answer = outbound.create_deployment(api, project, self.token, environment=self.name,
                                                sha=self.deployment.commit_sha, ref=self.ref, tag=self.tag,
                                                status=state, **self.options)
            if answer.status is None and not answer.code:
                unanswered.append(answer)
            elif answer.ok:
                self.store(_json_object(answer.body).get("id"))
            elif answer.status == 404:
                self.forget_environment()
            return answer

        return delivery.with_attempts(attempt, self.record(state, url))

    def adopt(self, state: str) -> outbound.Answer | None:
        """The environment's deployments in `state`, newest first: the first with our sha and ref that
        no Slipway row stores becomes ours. None: none (or GitLab did not answer: post again)."""
        answer = outbound.list_deployments(self.reports.gitlab_api_url, self.reports.gitlab_project, self.token,
                                           environment=self.name, status=state, **self.options)
        if not answer.ok:
            return None
        for candidate in _json_list(answer.body):
            if candidate.get("sha") != self.deployment.commit_sha or candidate.get("ref") != self.ref:
                continue
            if self.store(candidate.get("id")):
                return outbound.Answer(answer.status, f"adopted GitLab deployment {candidate['id']}: the post that "
                                       "timed out had made it", answer.took_ms)
        return None

    def store(self, gitlab_id) -> bool:
        """Keep GitLab's id on the row; False when another row already holds it (or there is none)."""
        if not isinstance(gitlab_id, int) or isinstance(gitlab_id, bool):
            return False
        if Deployment.objects.filter(gitlab_deployment_id=gitlab_id).exists():
            return False
        try:
            Deployment.objects.filter(pk=self.deployment.pk).update(gitlab_deployment_id=gitlab_id)
        except IntegrityError:  # another row took it between the check and the update
            return False
        self.deployment.gitlab_deployment_id = gitlab_id
        return True

    def put(self, state: str) -> bool:
        api, project = self.reports.gitlab_api_url, self.reports.gitlab_project
        gitlab_id = self.deployment.gitlab_deployment_id
        return delivery.with_attempts(lambda: outbound.update_deployment(
            api, project, self.token, gitlab_id, status=state, **self.options),
            self.record(state, f"{outbound.project_url(api, project)}/deployments/{gitlab_id}"))


def _json_list(body: str) -> list[dict]:
    try:
        value = json.loads(body or "[]")
    except ValueError:
        return []
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _json_object(body: str) -> dict:
    try:
        value = json.loads(body or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
