"""Answer validation: each objective check, its threshold, and robustness on any text."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from podpulse.common.testing import cases
from podpulse.worker._prompt import SYSTEM_PROMPT
from podpulse.worker._validation import ValidationThresholds, validate_answer

GOOD = (
    "Start with Python and statistics, then build two small projects that use real data. "
    "Ask your manager about an internal transfer before you apply elsewhere."
)
DEFAULT = ValidationThresholds()


def checks(text: str, finish: str = "stop", **kwargs) -> list[str]:
    result = validate_answer(text, finish_reason=finish, thresholds=DEFAULT, **kwargs)
    assert result.passed == (not result.failures)
    return [f.check for f in result.failures]


def test_a_good_answer_passes_every_check() -> None:
    """A normal, complete answer has no failures and serialises with passed=True."""
    result = validate_answer(
        GOOD, finish_reason="stop", thresholds=DEFAULT, system_prompt=SYSTEM_PROMPT,
        user_text="I am a data analyst with five years of experience; how do I move into ML?",
    )  # fmt: skip
    assert result.to_dict() == {"passed": True, "failures": []}


def test_empty_and_short_answers_fail() -> None:
    """Blank text fails 'empty'; fewer than min_words fails 'too_short' with its numbers."""
    assert checks("   \n") == ["empty"]
    result = validate_answer("Learn SQL.", finish_reason="stop", thresholds=DEFAULT)
    assert result.to_dict()["failures"] == [
        {"check": "too_short", "message": "fewer words than min_words", "value": 2, "threshold": 3}
    ]


def test_long_answers_fail_against_max_words() -> None:
    """More words than max_words fails 'too_long'; the threshold is configurable."""
    text = " ".join(f"word{i}" for i in range(30)) + "."
    assert checks(text) == []
    tight = ValidationThresholds(max_words=20)
    result = validate_answer(text, finish_reason="stop", thresholds=tight)
    assert [f.check for f in result.failures] == ["too_long"]


def test_repetitive_answers_fail_the_ngram_ratio() -> None:
    """A looping answer exceeds max_repeat_ratio; the same words without the loop pass."""
    assert "repetition" in checks("you should learn python " * 20)
    lenient = ValidationThresholds(max_repeat_ratio=0.99)
    result = validate_answer("you should learn python " * 20, finish_reason="stop",
                             thresholds=lenient)  # fmt: skip
    assert result.passed


def test_system_prompt_leak_and_prompt_echo_are_caught() -> None:
    """Eight verbatim words of the system prompt or of the user's message fail the answer."""
    leak = "Sure. " + " ".join(SYSTEM_PROMPT.split()[:10]) + " and so on."
    assert checks(leak, system_prompt=SYSTEM_PROMPT) == ["system_prompt_leak"]
    question = "I am a nurse in Berlin and want to become a software engineer soon"
    echo = f"You said: {question}. Start with Python."
    assert checks(echo, user_text=question) == ["prompt_echo"]
    # Quoting a few words of the question is normal advice, not an echo.
    assert (
        checks("As a nurse in Berlin, start with Python and a bootcamp.", user_text=question) == []
    )


def test_cut_off_only_when_stopped_by_the_token_limit_mid_sentence() -> None:
    """finish_reason 'length' without a closing stop fails 'cut_off'; a finished sentence passes."""
    assert checks("Start with Python and then", finish="length") == ["cut_off"]
    assert checks("Start with Python and then SQL.", finish="length") == []
    assert checks("Start with Python and then", finish="stop") == []


@settings(max_examples=cases(150), deadline=None)
@given(text=st.text(max_size=400), finish=st.sampled_from(["stop", "length"]),
       user=st.text(max_size=100))  # fmt: skip
def test_validation_never_raises_and_is_consistent(text: str, finish: str, user: str) -> None:
    """Any text validates without raising; passed is exactly 'no failures'."""
    result = validate_answer(text, finish_reason=finish, thresholds=DEFAULT,
                             system_prompt=SYSTEM_PROMPT, user_text=user)  # fmt: skip
    body = result.to_dict()
    assert body["passed"] is (body["failures"] == [])
    assert all(f["check"] for f in body["failures"])
