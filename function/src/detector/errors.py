"""The error every module raises for a bad request, and how a request's value is shown in its message."""

from __future__ import annotations


class BadInput(Exception):
    """A problem with the request, answered as a result rather than raised to Lambda."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    def result(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}


def show(value) -> str:
    """A value for an error message, cut short: the request may hold megabytes."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
