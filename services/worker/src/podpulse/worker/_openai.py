"""RunPod's OpenAI-compatible route, as the worker sees it: a job naming a route and a body.

RunPod turns ``POST {base}/{endpoint}/openai/v1/chat/completions`` (and ``GET .../models``)
into a job whose input is ``{"openai_route": "/v1/chat/completions", "openai_input": <body>}``
and relays what the handler yields: server-sent events when the body asks to stream, one JSON
object otherwise (runpod-workers/worker-vllm does the same). Here the OpenAI body is read
into the worker's own :class:`JobInput`, so a chat request is checked by the same reader and
built into the same prompt as a native job; only the names differ (``max_tokens`` is
``max_new_tokens``), and errors name the client's field in OpenAI's error schema.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ._job_input import JobInput

__all__ = [
    "CHAT_ROUTE",
    "MODELS_ROUTE",
    "ChatRequest",
    "ChatStream",
    "OpenAIInputError",
    "chat_completion",
    "error_body",
    "model_list",
    "read_chat",
]

CHAT_ROUTE = "/v1/chat/completions"
MODELS_ROUTE = "/v1/models"
_OWNER = "podpulse"
_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}")


def error_body(
    message: str, *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """OpenAI's error object for a request the client must fix (the platform answers 400)."""
    return {
        "error": {
            "message": message,
            "type": "invalid_request_error",
            "param": param,
            "code": code,
        }
    }


class OpenAIInputError(ValueError):
    """A chat request that cannot be served; ``body`` is the OpenAI error to answer with."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.body = error_body(message, param=param, code=code)


class _TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    type: Literal["text"]
    text: str


class _ChatMessage(BaseModel):
    # Unknown keys (tool calls, audio) are refused: silently dropping them changes the chat.
    model_config = ConfigDict(extra="forbid", strict=True)

    # "developer" is what newer OpenAI models call the system message.
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[_TextPart]
    name: str | None = None

    def for_job(self) -> dict[str, str]:
        """The message as the job reader takes it: a role it knows and plain text."""
        text = self.content
        if not isinstance(text, str):
            text = "".join(part.text for part in text)
        return {"role": "system" if self.role == "developer" else self.role, "content": text}


class _StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    include_usage: bool = False


class ChatRequest(BaseModel):
    """The chat-completions fields this worker honours; sampling values are checked by
    :class:`JobInput` (one reader for them), so they are passed through untyped here."""

    model_config = ConfigDict(extra="forbid", strict=True)

    messages: Annotated[list[_ChatMessage], Field(min_length=1)]
    # The endpoint serves one model: whatever name the client uses, that model answers.
    model: str | None = None
    max_tokens: Any = None
    max_completion_tokens: Any = None
    temperature: Any = None
    top_p: Any = None
    seed: Any = None
    stop: Any = None
    stream: bool = False
    stream_options: _StreamOptions | None = None
    n: Literal[1] | None = None
    user: str | None = None

    @property
    def include_usage(self) -> bool:
        """Whether a streamed answer ends with a usage chunk."""
        return self.stream_options is not None and self.stream_options.include_usage


def read_chat(body: object, *, max_new_tokens_limit: int) -> tuple[ChatRequest, JobInput]:
    """The chat request and the job input it maps to; :class:`OpenAIInputError` when invalid."""
    if not isinstance(body, dict):
        raise OpenAIInputError("the request body must be a JSON object")
    try:
        chat = ChatRequest.model_validate(body)
    except ValidationError as exc:
        raise _input_error(exc, {}) from None
    if chat.stream_options is not None and not chat.stream:
        raise OpenAIInputError(
            "stream_options is only allowed when stream is true", param="stream_options"
        )
    if chat.max_tokens is not None and chat.max_completion_tokens is not None:
        raise OpenAIInputError(
            "give max_tokens or max_completion_tokens, not both", param="max_completion_tokens"
        )
    fields: dict[str, Any] = {"messages": [m.for_job() for m in chat.messages]}
    # Our names for theirs, to name their field again in an error.
    names: dict[str, str] = {}
    for name in ("max_tokens", "max_completion_tokens"):
        if getattr(chat, name) is not None:
            fields["max_new_tokens"], names["max_new_tokens"] = getattr(chat, name), name
    for name in ("temperature", "top_p", "seed", "stop"):
        if getattr(chat, name) is not None:
            fields[name] = getattr(chat, name)
    try:
        request = JobInput.model_validate(
            fields, context={"max_new_tokens_limit": max_new_tokens_limit}
        )
    except ValidationError as exc:
        raise _input_error(exc, names) from None
    return chat, request


def _input_error(exc: ValidationError, names: dict[str, str]) -> OpenAIInputError:
    """The first few problems as one message; ``param`` is the first one's field."""
    parts: list[str] = []
    params: list[str | None] = []
    # loc and msg only: pydantic's input echo could carry the customer's personal details.
    for err in exc.errors(include_input=False, include_url=False)[:5]:
        loc = [str(p) for p in err["loc"]]
        if loc:
            loc[0] = names.get(loc[0], loc[0])
        if loc and err["type"] == "extra_forbidden" and not _FIELD_NAME.fullmatch(loc[-1]):
            loc[-1] = "<unrecognised name>"
        where = ".".join(loc) or None
        params.append(where)
        parts.append(f"{where}: {err['msg']}" if where else err["msg"])
    return OpenAIInputError("invalid request: " + "; ".join(parts), param=params[0])


def model_list(model: str, created: int) -> dict[str, Any]:
    """``GET /v1/models``: the one model this worker serves."""
    return {
        "object": "list",
        "data": [{"id": model, "object": "model", "created": created, "owned_by": _OWNER}],
    }


def _usage(input_tokens: int, output_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": input_tokens,
        "completion_tokens": output_tokens,
        "total_tokens": input_tokens + output_tokens,
    }


def chat_completion(completion_id: str, created: int, answer: dict[str, Any]) -> dict[str, Any]:
    """The ``chat.completion`` object for a whole answer (the handler's output dict)."""
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": answer["model"],
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer["text"]},
                "logprobs": None,
                "finish_reason": answer["finish_reason"],
            }
        ],
        "usage": _usage(answer["usage"]["input_tokens"], answer["usage"]["output_tokens"]),
    }


def _event(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"


class ChatStream:
    """Server-sent events of one streamed chat completion, as OpenAI writes them."""

    def __init__(self, completion_id: str, created: int, model: str, *, include_usage: bool):
        self._head = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
        }
        self._include_usage = include_usage
        self._first = True

    def _chunk(self, delta: dict[str, str], finish_reason: str | None) -> dict[str, Any]:
        chunk: dict[str, Any] = {
            **self._head,
            "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            ],
        }
        if self._include_usage:
            chunk["usage"] = None  # OpenAI: null on every chunk but the usage one
        return chunk

    def text(self, text: str) -> str:
        """One event with new text (the first also names the assistant role)."""
        delta = {"role": "assistant", "content": text} if self._first else {"content": text}
        self._first = False
        return _event(self._chunk(delta, None))

    def end(self, finish_reason: str, input_tokens: int, output_tokens: int) -> str:
        """The finishing event, the usage event if asked, and [DONE]."""
        delta: dict[str, str] = {"role": "assistant"} if self._first else {}
        events = [_event(self._chunk(delta, finish_reason))]
        if self._include_usage:
            usage = {**self._head, "choices": [], "usage": _usage(input_tokens, output_tokens)}
            events.append(_event(usage))
        events.append("data: [DONE]\n\n")
        return "".join(events)
