"""A streamed job's text, decoded step by step so that the pieces add up to the whole answer.

Decoding each new token alone is wrong for byte-level tokenizers (Qwen2's): a character of
several UTF-8 bytes may span tokens, and a token decoded out of context can lose or gain a
space. So each step decodes a short window, from the last point where the text was complete,
and gives out only what the window added (the way text-generation-inference does); while the
window ends inside a character (the decode ends in U+FFFD), nothing goes out yet.

Text that could be the start of a stop string is held back too: the batcher cuts the answer
at the stop string, which must never have been sent. Nothing else waits. At the end,
:meth:`TextStream.finish` compares with the batcher's whole text and gives out what is left,
so the pieces always join into exactly the non-streamed answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Piece", "TextStream"]

# What a byte-level decode writes for an incomplete UTF-8 sequence.
_INCOMPLETE = "\ufffd"


@dataclass(frozen=True, slots=True)
class Piece:
    """New text for the client and the output tokens it took (a step may add no text)."""

    text: str
    tokens: int


class TextStream:
    """Turns a job's token ids, as the steps add them, into text pieces."""

    def __init__(self, tokenizer: Any, stop: tuple[str, ...] = ()) -> None:
        self._tokenizer = tokenizer
        self._stop = stop
        self._ids: list[int] = []
        # The window: ids before _start are text already fixed; ids up to _read are in _text.
        self._start = 0
        self._read = 0
        self._text = ""
        self._sent = 0  # characters of _text given out
        self._tokens = 0  # tokens pushed and not yet counted in a piece

    def _decode(self, ids: list[int]) -> str:
        text: str = self._tokenizer.decode(ids, skip_special_tokens=True)
        return text

    def push(self, ids: list[int]) -> Piece | None:
        """Add a step's token ids; the piece to send now, or None when no new text is safe."""
        self._ids.extend(ids)
        self._tokens += len(ids)
        before = self._decode(self._ids[self._start : self._read])
        after = self._decode(self._ids[self._start :])
        if len(after) > len(before) and not after.endswith(_INCOMPLETE):
            self._text += after[len(before) :]
            self._start, self._read = self._read, len(self._ids)
        end = self._safe_end()
        if end <= self._sent:
            # Tokens without text yet: counted with the next piece that has text.
            return None
        return self._give(end)

    def finish(self, final_text: str) -> Piece | None:
        """The rest, given the batcher's whole ``final_text``; None when nothing is left."""
        sent = self._text[: self._sent]
        if final_text.startswith(sent):
            self._text, self._sent = final_text, len(sent)
            end = len(final_text)
        else:  # cannot happen with a byte-level tokenizer; never send text twice
            end = self._sent
        if end <= self._sent and not self._tokens:
            return None
        return self._give(end)

    def _give(self, end: int) -> Piece:
        piece = Piece(self._text[self._sent : end], self._tokens)
        self._sent, self._tokens = end, 0
        return piece

    def _safe_end(self) -> int:
        """Where the text may be sent up to: before any stop string, or any start of one."""
        text, end = self._text, len(self._text)
        for stop in self._stop:
            # Text already sent holds no start of a stop string, so search only after it.
            found = text.find(stop, max(0, self._sent))
            if found >= 0:
                end = min(end, found)
                continue
            for size in range(min(len(stop) - 1, len(text)), 0, -1):
                if text.endswith(stop[:size]):
                    end = min(end, len(text) - size)
                    break
        return end
