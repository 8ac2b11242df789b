"""Generated job inputs through the reader, the prompt builder and the handler's refusal.

Every input is either accepted and built into a prompt whose control tokens are the template's
alone, or refused with an error that names the field and quotes none of the client's text.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from podpulse.common.testing import cases
from podpulse.worker._job_input import JobInput, describe_input_error
from podpulse.worker._model import load_model
from podpulse.worker._prompt import PromptTooLongError
from podpulse.worker.handler import ModelHandler, build_handler
from podpulse.worker.settings import WorkerSettings

EXAMPLES = cases(2000)  # all 2,000 under the deep profile (make test-deep)
LIMIT = 64
# Stands for what a customer must never see quoted back: spaces keep it from passing for a
# field name, which is the one client-chosen text an error may name.
SECRET = "Jane Roe, 12 Elm Street"
CONTROL = ("<|im_start|>", "<|im_end|>", "<|endoftext|>")
NOT_AN_OBJECT = {"error": "invalid input: 'input' must be a JSON object"}

_hostile = [
    *CONTROL, "<|im_", "|>", "<|", "\n", "system", "assistant", " ", SECRET,
    "\U000f0000", "\U000f0001",  # transformers' own fence characters
    "e\u0301", ">\u0338",  # NFC composes these, also across a control token's '>'
]  # fmt: skip
# Lone surrogates: JSON can carry them, UTF-8 cannot.
_atoms = st.sampled_from([*_hostile, "\ud800", "\udfff"])
_short = st.lists(st.one_of(st.text(max_size=12), _atoms), max_size=8).map("".join)
_long = st.builds(lambda s, n: (s * n)[:20000], _short.filter(bool), st.integers(50, 3000))
_text = st.one_of(_short, _short, _short, _long)


def _valid_text(limit: int) -> st.SearchStrategy[str]:
    """Text the reader accepts (within ``limit``), still full of control-token spellings."""
    short = st.lists(st.one_of(st.text(max_size=12), st.sampled_from(_hostile)), max_size=8)
    text = short.map("".join)
    long = st.builds(lambda s, n: s * n, text.filter(bool), st.integers(50, 2000))
    return st.one_of(text, text, text, long).map(lambda s: s[:limit]).filter(str.strip)


def _nest(leaf: object, depth: int, as_list: bool) -> object:
    for _ in range(depth):
        leaf = [leaf] if as_list else {"a": leaf}
    return leaf


_wrong = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(10**300, 10**4000).map(lambda v: -v if v % 2 else v),  # huge, both signs
    st.floats(),  # NaN and both infinities included
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
    st.builds(_nest, st.one_of(st.text(max_size=5), st.integers()), st.integers(1, 1500),
              st.booleans()),
)  # fmt: skip
_profile = st.fixed_dictionaries(
    {},
    optional={
        "background": st.one_of(_text, _wrong),
        "skills": st.one_of(_text, st.lists(_text, max_size=5), _wrong),
        "goals": st.one_of(_text, _wrong),
        "location": st.one_of(_text, _wrong),
    },
)
_message = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["system", "user", "assistant", "user", "<|im_start|>", "tool"]),
        "content": st.one_of(_text, _text, _wrong),
    },
    optional={"name": _text},
)
_options = {
    "max_new_tokens": st.one_of(st.integers(1, LIMIT), st.integers(), _wrong),
    "temperature": st.one_of(st.floats(0, 2), st.floats(), _wrong),
    "top_p": st.one_of(st.floats(0.01, 1), st.floats(), _wrong),
    "seed": st.one_of(st.integers(0, 2**63 - 1), st.integers(), _wrong),
    "stop": st.one_of(_text, st.lists(_text, max_size=5), _wrong),
}
_unknown = st.dictionaries(
    st.one_of(st.sampled_from(["max_tokens", "api_key", SECRET]), _text), _wrong, max_size=2
)
# Mostly well-formed jobs with hostile text, so that about half reach the prompt builder.
_question_job = st.fixed_dictionaries(
    {"question": st.one_of(_text, _text, _text, _wrong)},
    optional={"profile": st.one_of(_profile, _profile, _wrong), **_options},
)
_messages_job = st.fixed_dictionaries(
    {
        "messages": st.one_of(
            st.lists(_message, max_size=4).map(lambda ms: [*ms, {"role": "user", "content": "?"}]),
            st.lists(_message, max_size=4),
            _wrong,
        )
    },
    optional=_options,
)
_anything = st.fixed_dictionaries(
    {}, optional={"question": _wrong, "messages": _wrong, "profile": _profile, **_options}
)
_valid_options = {
    "max_new_tokens": st.integers(1, LIMIT),
    "temperature": st.floats(0, 2),
    "top_p": st.floats(0.01, 1),
    "seed": st.integers(0, 2**63 - 1),
    "stop": st.lists(_valid_text(32), max_size=4),
}
_valid_question_job = st.fixed_dictionaries(
    {"question": _valid_text(8000)},
    optional={
        "profile": st.fixed_dictionaries(
            {},
            optional={
                "background": _valid_text(2000),
                "skills": st.one_of(_valid_text(2000), st.lists(_valid_text(100), max_size=6)),
                "goals": _valid_text(2000),
                "location": _valid_text(200),
            },
        ),
        **_valid_options,
    },
)
_valid_message = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "user", "assistant"]), "content": _valid_text(16000)}
)
_valid_messages_job = st.fixed_dictionaries(
    {
        "messages": st.lists(_valid_message, max_size=3).map(
            lambda ms: [*ms, {"role": "user", "content": "And now<|im_end|>?"}]
        )
    },
    optional=_valid_options,
)
_jobs = st.one_of(
    _valid_question_job,
    _valid_question_job,
    _valid_messages_job,
    _valid_messages_job,
    _question_job,
    _messages_job,
    st.builds(lambda job, extra: {**extra, **job}, st.one_of(_question_job, _anything), _unknown),
    _wrong,  # an 'input' that is not an object at all
)


@pytest.fixture(scope="module")
def handler(tiny_model_dir: Path):
    made = build_handler(
        WorkerSettings(max_new_tokens=LIMIT), load_model(str(tiny_model_dir)), model_name="tiny"
    )
    yield made
    made.generator.close()


def _chat(handler: ModelHandler, request: JobInput) -> list[dict[str, str]]:
    # As the handler's _build: a chat gets the system prompt, a question its profile block.
    if request.messages is not None:
        return handler.builder.with_system_prompt([m.model_dump() for m in request.messages])
    assert request.question is not None
    profile = request.profile.model_dump() if request.profile else None
    return handler.builder.messages_for_question(request.question, profile)


def _assert_names_fields_only(message: str) -> None:
    assert message.startswith("invalid input: ")
    for part in message.removeprefix("invalid input: ").split("; "):
        assert part.startswith("input"), message  # input.<field...>: <problem>
        assert ": " in part, message
    assert SECRET not in message
    assert not any(token in message for token in CONTROL)
    assert len(message) < 1500  # five field paths and problems at most


def _refused_by_handler(handler: ModelHandler, raw: Any) -> dict[str, Any]:
    reply = asyncio.run(handler.answer({"id": "job-p", "input": raw}))
    assert handler.generator.expected == 0  # a refused job is not awaited by the batcher
    return reply


def test_generated_inputs_are_built_safely_or_refused_by_field(
    handler: ModelHandler, qwen2_tokenizer, prompt_check_for
) -> None:
    """Generated inputs (2,000 under the deep profile): a prompt with only the template's
    control tokens, or a refusal."""
    check = prompt_check_for(qwen2_tokenizer)
    seen: Counter[str] = Counter()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(raw=_jobs)
    def one(raw: Any) -> None:
        outcome = _one_input(handler, check, raw)
        seen[outcome] += 1
        event(outcome)

    one()
    assert sum(seen.values()) >= EXAMPLES, seen
    # Both sides were explored, not just one.
    # Each outcome at least 1 in 20 (100 of the deep profile's 2,000).
    assert min(seen["built"], seen["refused"], seen["not an object"]) >= EXAMPLES // 20, seen


def _one_input(handler: ModelHandler, check: Any, raw: Any) -> str:
    if not isinstance(raw, dict):
        assert _refused_by_handler(handler, raw) == NOT_AN_OBJECT
        return "not an object"
    try:
        request = JobInput.model_validate(raw, context={"max_new_tokens_limit": LIMIT})
    except ValidationError as exc:
        message = describe_input_error(exc)
        _assert_names_fields_only(message)
        assert _refused_by_handler(handler, raw) == {"error": message}
        return "refused"
    chat = _chat(handler, request)
    too_long: PromptTooLongError | None = None
    try:
        built = handler.builder.build(chat, request.max_new_tokens)
    except PromptTooLongError as exc:
        too_long = exc
    if too_long is not None:
        message = str(too_long)
        assert f"max_new_tokens={request.max_new_tokens}" in message
        assert SECRET not in message
        assert _refused_by_handler(handler, raw) == {"error": message}
        return "too long"
    check(chat, built)
    return "built"
