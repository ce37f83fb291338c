"""The domain's refusal: a request that cannot be accepted, with the reason the
user reads. Raised by every feature package's operations; the web shows it as a
message, the API as a 409/400, the CLI as an error.
"""

from __future__ import annotations


class RequestRefused(Exception):
    """The request cannot be accepted; the message says why."""
