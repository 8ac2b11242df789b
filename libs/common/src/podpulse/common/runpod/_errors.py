"""Exceptions raised by the RunPod clients.

Messages name the call, the endpoint or job and what RunPod said; they never contain the
API key (the clients redact it from any response text they quote).
"""

from __future__ import annotations


class RunPodError(Exception):
    """Base class for every failure talking to RunPod (or the local twin)."""

    def __init__(self, message: str, *, call: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.call = call
        self.status_code = status_code


class RunPodAuthError(RunPodError):
    """HTTP 401/403: the API key is missing or was rejected."""


class RunPodNotFound(RunPodError):
    """HTTP 404: the endpoint id or job id is unknown."""


class RunPodBadRequest(RunPodError):
    """HTTP 400 (and other 4xx): RunPod refused the request; the message carries its reason."""


class RunPodRateLimited(RunPodError):
    """HTTP 429 persisted after every retry."""

    def __init__(
        self, message: str, *, call: str, status_code: int, retry_after_s: float | None
    ) -> None:
        super().__init__(message, call=call, status_code=status_code)
        self.retry_after_s = retry_after_s


class RunPodServerError(RunPodError):
    """HTTP 5xx that was not retried (unsafe) or persisted after every retry."""

    def __init__(self, message: str, *, call: str, status_code: int, body_excerpt: str) -> None:
        super().__init__(message, call=call, status_code=status_code)
        self.body_excerpt = body_excerpt


class RunPodTimeout(RunPodError):
    """The client gave up waiting (connect, read, write or connection-pool timeout)."""

    def __init__(self, message: str, *, call: str, timeout_s: float | None) -> None:
        super().__init__(message, call=call)
        self.timeout_s = timeout_s


class RunPodConnectionError(RunPodError):
    """The connection failed (refused, reset, DNS) and retrying did not help or was unsafe."""


class RunPodProtocolError(RunPodError):
    """RunPod answered, but not with the JSON shape this client expects."""

    def __init__(
        self, message: str, *, call: str, status_code: int | None = None, field: str | None = None
    ) -> None:
        super().__init__(message, call=call, status_code=status_code)
        self.field = field
