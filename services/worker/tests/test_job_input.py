"""The job input reader's refusals: the field and the problem, never the client's own text."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from podpulse.worker._job_input import JobInput, describe_input_error


def refusal(raw: object) -> str:
    with pytest.raises(ValidationError) as caught:
        JobInput.model_validate(raw, context={"max_new_tokens_limit": 64})
    return describe_input_error(caught.value)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            {"question": "a", "I am Jane Roe, HIV positive": 1},
            "invalid input: input.<unrecognised name>: Extra inputs are not permitted",
        ),
        (
            {"question": "a", "profile": {"password: hunter2": "x"}},
            "invalid input: input.profile.<unrecognised name>: Extra inputs are not permitted",
        ),
        (
            {"messages": [{"role": "user", "content": "x", "x" * 41: 1}]},
            "invalid input: input.messages.0.<unrecognised name>: Extra inputs are not permitted",
        ),
    ],
)
def test_an_unknown_key_that_is_not_a_field_name_is_not_echoed(raw, expected) -> None:
    """A key of free text (spaces, punctuation, over 40 characters) is refused but not quoted."""
    assert refusal(raw) == expected


def test_an_unknown_field_name_is_still_named() -> None:
    """A key shaped like a field name is named, so the client sees which one is wrong."""
    assert refusal({"question": "a", "max_tokens": 5}) == (
        "invalid input: input.max_tokens: Extra inputs are not permitted"
    )


@pytest.mark.parametrize("field", ["temperature", "top_p"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_sampling_numbers_are_refused_as_not_finite(field, value) -> None:
    """NaN and infinities are named as not finite, not as 'above the maximum'."""
    assert refusal({"question": "a", field: value}) == (
        f"invalid input: input.{field}: Input should be a finite number"
    )


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"question": "a\ud800b"}, "input.question"),
        ({"question": "a", "profile": {"skills": ["ok", "\udfff"]}}, "input.profile.skills"),
        ({"messages": [{"role": "user", "content": "\udc00"}]}, "input.messages.0.content"),
        ({"question": "a", "stop": "\ud83d"}, "input.stop"),
    ],
)
def test_a_lone_surrogate_is_refused_naming_its_field(raw, field) -> None:
    """Text that is not valid Unicode is refused at its field, before any tokenizer sees it."""
    message = refusal(raw)
    assert f"{field}" in message
    assert "unicode" in message
    assert "\ud800" not in message
    assert "\udfff" not in message
