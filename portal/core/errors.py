"""The domain's refusal: a request that cannot be accepted, with the reason the
user reads. Raised by every feature package's operations; it is a SlipwayError
(deploy/errors.py), so the pages show it as a message, the API answers it with
its status and the code `refused`, a management command prints it.
"""

from __future__ import annotations

from deploy.errors import SlipwayError


class RequestRefused(SlipwayError):
    """The request cannot be accepted; the message says why. 409 unless the request
    itself is wrong (`status=400`)."""

    status = 409

    def __init__(self, message: str, *, status: int | None = None, code: str = "refused"):
        super().__init__(code, message, status=status)
