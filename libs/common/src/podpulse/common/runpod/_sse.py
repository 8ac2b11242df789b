"""Server-sent events: the ``data`` of each event of a ``text/event-stream`` body.

An event ends at a blank line; its ``data:`` lines (one optional space after the colon) are
joined with newlines; comment lines (``:``, often pings) and other fields are skipped. Each
event is handed on the moment its blank line arrives, so a caller timing events sees when
each one reached the client, not when the body ended.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator

__all__ = ["sse_data"]


async def sse_data(text: AsyncIterable[str]) -> AsyncIterator[str]:
    """The data of each complete event in ``text`` (decoded pieces of the body, any split)."""
    buffer = ""
    async for piece in text:
        buffer += piece.replace("\r\n", "\n")
        while "\n\n" in buffer:
            event, buffer = buffer.split("\n\n", 1)
            data = _data(event)
            if data is not None:
                yield data
    # A body that ends without the final blank line still delivers its last event.
    if buffer.strip():
        data = _data(buffer)
        if data is not None:
            yield data


def _data(event: str) -> str | None:
    lines = [line for line in event.split("\n") if line.startswith("data:")]
    if not lines:
        return None
    return "\n".join(line[5:].removeprefix(" ") for line in lines)
