"""What a health check raises when its part is down (Django-free, so checks
that live with the local stack can raise it too)."""


class Down(Exception):
    """A check failed; the message says what and, where it helps, what to do."""
