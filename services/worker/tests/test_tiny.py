"""The tiny CPU model: built offline, deterministic, cached, and loaded like the real one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from podpulse.worker.tiny import TINY_MODEL_NAME, ensure_tiny_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_tiny_model(tmp_path_factory.getbasetemp() / "podpulse-cache")


def test_tiny_model_loads_through_the_auto_classes_as_qwen2(tiny_dir: Path) -> None:
    """The folder loads via AutoModelForCausalLM/AutoTokenizer as a small Qwen2 with ChatML."""
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    assert model.config.model_type == "qwen2"
    assert model.config.num_hidden_layers == 2
    assert model.config.vocab_size == len(tokenizer)
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Which skills?"}], tokenize=False, add_generation_prompt=True
    )
    assert isinstance(text, str)
    assert text.endswith("<|im_start|>user\nWhich skills?<|im_end|>\n<|im_start|>assistant\n")
    ids = tokenizer.encode("<|im_end|>", add_special_tokens=False)
    assert ids == [tokenizer.eos_token_id]
    # Byte-level BPE: any text round-trips, including characters never seen in training.
    assert tokenizer.decode(tokenizer.encode("Zürich → 東京", add_special_tokens=False)) == (
        "Zürich → 東京"
    )


def test_second_call_reuses_the_cached_folder(tiny_dir: Path) -> None:
    """A cached model is returned as is: the same folder, its weights file never rewritten."""
    before = (tiny_dir / "model.safetensors").stat().st_mtime_ns
    again = ensure_tiny_model(tiny_dir.parent)
    assert again == tiny_dir
    assert (tiny_dir / "model.safetensors").stat().st_mtime_ns == before


def test_builds_are_deterministic(tiny_dir: Path, tmp_path: Path) -> None:
    """Building again elsewhere writes byte-identical weights and tokenizer."""
    other = ensure_tiny_model(tmp_path)
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (other / name).read_bytes() == (tiny_dir / name).read_bytes(), name


def test_two_processes_building_at_once_both_succeed(tmp_path: Path) -> None:
    """Concurrent builders race safely: both print the one folder, no staging dirs remain."""
    command = [sys.executable, "-m", "podpulse.worker.tiny", str(tmp_path)]
    procs = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)
    ]
    outputs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e.decode()[-500:] for _, e in outputs]
    assert {o.decode().strip() for o, _ in outputs} == {str(tmp_path / TINY_MODEL_NAME)}
    assert [p.name for p in tmp_path.iterdir()] == [TINY_MODEL_NAME]
    assert (tmp_path / TINY_MODEL_NAME / "model.safetensors").is_file()
