"""Prompt building: the career-guidance system prompt, the profile block, the chat template.

The template's control tokens (``<|im_start|>``, ``<|im_end|>``, ...) are the only ones a
prompt holds: the same spellings typed by a client are encoded as plain text, so a question
cannot close its turn and open a system one. The client's text is kept as typed, not stripped.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = [
    "SYSTEM_PROMPT",
    "BuiltPrompt",
    "ChatTokenizer",
    "PromptBuilder",
    "PromptTooLongError",
    "render_profile",
]

SYSTEM_PROMPT = (
    "You are a career guidance assistant. Give practical, specific and honest advice that "
    "fits the person's background, skills, goals and location. Suggest concrete next steps, "
    "say when something depends on local conditions, and never invent facts about the person."
)

# Fixed order and labels: the same profile always renders to the same text, so the model sees
# one format in training-like prompts and the prompt cache of a future server stays warm.
_PROFILE_FIELDS = (
    ("background", "Background"),
    ("skills", "Skills"),
    ("goals", "Goals"),
    ("location", "Location"),
)


class ChatTokenizer(Protocol):
    """What the builder needs from a Hugging Face tokenizer."""

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any: ...

    def encode(self, text: str, **kwargs: Any) -> list[int]: ...

    def get_added_vocab(self) -> dict[str, int]: ...


class PromptTooLongError(ValueError):
    """The prompt plus the requested new tokens do not fit the model's context."""


@dataclass(frozen=True, slots=True)
class BuiltPrompt:
    """A rendered prompt: the text the model sees and its token ids."""

    text: str
    input_ids: list[int]
    system_prompt: str
    user_text: str


def _clean(value: str) -> str:
    # Collapse runs of whitespace so that "Python,\n  SQL" and "Python, SQL" render alike.
    return " ".join(value.split())


def render_profile(profile: Mapping[str, str | Sequence[str] | None] | None) -> str:
    """Render profile fields as a fixed-order bullet block; empty fields are left out."""
    if not profile:
        return ""
    lines = []
    for key, label in _PROFILE_FIELDS:
        value = profile.get(key)
        if value is None:
            continue
        if isinstance(value, str):
            text = _clean(value)
        else:
            text = ", ".join(c for c in (_clean(v) for v in value) if c)
        if text:
            lines.append(f"- {label}: {text}")
    if not lines:
        return ""
    return "My profile:\n" + "\n".join(lines)


class PromptBuilder:
    """Turns a question (with profile) or a chat into prompt ids that fit the context."""

    def __init__(
        self,
        tokenizer: ChatTokenizer,
        context_length: int,
        system_prompt: str = SYSTEM_PROMPT,
    ) -> None:
        self._tokenizer = tokenizer
        self.context_length = context_length
        self.system_prompt = system_prompt
        # The Rust tokenizer directly: transformers' encode wrapper costs more than the encoding.
        self._backend: Any = getattr(tokenizer, "backend_tokenizer", None)
        self._as_text = _control_tokens_as_text(tokenizer, self._backend)
        longest_first = sorted(self._as_text, key=len, reverse=True)
        self._control_re = (
            re.compile("|".join(map(re.escape, longest_first))) if longest_first else None
        )

    def messages_for_question(
        self, question: str, profile: Mapping[str, str | Sequence[str] | None] | None = None
    ) -> list[dict[str, str]]:
        """The chat for a single question: system prompt, then profile block and question."""
        block = render_profile(profile)
        content = f"{block}\n\nQuestion: {question.strip()}" if block else question.strip()
        return [
            {"role": "system", "content": self.system_prompt},
            {"role": "user", "content": content},
        ]

    def with_system_prompt(self, messages: Sequence[Mapping[str, str]]) -> list[dict[str, str]]:
        """The client's chat, with the career system prompt first unless it brings its own."""
        chat = [{"role": m["role"], "content": m["content"]} for m in messages]
        if not chat or chat[0]["role"] != "system":
            chat.insert(0, {"role": "system", "content": self.system_prompt})
        return chat

    def build(self, messages: Sequence[Mapping[str, str]], max_new_tokens: int) -> BuiltPrompt:
        """Render ``messages`` with the chat template and check the length against the context.

        Control-token spellings inside the messages become plain-text ids; the template's own
        control tokens are the only control ids in the result.
        """
        chat = [dict(m) for m in messages]
        separator = self._mark(chat)
        rendered = self._tokenizer.apply_chat_template(
            chat, tokenize=False, add_generation_prompt=True
        )
        if not isinstance(rendered, str):
            raise TypeError("the tokenizer's chat template did not render to text")
        if separator is None:
            text, ids = rendered, self._encode(rendered)
        else:
            text, ids = self._encode_marked(rendered.split(separator))
        if len(ids) + max_new_tokens > self.context_length:
            raise PromptTooLongError(
                f"prompt is {len(ids)} tokens; with max_new_tokens={max_new_tokens} it exceeds "
                f"the model's context of {self.context_length} tokens (shorten the input or "
                "lower max_new_tokens)"
            )
        system = messages[0]["content"] if messages and messages[0]["role"] == "system" else ""
        user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        return BuiltPrompt(text=text, input_ids=ids, system_prompt=system, user_text=user)

    def _mark(self, chat: list[dict[str, str]]) -> str | None:
        """Fence every control-token spelling in ``chat`` (in place); the fence, or None."""
        pattern = self._control_re
        if pattern is None or not any(pattern.search(v) for m in chat for v in m.values()):
            return None  # the common case: the text renders and encodes in one piece
        # A fresh random fence per prompt: a client cannot type one to forge a control token,
        # so nothing of theirs has to be escaped or removed.
        fence = f"\U000f0000{secrets.token_hex(16)}\U000f0001"
        for message in chat:
            for key, value in message.items():
                message[key] = pattern.sub(lambda m: f"{fence}{m.group()}{fence}", value)
        return fence

    def _encode_marked(self, pieces: list[str]) -> tuple[str, list[int]]:
        # Even pieces are template and text, odd ones a client's control-token spelling. The
        # tokenizer splits its input at added tokens anyway, so encoding the even pieces one
        # by one gives the ids encoding them whole would.
        if len(pieces) % 2 == 0:
            raise RuntimeError("the chat template dropped part of a message")
        ids: list[int] = []
        for index, piece in enumerate(pieces):
            if index % 2:
                as_text = self._as_text.get(piece)
                if as_text is None:
                    raise RuntimeError("the chat template split a control token in a message")
                ids.extend(as_text)
            elif piece:
                ids.extend(self._encode(piece))
        return "".join(pieces), ids

    def _encode(self, text: str) -> list[int]:
        # The template already wrote every special token; adding BOS/EOS again would change
        # what the model was fine-tuned on.
        if self._backend is not None:
            return list(self._backend.encode(text, add_special_tokens=False).ids)
        return list(self._tokenizer.encode(text, add_special_tokens=False))


def _control_tokens_as_text(tokenizer: ChatTokenizer, backend: Any) -> dict[str, list[int]]:
    """Each added token of ``tokenizer`` (the control tokens) and the ids that spell it as text.

    Every added token counts, special or not (Qwen2.5's ``<tool_call>`` is not special), except
    whitespace ones: those are text in any template.
    """
    control = {t: i for t, i in tokenizer.get_added_vocab().items() if t and not t.isspace()}
    newline = _encode_plain(tokenizer, backend, "\n")
    spelled: dict[str, list[int]] = {}
    for token in control:
        # After a newline, as in a prompt: a SentencePiece tokenizer would otherwise write the
        # word-start space it puts at the start of a string.
        ids = _encode_plain(tokenizer, backend, "\n" + token)
        if ids[: len(newline)] == newline:
            ids = ids[len(newline) :]
        else:
            ids = _encode_plain(tokenizer, backend, token)
        if set(ids) & set(control.values()):
            raise ValueError(f"the tokenizer cannot write {token!r} as plain text")
        spelled[token] = ids
    return spelled


def _encode_plain(tokenizer: ChatTokenizer, backend: Any, text: str) -> list[int]:
    """``text`` as plain text: no spelling in it becomes an added (control) token."""
    if backend is None:
        return list(tokenizer.encode(text, add_special_tokens=False, split_special_tokens=True))
    # The backend's pipeline without its added-token pass, the one that finds control tokens.
    if backend.normalizer is not None:
        text = backend.normalizer.normalize_str(text)
    words = [text]
    if backend.pre_tokenizer is not None:
        words = [word for word, _ in backend.pre_tokenizer.pre_tokenize_str(text)]
    return [token.id for word in words for token in backend.model.tokenize(word)]
