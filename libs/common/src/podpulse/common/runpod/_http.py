"""One place that sends a request to RunPod: auth, timeouts, retries and error mapping."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from ..retry import Backoff, Retry, parse_retry_after
from ._errors import (
    RunPodAuthError,
    RunPodBadRequest,
    RunPodConnectionError,
    RunPodError,
    RunPodNotFound,
    RunPodProtocolError,
    RunPodRateLimited,
    RunPodServerError,
    RunPodTimeout,
)

logger = logging.getLogger("podpulse.common.runpod")

ApiKey = str | Callable[[], str]
ModelT = TypeVar("ModelT", bound=BaseModel)

_EXCERPT_CHARS = 300
_USER_AGENT = "podpulse"


class HttpClientBase:
    """The async-context life cycle both RunPod clients share: one ``Requester`` each."""

    _http: Requester

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool, unless it was passed in."""
        await self._http.aclose()


class Requester:
    """Sends JSON requests with bearer auth over one shared ``httpx.AsyncClient``.

    The key is resolved on every attempt, so a rotated key (a callable re-reading a file or
    the environment) takes effect without rebuilding the client.
    """

    def __init__(
        self,
        api_key: ApiKey,
        *,
        client: httpx.AsyncClient | None,
        timeout: float,
        max_retries: int,
        backoff: Backoff | None,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be > 0 seconds")
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        self._api_key = api_key
        self._owns_client = client is None
        # Built once: every call reuses pooled connections, so a caller timing a request
        # measures RunPod, not TLS handshakes or client construction.
        self._client = client if client is not None else httpx.AsyncClient()
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff if backoff is not None else Backoff()
        # 429 waits honour Retry-After (capped by the backoff); everything else steps up.
        self._retry = Retry.backoff(
            self.backoff,
            retries=max_retries,
            on=(_Again,),
            retry_after=lambda error: parse_retry_after(
                error.retry_after if isinstance(error, _Again) else None, self.backoff.now()
            ),
        )

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    def _key(self, call: str) -> str:
        key = self._api_key() if callable(self._api_key) else self._api_key
        if not key or not key.strip():
            raise RunPodAuthError(f"RunPod {call}: no API key is configured", call=call)
        return key.strip()

    async def request(
        self,
        method: str,
        url: str,
        *,
        call: str,
        idempotent: bool,
        not_found: str,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, str | int] | None = None,
        read_timeout: float | None = None,
    ) -> dict[str, Any]:
        """Send until success or a final failure; return the response's JSON object.

        ``idempotent`` says whether a 5xx or a dropped connection may be retried: a request
        that might have taken effect on the server is only retried when doing it twice is
        harmless. 429 and connect failures are always retried because the server did not
        act on the request.
        """
        timeout = httpx.Timeout(self.timeout, read=read_timeout or self.timeout)
        sent = 0

        async def attempt() -> dict[str, Any]:
            nonlocal sent
            retries, sent = sent, sent + 1
            key = self._key(call)
            try:
                response = await self._client.request(
                    method,
                    url,
                    json=body,
                    params=params,
                    headers={
                        "Authorization": f"Bearer {key}",
                        "Accept": "application/json",
                        "User-Agent": _USER_AGENT,
                    },
                    timeout=timeout,
                )
            except httpx.TransportError as exc:
                final = _transport_error(exc, call, timeout)
                # A failed connect never reached RunPod. Any other timeout means the caller's
                # time budget is spent, so it is reported rather than silently doubled.
                never_sent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
                dropped = idempotent and not isinstance(exc, httpx.TimeoutException)
                if never_sent or dropped:
                    raise _Again(type(exc).__name__, None, lambda: final) from None
                raise final from None

            status = response.status_code
            if status >= 400:

                def final_status() -> RunPodError:
                    retry_after = parse_retry_after(
                        response.headers.get("Retry-After"), self.backoff.now()
                    )
                    return _status_error(
                        response,
                        call=call,
                        not_found=not_found,
                        key=key,
                        idempotent=idempotent,
                        retries=retries,
                        retry_after=retry_after,
                    )

                if status == 429 or (status >= 500 and idempotent):
                    retry_after = response.headers.get("Retry-After")
                    raise _Again(f"HTTP {status}", retry_after, final_status)
                raise final_status()
            return _json_object(response, call, key)

        def log_retry(number: int, error: BaseException, delay: float) -> None:
            reason = error.reason if isinstance(error, _Again) else type(error).__name__
            logger.info(
                "RunPod %s: %s, retry %d/%d in %.2fs",
                call,
                reason,
                number + 1,
                self.max_retries,
                delay,
            )

        try:
            return await self._retry.acall(attempt, sleep=self.backoff.sleep, on_retry=log_retry)
        except _Again as exc:
            raise exc.final() from None

    @asynccontextmanager
    async def stream(
        self,
        method: str,
        url: str,
        *,
        call: str,
        not_found: str,
        body: Mapping[str, Any] | None = None,
    ) -> AsyncIterator[httpx.Response]:
        """Send once and yield the response with its body unread, to be read as it arrives.

        Never retried: a streamed answer may have begun on the server (and a 429 is the
        caller's to back off from, as a prober counts each one). An HTTP error status is
        raised as the same ``RunPodError`` ``request`` raises, its body read first; a
        transport failure while the body is read is mapped the same way.
        """
        timeout = httpx.Timeout(self.timeout)
        key = self._key(call)
        headers = {
            "Authorization": f"Bearer {key}",
            "Accept": "text/event-stream",
            "User-Agent": _USER_AGENT,
        }
        try:
            async with self._client.stream(
                method, url, json=body, headers=headers, timeout=timeout
            ) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise _status_error(
                        response,
                        call=call,
                        not_found=not_found,
                        key=key,
                        idempotent=False,
                        retries=0,
                        retry_after=parse_retry_after(
                            response.headers.get("Retry-After"), self.backoff.now()
                        ),
                    )
                yield response
        except httpx.TransportError as exc:
            raise _transport_error(exc, call, timeout) from None


class _Again(Exception):
    """An attempt worth repeating; ``final`` builds what the caller gets when none is left."""

    def __init__(
        self, reason: str, retry_after: str | None, final: Callable[[], RunPodError]
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.final = final


def parse_model(model: type[ModelT], data: dict[str, Any], call: str) -> ModelT:
    """Validate a response object, naming the offending field when it does not fit."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        first = errors[0]
        field = ".".join(str(part) for part in first["loc"]) or "(whole response)"
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise RunPodProtocolError(
            f"RunPod {call} response has an unexpected shape: field {field!r}: "
            f"{first['msg']}{more}",
            call=call,
            field=field,
        ) from None


def _excerpt(response: httpx.Response, key: str) -> str:
    text = response.text.strip()
    if len(key) >= 4:  # a server echoing the header back must not leak it into an exception
        text = text.replace(key, "***")
    if len(text) > _EXCERPT_CHARS:
        text = text[:_EXCERPT_CHARS] + "…"
    return text or "(empty body)"


def _reason(response: httpx.Response, key: str) -> str:
    """RunPod's own error text: the ``error``/``message``/``detail`` field, else the body."""
    try:
        data = response.json()
    except ValueError:
        return _excerpt(response, key)
    if isinstance(data, dict):
        for name in ("error", "message", "detail"):
            if data.get(name):
                value = data[name]
                text = value if isinstance(value, str) else json.dumps(value)
                return text.replace(key, "***") if len(key) >= 4 else text
    return _excerpt(response, key)


def _status_error(
    response: httpx.Response,
    *,
    call: str,
    not_found: str,
    key: str,
    idempotent: bool,
    retries: int,
    retry_after: float | None,
) -> RunPodError:
    status = response.status_code
    tried = f" after {retries} retr{'y' if retries == 1 else 'ies'}" if retries else ""
    if status in (401, 403):
        return RunPodAuthError(
            f"RunPod {call}: the API key was rejected (HTTP {status}); "
            "check that it is current and has access to this endpoint",
            call=call,
            status_code=status,
        )
    if status == 404:
        return RunPodNotFound(f"RunPod {call}: {not_found} (HTTP 404)", call=call, status_code=404)
    if status == 429:
        return RunPodRateLimited(
            f"RunPod {call}: rate limited (HTTP 429){tried}",
            call=call,
            status_code=429,
            retry_after_s=retry_after,
        )
    if status >= 500:
        excerpt = _excerpt(response, key)
        note = (
            ""
            if idempotent
            else "; not retried because the server may already have acted on it "
            "(check the job's status before submitting again)"
        )
        return RunPodServerError(
            f"RunPod {call}: server error HTTP {status}{tried}{note}: {excerpt}",
            call=call,
            status_code=status,
            body_excerpt=excerpt,
        )
    return RunPodBadRequest(
        f"RunPod {call}: request refused (HTTP {status}): {_reason(response, key)}",
        call=call,
        status_code=status,
    )


def _transport_error(exc: httpx.TransportError, call: str, timeout: httpx.Timeout) -> RunPodError:
    if isinstance(exc, httpx.TimeoutException):
        if isinstance(exc, httpx.ConnectTimeout):
            phase, seconds = "connecting", timeout.connect
        elif isinstance(exc, httpx.WriteTimeout):
            phase, seconds = "sending the request", timeout.write
        elif isinstance(exc, httpx.PoolTimeout):
            phase, seconds = "waiting for a free connection", timeout.pool
        else:
            phase, seconds = "waiting for the response", timeout.read
        after = f" after {seconds:g}s" if seconds is not None else ""
        return RunPodTimeout(
            f"RunPod {call}: timed out{after} {phase}", call=call, timeout_s=seconds
        )
    return RunPodConnectionError(
        f"RunPod {call}: connection failed ({type(exc).__name__}: {exc})", call=call
    )


def _json_object(response: httpx.Response, call: str, key: str) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        raise RunPodProtocolError(
            f"RunPod {call}: response is not JSON (HTTP {response.status_code}, "
            f"content-type {response.headers.get('content-type', 'none')!r}): "
            f"{_excerpt(response, key)}",
            call=call,
            status_code=response.status_code,
        ) from None
    if not isinstance(data, dict):
        raise RunPodProtocolError(
            f"RunPod {call}: expected a JSON object, got {type(data).__name__}",
            call=call,
            status_code=response.status_code,
        )
    return data
