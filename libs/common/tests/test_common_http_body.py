"""podpulse.common.http_body: the bounded body reader the twin and the alerter share."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Awaitable, Iterable

import pytest

from podpulse.common.http_body import BodyRefused, read_body


async def _chunks(parts: Iterable[bytes], *, then_stall: bool = False) -> AsyncIterator[bytes]:
    for part in parts:
        yield part
    if then_stall:
        await asyncio.Event().wait()  # a client that declared more than it sends


async def _refused(reading: Awaitable[bytes]) -> BodyRefused:
    with pytest.raises(BodyRefused) as caught:
        await reading
    return caught.value


async def test_a_body_within_the_limit_is_returned_whole() -> None:
    """Chunks within the limit come back joined; plain or gunzipped, the same bytes."""
    body = b"x" * 1000
    assert await read_body(_chunks([body[:300], body[300:]]), limit=1000, timeout_s=5) == body
    packed = gzip.compress(body)
    unpacked = await read_body(_chunks([packed[:10], packed[10:]]), limit=1000, timeout_s=5,
                               gunzip=True)  # fmt: skip
    assert unpacked == body


async def test_over_the_limit_declared_received_or_gunzipped_is_413() -> None:
    """A declared Content-Length over the limit is refused before a byte is read; a body that
    grows past it as it arrives, or once gunzipped (a bomb stops one byte past), is too."""
    declared = await _refused(
        read_body(_chunks([], then_stall=True), limit=10, timeout_s=5, declared="11")
    )
    assert (declared.status, declared.message) == (
        413,
        "request body of 11 bytes is over the 10-byte limit",
    )
    received = await _refused(read_body(_chunks([b"123456", b"78901"]), limit=10, timeout_s=5))
    assert (received.status, received.message) == (413, "request body is over the 10-byte limit")
    bomb = await _refused(
        read_body(_chunks([gzip.compress(b"\0" * 100_000)]), limit=1000, timeout_s=5, gunzip=True)
    )
    assert (bomb.status, bomb.message) == (
        413,
        "request body is over the 1000-byte limit once gunzipped",
    )


async def test_a_body_not_complete_in_time_is_408_naming_what_arrived() -> None:
    """A body that stops arriving is refused after timeout_s, saying how much came of what."""
    stalled = _chunks([b"0123456789"], then_stall=True)
    late = await _refused(read_body(stalled, limit=1000, timeout_s=0.05, declared="1000"))
    assert (late.status, late.message) == (
        408,
        "request body incomplete after 0.05 s (10 of 1000 bytes received)",
    )


@pytest.mark.parametrize(
    ("parts", "message"),
    [
        ([b"not gzip at all"], "not a gzip stream"),
        ([gzip.compress(b"abc")[:-4]], "gzip stream ends early"),
        ([gzip.compress(b"abc") + b"junk"], "data after the end of the gzip stream"),
        ([gzip.compress(b"abc"), b"junk"], "data after the end of the gzip stream"),
    ],
)
async def test_a_broken_gzip_stream_is_400(parts: list[bytes], message: str) -> None:
    """Garbage, a stream cut short, or data after its end is a 400 with the reason."""
    refused = await _refused(read_body(_chunks(parts), limit=1000, timeout_s=5, gunzip=True))
    assert refused.status == 400
    assert refused.message.startswith(message)


async def test_a_declared_length_that_is_not_ascii_digits_is_left_to_the_count() -> None:
    """A Content-Length such as "²" (a digit to str.isdigit) neither crashes nor refuses."""
    assert await read_body(_chunks([b"ok"]), limit=10, timeout_s=5, declared="²") == b"ok"
