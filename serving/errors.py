"""Errors that become HTTP responses: a status and one sentence for the caller."""

from __future__ import annotations


class ApiError(Exception):
    """A request the service refuses; ``status`` is the HTTP code, the message says why."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}

    def __reduce__(self):  # raised in the decoding process, re-raised in the server
        return (ApiError, (self.status, self.message, self.headers))


class StartupError(Exception):
    """The service cannot start; the message says why and how to fix it."""
