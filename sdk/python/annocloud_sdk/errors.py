"""The one exception the SDK raises for API errors."""

from __future__ import annotations


class ApiError(Exception):
    """An error response: HTTP status, the machine-readable reason and the message."""

    def __init__(self, status_code: int, reason: str, message: str, status: str = ""):
        super().__init__(f"{status_code} {reason}: {message}")
        self.status_code = status_code
        self.reason = reason
        self.message = message
        self.status = status
