"""Errors that become HTTP responses: a status and one sentence for the caller."""

from __future__ import annotations


class ApiError(Exception):
    """A request the service refuses; ``status`` is the HTTP code, the message says why."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


class RepositoryError(Exception):
    """The model repository is missing or unusable; the service cannot start."""
