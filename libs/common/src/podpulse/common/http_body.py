"""A request body read within a byte limit and a deadline, optionally gunzipped.

The one bounded reader of podpulse's HTTP servers (the twin's API, the alerter's OTLP/HTTP
input). The server (uvicorn) neither bounds a body's size nor times it out, so a handler that
awaits the whole body lets a client send gigabytes, or declare more than it sends (or trickle
it) and hold a connection and a handler for as long as it likes. :func:`read_body` refuses
all of these as it reads, and a gzip bomb too: decompression stops one byte past the limit,
so a body never expands past it in memory.

It takes the body as chunks (Starlette's ``request.stream()``) and the declared
``Content-Length``, so it needs no web framework; the caller answers :class:`BodyRefused`
in its own error format.
"""

from __future__ import annotations

import asyncio
import re
import zlib
from collections.abc import AsyncIterable

__all__ = ["BodyRefused", "read_body"]

# ASCII digits only (str.isdigit() accepts "²", which int() refuses), and few enough that
# int() is cheap; a longer declared length is left to the count of the bytes read.
_LENGTH = re.compile(r"[0-9]{1,18}")


class BodyRefused(Exception):
    """The body was not taken: ``status`` (400, 408 or 413) and a message for the client.

    The body was not read through, so the connection cannot carry another request as it is.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def read_body(
    chunks: AsyncIterable[bytes],
    *,
    limit: int,
    timeout_s: float,
    declared: str | None = None,
    gunzip: bool = False,
) -> bytes:
    """The whole body of *chunks*, gunzipped with *gunzip*, or :class:`BodyRefused`.

    413 for a body over *limit* bytes (as *declared* in ``Content-Length``, as received, or
    once gunzipped), without buffering it all; 408 for one not complete within *timeout_s*;
    400 for a gzip stream that is broken, ends early or has data after its end.
    """
    size = _declared_size(declared)
    if size is not None and size > limit:
        raise BodyRefused(413, f"request body of {size} bytes is over the {limit}-byte limit")
    received = 0
    out = bytearray()
    inflate = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS) if gunzip else None
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in chunks:
                received += len(chunk)
                if received > limit:
                    raise BodyRefused(413, f"request body is over the {limit}-byte limit")
                if inflate is not None:
                    out += _inflate(inflate, chunk, len(out), limit)
                else:
                    out += chunk
    except TimeoutError:
        of = f" of {declared}" if declared else ""
        raise BodyRefused(
            408, f"request body incomplete after {timeout_s:g} s ({received}{of} bytes received)"
        ) from None
    if inflate is not None:
        if not inflate.eof:
            raise BodyRefused(400, "gzip stream ends early")
        if inflate.unused_data:
            raise BodyRefused(400, "data after the end of the gzip stream")
    return bytes(out)


def _declared_size(declared: str | None) -> int | None:
    if declared is None or not _LENGTH.fullmatch(declared):
        return None
    return int(declared)


def _inflate(inflate: zlib._Decompress, chunk: bytes, have: int, limit: int) -> bytes:
    """*chunk* gunzipped onto *have* bytes, refusing output past *limit* or data after the end."""
    if inflate.eof:
        if chunk:
            raise BodyRefused(400, "data after the end of the gzip stream")
        return b""
    try:
        # At most one byte past the limit: enough to know it is over, never a bomb's worth.
        data = inflate.decompress(chunk, limit + 1 - have)
    except zlib.error as exc:
        raise BodyRefused(400, f"not a gzip stream ({exc})") from None
    if have + len(data) > limit or inflate.unconsumed_tail:
        raise BodyRefused(413, f"request body is over the {limit}-byte limit once gunzipped")
    return data
