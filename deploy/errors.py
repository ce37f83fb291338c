"""Two families of pipeline errors, each with a stable code.

A UserError is the function's fault (bad Dockerfile, wrong architecture,
Lambda refuses the configuration): shown as is and never retried. An AppError
is ours or the platform's (Docker daemon down, throttling, registry
unreachable): retried a bounded number of times with backoff when
`retryable`, then shown.
"""

from __future__ import annotations


class DeployError(Exception):
    code = "error"
    retryable = False

    def __init__(self, code: str, message: str, *, retryable: bool | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        if retryable is not None:
            self.retryable = retryable

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class UserError(DeployError):
    """The function's source or settings are wrong; retrying cannot help."""


class AppError(DeployError):
    """Infrastructure trouble; may be transient."""

    retryable = True


# Codes that the README names or more than one module raises.
# The Lambda is not this function's (Slipway did not create it, or it carries another
# function's `slipway:function` tag) and its current execution role is not one of
# SLIPWAY_ALLOWED_EXECUTION_ROLES: the function's code would run with someone else's rights.
LAMBDA_NOT_OWNED = "lambda-not-owned"
