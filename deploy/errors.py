"""Slipway's one error type, and the catalogue of every code it carries.

`SlipwayError` has a stable code (users, scripts and the API read it), the message
a person reads, the HTTP status an entry layer answers with, optional headers
(`Retry-After`) and per-field messages. Each entry layer has one handler that
turns it into its answer: the API's in portal/api/errors.py, the pages'
in portal/views/refusals.py, the worker's in portal/deployments/recording.py
(the deployment's error code and message); the GitLab receiver keeps its own
answers (a uniform 401 for every unauthenticated delivery).

Two families run the pipeline (DeployError). A UserError is the function's fault
(bad Dockerfile, wrong architecture, Lambda refuses the configuration): shown as
is and never retried. An AppError is ours or the platform's (Docker daemon down,
throttling, registry unreachable): retried a bounded number of times with backoff
when `retryable`, then shown.

Every code raised anywhere is in CATALOGUE (codes built at run time, from a
family and a suffix, in FAMILIES), with its meaning and whose fault it is;
tests/test_error_catalogue.py reads the source and fails on a code missing here.
Codes never change: add one, never rename one.
"""

from __future__ import annotations

from dataclasses import dataclass


class SlipwayError(Exception):
    """An error with a stable `code`, a `message` for people, the HTTP `status` to
    answer with, optional `headers` and per-field messages (`fields`)."""

    status = 400
    retryable = False

    def __init__(self, code: str, message: str, *, status: int | None = None, headers: dict | None = None,
                 fields: dict | None = None, retryable: bool | None = None):
        super().__init__(message)
        self.code, self.message = code, message
        self.headers, self.fields = dict(headers or {}), dict(fields or {})
        if status is not None:
            self.status = status
        if retryable is not None:
            self.retryable = retryable


class DeployError(SlipwayError):
    """An error of the pipeline or of a seam: the deployment records its code and message."""

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class UserError(DeployError):
    """The function's source or settings are wrong; retrying cannot help."""


class AppError(DeployError):
    """Infrastructure trouble; may be transient."""

    status = 502
    retryable = True


# Codes that the README names or more than one module raises.
# The Lambda is not this function's (Slipway did not create it, or it carries another
# function's `slipway:function` tag) and its current execution role is not one of
# SLIPWAY_ALLOWED_EXECUTION_ROLES: the function's code would run with someone else's rights.
LAMBDA_NOT_OWNED = "lambda-not-owned"

# --- The catalogue ---------------------------------------------------------------------

USER, PLATFORM = "user", "platform"  # whose fault: the caller's or the function's / Slipway's or AWS's


@dataclass(frozen=True)
class Entry:
    meaning: str
    fault: str  # USER or PLATFORM


def _entries(fault: str, meanings: dict[str, str]) -> dict[str, Entry]:
    return {code: Entry(meaning, fault) for code, meaning in meanings.items()}


CATALOGUE: dict[str, Entry] = {
    # The pipeline: the function's source, settings or code (UserError, shown and never retried).
    **_entries(USER, {
        "architecture-mismatch": "the built image is not for the function's architecture",
        "attestation-manifest": "the pushed digest is an attestation manifest, not an image",
        "bad-build-arg": "a build arg's name is not an identifier or its value is not one line",
        "bad-checkout": "the commit's tree cannot be checked out safely (links or paths leading outside)",
        "bad-path": "the context or Dockerfile path is not a relative path inside the repository",
        "bad-ref": "the ref or commit is not a valid branch, tag or full SHA",
        "bad-repository-url": "the repository URL is not one Slipway may fetch",
        "bad-url-auth": "a function URL's auth type is neither AWS_IAM nor NONE",
        "branch-not-found": "the repository has no such branch",
        "build-failed": "docker build failed (the Dockerfile or the build)",
        "builder-auth-failed": "the remote builder refused Slipway's ssh key",
        "builder-host-key-mismatch": "the remote builder's host key is not the pinned one",
        "golden-mismatch": "the new version does not find a golden case's boxes",
        "image-index": "the pushed digest is an image index, not a single-platform image",
        "image-missing": "ECR no longer holds the image of the release to roll back to or to promote",
        "lambda-not-owned": "the Lambda is not this function's and its execution role is not allowed",
        "missing-role": "the first deploy creates the Lambda and needs an execution role ARN",
        "nothing-to-restore": "the release to roll back to has no recorded image",
        "outbound-address-refused": "a host is outside SLIPWAY_OUTBOUND_ALLOWED_NETWORKS or is link-local",
        "ref-not-found": "the ref is not a branch, tag or commit of the repository",
        "repository-auth-failed": "the git host refused the function's repository credentials",
        "repository-credentials": "the repository credentials do not fit the URL or cannot be read",
        "repository-host-key": "the git host's key is not the one in the function's known_hosts",
        "repository-not-found": "no repository at the URL, or the credentials do not reach it",
        "rollout-alarm-invalid": "the environment's rollout alarm template is not usable (deploy/alarms.py's schema)",
        "rollout-alarm-missing": "an alarm the environment's rollout watches does not exist in CloudWatch: the "
                                 "rollout does not start",
        "smoke-error-result": "the new version answered the smoke event with an error",
        "smoke-function-error": "the new version raised on the smoke event",
    }),
    # The pipeline: Slipway's machinery, AWS or the network (AppError, retried when transient).
    **_entries(PLATFORM, {
        "aws-credentials": "no AWS credentials are configured",
        "aws-unreachable": "AWS (or the local plane) did not answer",
        "build-timeout": "the build ran longer than its time limit",
        "builder-missing": "the BuildKit CLI is not installed or cannot build",
        "builder-ssh-missing": "the ssh client the remote builder needs is not installed",
        "builder-unreachable": "the remote builder cannot be reached over ssh",
        "builder-url": "SLIPWAY_BUILDER_URL is not an ssh:// URL",
        "docker-unavailable": "the Docker engine is not answering",
        "git-archive-failed": "git archive of the commit failed",
        "git-fetch-failed": "fetching the repository failed (name resolution, network, the git host)",
        "git-timeout": "a git command ran past its time limit",
        "image-unreadable": "ECR did not return the image's manifest, or not as JSON",
        "lambda-wait-failed": "the Lambda did not finish an update in time, or failed it",
        "process-failed": "a child process exited with an error",
        "process-timeout": "a child process ran past its time limit",
        "push-failed": "docker push failed",
        "push-unverified": "ECR does not hold the pushed tag at the built digest",
        "registry-login-failed": "docker login to ECR failed",
        "registry-unreachable": "ECR did not answer the push",
        "revision-mismatch": "the Lambda was changed by someone else during the update",
    }),
    # How a deployment ended other than by an error of a step.
    **_entries(USER, {
        "cancelled": "cancelled on request before the Lambda was touched",
        "gate-expired": "a freeze or an approval rule held it longer than SLIPWAY_GATE_MAX_WAIT",
        "preview-cap": "the function has SLIPWAY_PREVIEW_CAP previews open and none is idle: no preview made",
        "preview-closed": "the merge request's preview closed before its alias moved: nothing was created",
        "preview-not-approved": "a fork's merge request head that no deployer approved: it does not build",
        "stale": "a newer deployment of the function was requested meanwhile",
        "superseded": "a rollback or a newer deploy took its place",
        "version-gone": "the version to roll back to went while the rollback ran",
        "canary-aborted": "a canary or linear rollout was aborted (an alarm, a probe, an owner, a lost worker, a "
                          "rollback, a pause past its maximum, routing changed outside Slipway): the alias is back "
                          "on the stable version; the message names the signal",
    }),
    **_entries(PLATFORM, {
        "database-unavailable": "the database did not answer",
        "internal-error": "Slipway failed unexpectedly; the error is logged",
        "time-limit": "the task ran past its soft time limit",
        "worker-lost": "the worker running it died",
    }),
    # Requests refused by the domain (RequestRefused), the API and its authentication.
    **_entries(USER, {
        "csrf-failed": "a signed-in API request without the X-CSRFToken header",
        "deploy-instead": "a promotion into the first environment: pushes deploy there, deploy instead",
        "environment-in-use": "the environment serves a release or has a deployment unfinished (deleting it), or "
                              "the function has a deployment unfinished (changing the promotion order)",
        "environment-required": "the function has several environments and the request named none",
        "environment-unknown": "the function has no environment of that name",
        "frozen": "a freeze window holds the environment, which refuses requests during a freeze",
        "not-frozen": "an override of a deployment that is not frozen (any more) or was overridden already",
        "not-verified-upstream": "the digest did not go live in the previous environment, or was rolled back "
                                 "from there (or its alias no longer serves it)",
        "promote-instead": "a deploy to an environment after the first: its releases arrive by promotion",
        "forbidden": "signed in, but not allowed to do this",
        "http-error": "a request the API framework refused (e.g. a wrong method)",
        "invalid": "the request or a setting is not valid; `fields` says which",
        "invalid-token": "the API token is not valid",
        "no-such-page": "the page number is past the last page",
        "not-found": "no such function, deployment or page, or not one you may see",
        "rate-limited": "too many deploys in the window; Retry-After says when to try again",
        "refused": "the domain refused the request (archived, nothing to roll back to, …); the message says why",
        "taken": "another function already has this name or Lambda",
        "token-expired": "the API token expired",
        "token-revoked": "the API token was revoked",
        "token-scope": "the API token's scope does not allow this",
        "too-large": "the API request's body is over SLIPWAY_API_MAX_BODY",
        "too-late": "the deployment is past its update step: too late to cancel",
        "unauthenticated": "no token or session was sent",
    }),
    "aws-unavailable": Entry("the drift check could not read the function from AWS", PLATFORM),
    # Approvals (portal/deployments/approving.py) and the protection they serve (the functions registry).
    **_entries(USER, {
        "already-decided": "the user already approved or rejected this deployment: one decision per user",
        "not-approver": "the user's role on the function does not allow approving (owner or approver; staff)",
        "not-awaiting-approval": "the deployment is not held for approval: nothing to approve or reject",
        "own-request": "the requester of a deployment never approves or rejects it",
        "protection-unsatisfiable": "the environment would require more approvals than the function's members "
                                    "who may approve, minus the requester, can give",
        "rejected": "an approver rejected the deployment before it touched the Lambda",
    }),
    # Progressive delivery (portal/deployments/rollout.py, routing.py).
    **_entries(USER, {
        "rollout-not-running": "pause, resume, promote now or abort of a deployment that is not rolling out",
        "routing-invalid": "a weighted alias Slipway was about to write breaks Lambda's rules (0 < weight < 1, "
                           "one extra version, both published, extra not the primary, primary not $LATEST)",
    }),
    # Merge requests' previews (portal/deployments/previews.py, portal/functions/previews.py).
    **_entries(USER, {
        "already-approved": "that head of the fork's merge request is already approved",
        "approval-needed": "the fork's head waits for a deployer's approval before it builds",
        "fork-refused": "the merge request comes from a fork, and the function's owners do not allow forks' "
                        "previews",
        "head-moved": "the merge request's head is no longer the commit being approved: look at it again",
        "no-head": "the preview has no head commit yet",
        "not-a-fork": "the merge request is not from a fork: it needs no approval",
        "preview-closed": "the preview is closed (its merge request closed or merged, or it was removed)",
        "preview-environment": "the preview environment is not deleted or moved on its own",
        "previews-off": "previews are off for the function",
        "session-only": "only a signed-in session may do this (approving a fork's preview), never an API token",
    }),
    "preview-role": Entry("no preview execution role is configured, or it is not an allowed role: previews "
                          "cannot be enabled", PLATFORM),
    # The console (ConsoleError): the image, the request, or the invoke.
    **_entries(USER, {
        "archived": "the function is archived: the console does not invoke it",
        "corrupt-image": "the file cannot be read as an image",
        "empty-image": "the file is empty",
        "image-gone": "the stored image was removed by the retention rule",
        "image-too-large": "the image is over the console's pixel cap",
        "invalid-input": "the console's form is not valid",
        "no-such-sample": "no bundled sample image by that name",
        "no-such-target": "the version or alias to invoke does not exist",
        "not-a-detector-answer": "the function answered, but not with the detector's shape",
        "not-an-image": "the file is not an image",
        "nothing-deployed": "the function has no deployment to invoke yet",
        "truncated-image": "the image is truncated or damaged",
        "unsupported-format": "the image is not JPEG, PNG, WebP or BMP",
        "upload-too-large": "the upload is over SLIPWAY_CONSOLE_MAX_UPLOAD",
    }),
    "no-console-bucket": Entry("an image over Lambda's payload limit needs the console bucket", PLATFORM),
    # The GitLab receiver's answers (in the JSON body's `error`).
    **_entries(USER, {
        "length required": "a delivery without Content-Length",
        "malformed": "an authenticated delivery that is not what GitLab sends",
        "too large": "a delivery over SLIPWAY_WEBHOOK_MAX_BODY_BYTES",
        "unauthorized": "no function by that name, a wrong token or signature, or the function is archived",
    }),
    "unavailable": Entry("the database did not answer: the delivery was not recorded", PLATFORM),
}

# Codes built at run time: a family and a suffix.
FAMILIES: dict[str, Entry] = {
    "ecr-": Entry("ECR answered an error; the suffix is AWS's error code (a user's when it refuses the "
                  "settings, otherwise the platform's)", PLATFORM),
    "lambda-": Entry("Lambda answered an error; the suffix is AWS's error code (e.g. "
                     "lambda-InvalidParameterValueException, the function's settings)", PLATFORM),
    "cloudwatch-": Entry("CloudWatch answered an error about a rollout's alarms; the suffix is AWS's error code",
                         PLATFORM),
    "s3-": Entry("S3 (the console bucket) answered an error; the suffix is AWS's error code", PLATFORM),
    "lambda-update-failed-": Entry("Lambda could not apply the update; the suffix is its LastUpdateStatusReasonCode",
                                   USER),
    "golden-": Entry("a golden case could not be run; the suffix is the console's code for why", PLATFORM),
}
