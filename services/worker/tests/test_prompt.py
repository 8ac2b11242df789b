"""PromptBuilder: system prompt, consistent profile rendering, chat template, context check."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from podpulse.worker._prompt import (
    SYSTEM_PROMPT,
    PromptBuilder,
    PromptTooLongError,
    render_profile,
)
from podpulse.worker.tiny import ensure_tiny_model


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    return AutoTokenizer.from_pretrained(
        ensure_tiny_model(tmp_path_factory.getbasetemp() / "podpulse-cache")
    )


def test_profile_renders_in_fixed_order_with_normalised_whitespace() -> None:
    """Fields come out background, skills, goals, location, whatever order they came in."""
    profile = {
        "location": " Berlin ",
        "goals": "Senior   role\nin 3 years",
        "skills": ["Python", " SQL ", ""],
        "background": "Nurse, 5 years",
    }
    assert render_profile(profile) == (
        "My profile:\n- Background: Nurse, 5 years\n- Skills: Python, SQL\n"
        "- Goals: Senior role in 3 years\n- Location: Berlin"
    )


def test_skills_as_text_or_list_render_alike() -> None:
    """A comma string and a list of skills give the same block; empty fields are omitted."""
    as_list = render_profile({"skills": ["Python", "SQL"], "goals": "  "})
    as_text = render_profile({"skills": "Python, SQL", "location": None})
    assert as_list == as_text == "My profile:\n- Skills: Python, SQL"
    assert render_profile({"goals": " "}) == ""
    assert render_profile(None) == ""


def test_question_gets_system_prompt_profile_and_generation_prompt(tokenizer) -> None:
    """A question renders through the chat template after the career system prompt."""
    builder = PromptBuilder(tokenizer, context_length=2048)
    chat = builder.messages_for_question("What next?", {"location": "Lagos"})
    built = builder.build(chat, max_new_tokens=16)
    assert built.text.startswith(f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n")
    assert "My profile:\n- Location: Lagos\n\nQuestion: What next?<|im_end|>" in built.text
    assert built.text.endswith("<|im_start|>assistant\n")
    # The template wrote every special token: encoding adds none of its own.
    assert built.input_ids == tokenizer.encode(built.text, add_special_tokens=False)
    assert built.system_prompt == SYSTEM_PROMPT
    assert built.user_text.endswith("What next?")


def test_client_system_message_is_kept_and_missing_one_is_added(tokenizer) -> None:
    """A chat keeps its own system message; without one, the career prompt goes first."""
    builder = PromptBuilder(tokenizer, context_length=2048)
    own = builder.with_system_prompt(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    )
    assert own[0] == {"role": "system", "content": "Be brief."}
    added = builder.with_system_prompt([{"role": "user", "content": "Hi"}])
    assert added[0] == {"role": "system", "content": SYSTEM_PROMPT}
    assert len(added) == 2


def test_prompt_over_the_context_is_refused_with_the_numbers(tokenizer) -> None:
    """Prompt + max_new_tokens beyond the context raises, saying both sizes and the limit."""
    builder = PromptBuilder(tokenizer, context_length=64)
    chat = builder.messages_for_question("How do I switch careers into data science?")
    with pytest.raises(PromptTooLongError, match=r"max_new_tokens=8 it exceeds .* 64 tokens"):
        builder.build(chat, max_new_tokens=8)
    short = PromptBuilder(tokenizer, context_length=4096).build(chat, max_new_tokens=8)
    assert len(short.input_ids) > 56
