"""Follow a deployment from the command line: print steps and output as they run."""

import time

from django.core.management.base import CommandError

from portal.models import Deployment, DeploymentStep, Function


def function_named(name: str) -> Function:
    function = Function.objects.filter(name=name).first()
    if function is None:
        raise CommandError(f"no function named {name!r}")
    return function


def follow(deployment: Deployment, write, timeout: float = 3600) -> Deployment:
    seen: dict[int, int] = {}  # step id -> characters of output printed
    deadline = time.monotonic() + timeout
    while True:
        deployment.refresh_from_db()
        for step in DeploymentStep.objects.filter(deployment=deployment).order_by("position"):
            if step.pk not in seen:
                write(f"==> {step.name}")
                seen[step.pk] = 0
            new = step.output[seen[step.pk]:]
            if new:
                for line in new.rstrip("\n").split("\n"):
                    write(f"    {line}")
                seen[step.pk] = len(step.output)
        if deployment.is_terminal or time.monotonic() > deadline:
            return deployment
        time.sleep(0.5)


def finish(deployment: Deployment, write) -> Deployment:
    """Follow `deployment` to its end, print how it ended; a CommandError unless it succeeded."""
    deployment = follow(deployment, write)
    write(summary(deployment))
    if deployment.status != Deployment.Status.SUCCEEDED:
        raise CommandError(summary(deployment))
    return deployment


def summary(deployment: Deployment) -> str:
    text = f"deployment #{deployment.pk} ({deployment.kind}) {deployment.status}"
    if deployment.version:
        text += f": version {deployment.version}"
    if deployment.error_code:
        text += f" [{deployment.error_code}] {deployment.error_message}"
    return text
