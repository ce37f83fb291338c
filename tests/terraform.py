"""infra/terraform as data (python-hcl2; no terraform binary here), and IAM
questions about it: which actions a process's policy allows, and the AWS API
operations Slipway's code calls, mapped to the IAM actions they need."""

from __future__ import annotations

import fnmatch
import json
import re
from functools import cache
from pathlib import Path

from devstack.common import REPO_ROOT

TERRAFORM = REPO_ROOT / "infra" / "terraform"

# API operation -> IAM action where they differ (botocore names the operation, IAM the action).
ACTION_FOR = {
    "lambda:Invoke": "lambda:InvokeFunction",
    "s3:HeadBucket": "s3:ListBucket",
    "s3:HeadObject": "s3:GetObject",
}
# What the Docker engine does with the ECR token in the push step (no boto3 call to record),
# and what Lambda asks of the caller on CreateFunction/UpdateFunctionCode from an image.
IMPLIED = {
    "worker": {"ecr:BatchCheckLayerAvailability", "ecr:InitiateLayerUpload", "ecr:UploadLayerPart",
               "ecr:CompleteLayerUpload", "ecr:PutImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchGetImage",
               "ecr:GetRepositoryPolicy", "ecr:SetRepositoryPolicy", "iam:PassRole"},
    "web": set(),
}
# Called only on the local plane (portal/console/invoke.py, under `if settings.LOCAL_MODE`): the
# bucket is Terraform's on AWS, so no role may create it. deploy/alarms.set_state: tests only
# (they force an alarm's state); no role may.
LOCAL_ONLY = {"s3:CreateBucket", "s3:HeadBucket", "cloudwatch:SetAlarmState"}
# botocore signs CloudWatch's calls as "monitoring"; IAM names its actions "cloudwatch:".
IAM_PREFIX = {"monitoring": "cloudwatch"}
READ_PREFIXES = ("Get", "List", "Describe", "BatchGet", "BatchCheck", "Head")
# Actions AWS accepts only with Resource "*" (read-only, or account-wide like the registry token).
STAR_ONLY = {"ecr:GetAuthorizationToken", "lambda:ListFunctions"}
# Which process runs the code in each module that calls AWS: the console's invoke runs in
# the web process and, for golden cases, in the worker's verify step; so does the health page.
CALLERS = {
    "deploy/ecr.py": ("worker",),
    "deploy/lambdas.py": ("worker",),
    "deploy/alarms.py": ("worker",),
    "portal/console/invoke.py": ("web", "worker"),
    "portal/core/health.py": ("web", "worker"),
}
# portal/deployments/rollback.py runs in the web process when the queue does not answer, and in the worker:
# the deploy/ calls it makes for a rollback to a version that still exists (check, owner, alias).
ROLLBACK_WITHOUT_QUEUE = {"ecr:DescribeImages", "lambda:GetFunctionConfiguration", "lambda:ListTags",
                          "lambda:TagResource", "lambda:GetAlias", "lambda:CreateAlias", "lambda:UpdateAlias",
                          "lambda:GetFunction"}
WEB_ALSO = {"lambda:Invoke"} | ROLLBACK_WITHOUT_QUEUE  # deploy/lambdas.invoke, called by portal/console/invoke.py
# The services whose operations a module may call, where it is one: a name two services
# share (tag_resource, Lambda's and ECR's) then counts for that module's service only.
SERVICES = {"deploy/ecr.py": ("ecr",), "deploy/lambdas.py": ("lambda",), "deploy/alarms.py": ("cloudwatch",)}
ALL_SERVICES = ("lambda", "ecr", "s3")


def unquote(value):
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    if isinstance(value, list):
        return [unquote(v) for v in value]
    return value


@cache
def files() -> dict[str, dict]:
    import hcl2

    return {path.name: hcl2.loads(path.read_text()) for path in sorted(TERRAFORM.glob("*.tf"))}


def blocks(kind: str, type_: str) -> dict[str, dict]:
    """Every `kind "type_" "name" {}` block (resource or data), by name."""
    found = {}
    for parsed in files().values():
        for entry in parsed.get(kind, []):
            for key, named in entry.items():
                if unquote(key) == type_:
                    found.update({unquote(name): body for name, body in named.items()})
    return found


def statements(document: str) -> list[dict]:
    body = blocks("data", "aws_iam_policy_document")[document]
    return body.get("statement", [])


def policy_documents() -> dict[str, list[dict]]:
    return {name: body.get("statement", []) for name, body in blocks("data", "aws_iam_policy_document").items()}


def allows(document: str, action: str) -> bool:
    """Some Allow statement of the policy names the action (no wildcards are used, but they
    would match) on at least one resource."""
    return any(
        unquote(statement.get("effect", '"Allow"')) == "Allow" and statement.get("resources")
        and any(fnmatch.fnmatchcase(action.lower(), pattern.lower()) for pattern in unquote(statement["actions"]))
        for statement in statements(document))


def iam_action(operation: str) -> str:
    prefix, _, name = operation.partition(":")
    operation = f"{IAM_PREFIX.get(prefix, prefix)}:{name}"
    return ACTION_FOR.get(operation, operation)


def is_write(action: str) -> bool:
    return not action.split(":", 1)[1].startswith(READ_PREFIXES)


def calls_in_code() -> dict[str, set[str]]:
    """process -> the AWS operations ("lambda:Invoke") its modules name, found by matching
    every operation of the services Slipway uses against the source (snake_case, as boto3
    spells them): a new call in the code shows up here without anyone listing it."""
    import botocore.session

    session = botocore.session.get_session()
    operations: dict[str, dict[str, str]] = {}
    for service in {*ALL_SERVICES, *(s for named in SERVICES.values() for s in named)}:
        model = session.get_service_model(service)
        prefix = IAM_PREFIX.get(model.signing_name, model.signing_name)
        operations[service] = {_snake(name): f"{prefix}:{name}" for name in model.operation_names}
    found: dict[str, set[str]] = {"web": set(WEB_ALSO), "worker": set()}
    for module, roles in CALLERS.items():
        source = (REPO_ROOT / module).read_text()
        for service in SERVICES.get(module, ALL_SERVICES):
            for snake, operation in operations[service].items():
                if re.search(rf"[\"'.]{snake}[\"'(,\s]", source):
                    for role in roles:
                        found[role].add(operation)
    return found


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


def recorded_calls(path: Path) -> dict[str, set[str]]:
    """role -> the operations recorded in `path` (deploy/testing.py's SLIPWAY_AWS_CALLS_FILE)."""
    found: dict[str, set[str]] = {}
    if not path.exists():
        return found
    for line in path.read_text().splitlines():
        entry = json.loads(line)
        found.setdefault(entry["role"], set()).add(entry["action"])
    return found


def not_allowed(role: str, operations: set[str]) -> list[str]:
    return sorted(op for op in operations if not local_only(op) and not allows(role, iam_action(op)))


def local_only(operation: str) -> bool:
    """Named as recorded (s3:HeadBucket) or as IAM names it (monitoring:… is cloudwatch:…)."""
    return operation in LOCAL_ONLY or iam_action(operation) in LOCAL_ONLY
