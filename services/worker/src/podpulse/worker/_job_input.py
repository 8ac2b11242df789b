"""A job's ``input`` as the model handler accepts it: one pydantic model, errors by field.

Strict on purpose: a client sending ``"max_new_tokens": "64"`` or an unknown key learns at once
which field is wrong, instead of the worker guessing.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

__all__ = ["MAX_SEED", "JobInput", "Message", "Profile", "describe_input_error"]

MAX_SEED = 2**63 - 1

_Text = Annotated[str, StringConstraints(max_length=2000)]


class Profile(BaseModel):
    """What the customer told us about themselves; every field optional."""

    model_config = ConfigDict(extra="forbid", strict=True)

    background: _Text | None = None
    skills: (
        Annotated[list[Annotated[str, StringConstraints(max_length=100)]], Field(max_length=50)]
        | _Text
        | None
    ) = None
    goals: _Text | None = None
    location: Annotated[str, StringConstraints(max_length=200)] | None = None


class Message(BaseModel):
    """One chat turn."""

    model_config = ConfigDict(extra="forbid", strict=True)

    role: Literal["system", "user", "assistant"]
    content: Annotated[str, StringConstraints(max_length=16000)]


class JobInput(BaseModel):
    """A job's ``input``: ``messages`` or ``question`` (+ ``profile``), and generation bounds."""

    model_config = ConfigDict(extra="forbid", strict=True)

    messages: Annotated[list[Message], Field(min_length=1, max_length=64)] | None = None
    question: Annotated[str, StringConstraints(min_length=1, max_length=8000)] | None = None
    profile: Profile | None = None
    max_new_tokens: Annotated[int, Field(ge=1)] = 256
    # NaN compares false with every bound: refused as not finite rather than as "above 2".
    temperature: Annotated[float, Field(ge=0.0, le=2.0, allow_inf_nan=False)] = 0.7
    top_p: Annotated[float, Field(gt=0.0, le=1.0, allow_inf_nan=False)] = 1.0
    seed: Annotated[int, Field(ge=0, le=MAX_SEED)] | None = None
    stop: (
        Annotated[
            list[Annotated[str, StringConstraints(min_length=1, max_length=32)]],
            Field(max_length=4),
        ]
        | Annotated[str, StringConstraints(min_length=1, max_length=32)]
        | None
    ) = None
    # Answer as an async stream of chunks (one per decoded step) instead of one whole object.
    stream: bool = False

    @field_validator("max_new_tokens")
    @classmethod
    def _within_limit(cls, value: int, info: ValidationInfo) -> int:
        limit = (info.context or {}).get("max_new_tokens_limit")
        if limit is not None and value > limit:
            raise ValueError(f"must be at most {limit} on this worker")
        return value

    @model_validator(mode="after")
    def _default_within_limit(self, info: ValidationInfo) -> JobInput:
        # Field validators skip defaults: a worker capped below the default uses its cap.
        limit = (info.context or {}).get("max_new_tokens_limit")
        if "max_new_tokens" not in self.model_fields_set and limit is not None:
            self.max_new_tokens = min(self.max_new_tokens, limit)
        return self

    @model_validator(mode="after")
    def _one_source(self) -> JobInput:
        if (self.messages is None) == (self.question is None):
            raise ValueError("give exactly one of 'messages' or 'question'")
        if self.question is not None and not self.question.strip():
            raise ValueError("'question' is blank")
        if self.messages is not None:
            if self.profile is not None:
                raise ValueError("'profile' goes with 'question', not with 'messages'")
            if self.messages[-1].role != "user":
                raise ValueError("'messages' must end with a user message")
            if sum(len(m.content) for m in self.messages) > 64000:
                raise ValueError("'messages' hold more than 64000 characters in all")
        return self

    @property
    def stop_strings(self) -> tuple[str, ...]:
        """``stop`` as a tuple, whichever form the client sent."""
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


# A client's key is named in an error only when it looks like a field name: anything else
# (free text, a long string) could be the customer's words pasted into the wrong place.
_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}")
# Errors whose last location step is a key the client chose, not one of ours.
_CLIENT_KEY_ERRORS = frozenset({"extra_forbidden", "invalid_key"})


def describe_input_error(exc: ValidationError) -> str:
    """The job's validation errors as one message, each naming its field under ``input``."""
    # loc and msg only: pydantic's input echo could carry the customer's personal details.
    parts = []
    for err in exc.errors(include_input=False, include_url=False)[:5]:
        loc = [str(p) for p in err["loc"]]
        if loc and err["type"] in _CLIENT_KEY_ERRORS and not _FIELD_NAME.fullmatch(loc[-1]):
            loc[-1] = "<unrecognised name>"
        where = ".".join(("input", *loc))
        parts.append(f"{where}: {err['msg']}")
    return "invalid input: " + "; ".join(parts)
