"""Fixtures shared by the worker's tests: the tiny model, its tokenizer and a prompt check."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from podpulse.worker._model import LoadedModel, load_model
from podpulse.worker._prompt import BuiltPrompt
from podpulse.worker.tiny import ensure_tiny_model

CONTROL_TOKENS = ("<|im_start|>", "<|im_end|>", "<|endoftext|>")

PromptCheck = Callable[[Sequence[Mapping[str, str]], BuiltPrompt], None]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_tiny_model(tmp_path_factory.getbasetemp() / "podpulse-cache")


@pytest.fixture(scope="session")
def loaded(tiny_model_dir: Path) -> LoadedModel:
    """The tiny model as the worker loads it (on the CPU: full precision), loaded once."""
    return load_model(str(tiny_model_dir))


@pytest.fixture(scope="session")
def qwen2_tokenizer(tiny_model_dir: Path):
    """The tokenizer the worker loads: AutoTokenizer picks Qwen2's class for a qwen2 model."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert type(tokenizer).__name__ == "Qwen2Tokenizer"
    return tokenizer


def chatml_runs(chat: Sequence[Mapping[str, str]]) -> list[str]:
    """What the ChatML template writes for ``chat``: its control tokens and the text between."""
    runs: list[str] = []
    for message in chat:
        runs += ["<|im_start|>", f"{message['role']}\n{message['content']}", "<|im_end|>", "\n"]
    return [*runs, "<|im_start|>", "assistant\n"]


def prompt_runs(tokenizer, ids: Sequence[int]) -> list[str]:
    """``ids`` read back as control tokens (by name) and the decoded text between them."""
    control = {tokenizer.convert_tokens_to_ids(token): token for token in CONTROL_TOKENS}
    runs: list[str] = []
    text: list[int] = []
    for token_id in ids:
        if token_id in control:
            if text:
                runs.append(tokenizer.decode(text))
                text = []
            runs.append(control[token_id])
        else:
            text.append(token_id)
    if text:
        runs.append(tokenizer.decode(text))
    return runs


def check_template_tokens_only(tokenizer) -> PromptCheck:
    """A check that a prompt's control ids are the template's, in place, and the rest is text.

    Text is compared in NFC: Qwen2's tokenizer normalises what it encodes to NFC.
    """

    def check(chat: Sequence[Mapping[str, str]], built: BuiltPrompt) -> None:
        def nfc(runs: list[str]) -> list[str]:
            return [unicodedata.normalize("NFC", run) for run in runs]

        assert nfc(prompt_runs(tokenizer, built.input_ids)) == nfc(chatml_runs(chat))
        assert "".join(chatml_runs(chat)) == built.text

    return check


@pytest.fixture(scope="session")
def prompt_check_for() -> Callable[[object], PromptCheck]:
    """``check_template_tokens_only``, for tests to build a check for their tokenizer."""
    return check_template_tokens_only
