"""Prompt building: the career-guidance system prompt, the profile block, the chat template."""

from __future__ import annotations

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
        """Render ``messages`` with the chat template and check the length against the context."""
        text = self._tokenizer.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=True
        )
        if not isinstance(text, str):
            raise TypeError("the tokenizer's chat template did not render to text")
        # The template already wrote every special token; adding BOS/EOS again would change
        # what the model was fine-tuned on.
        # The Rust tokenizer directly: transformers' encode wrapper costs more than the encoding.
        backend = getattr(self._tokenizer, "backend_tokenizer", None)
        if backend is not None:
            ids = list(backend.encode(text, add_special_tokens=False).ids)
        else:
            ids = list(self._tokenizer.encode(text, add_special_tokens=False))
        if len(ids) + max_new_tokens > self.context_length:
            raise PromptTooLongError(
                f"prompt is {len(ids)} tokens; with max_new_tokens={max_new_tokens} it exceeds "
                f"the model's context of {self.context_length} tokens (shorten the input or "
                "lower max_new_tokens)"
            )
        system = messages[0]["content"] if messages and messages[0]["role"] == "system" else ""
        user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        return BuiltPrompt(text=text, input_ids=ids, system_prompt=system, user_text=user)
