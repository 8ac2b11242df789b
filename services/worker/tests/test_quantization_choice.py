"""QUANTIZATION=auto by fit and by measured speed: the candidates, the probe, the choice."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import torch
from transformers import AutoConfig, Qwen2Config

from podpulse.worker._model import ModelLoadError, quantization_candidates, weight_bytes
from podpulse.worker._quant import PRECISION_ORDER, Quantization
from podpulse.worker._quant_probe import ProbeResult, choose_by_speed, probe_speeds
from podpulse.worker.tiny import ensure_tiny_model

GIB = 1024**3
QWEN2_7B = Qwen2Config(
    hidden_size=3584, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
    intermediate_size=18944, vocab_size=152064, max_position_embeddings=32768,
)  # fmt: skip
EVERYTHING = frozenset(PRECISION_ORDER)


def measured(**speeds: float | None) -> list[ProbeResult]:
    return [
        ProbeResult(q.replace("_", "-"), s, 1.0 if s else None, 1.0)  # type: ignore[arg-type]  # a str, not the Literal
        for q, s in speeds.items()
    ]


def test_torchao_weights_are_sized_like_their_width() -> None:
    """torchao int8 is int8's size; its int4 (bf16 scale and zero per 128) a little under nf4."""
    sizes = {q: weight_bytes(QWEN2_7B, q, torch.bfloat16) for q in PRECISION_ORDER}
    assert sizes["torchao-int8"] == sizes["int8"]
    assert 4.5e9 < sizes["torchao-int4"] < sizes["nf4"] < 6.0e9


def test_auto_candidates_are_every_installed_choice_that_fits() -> None:
    """Highest precision first; what is not installed or does not fit is left out."""
    sizes = {q: weight_bytes(QWEN2_7B, q, torch.bfloat16) for q in PRECISION_ORDER}
    common: dict[str, Any] = {"on_cuda": True, "sizes": sizes, "reserve_bytes": 2 * GIB}
    assert quantization_candidates("auto", usable=EVERYTHING, free_bytes=23 * GIB, **common) == [
        "none", "int8", "torchao-int8", "nf4", "torchao-int4",
    ]  # fmt: skip
    assert quantization_candidates("auto", usable=EVERYTHING, free_bytes=9 * GIB, **common) == [
        "nf4", "torchao-int4",
    ]  # fmt: skip
    no_bnb: frozenset[Quantization] = frozenset({"none", "torchao-int8", "torchao-int4"})
    assert quantization_candidates("auto", usable=no_bnb, free_bytes=12 * GIB, **common) == [
        "torchao-int8", "torchao-int4",
    ]  # fmt: skip
    named = quantization_candidates("torchao-int4", usable=EVERYTHING, free_bytes=None, **common)
    assert named == ["torchao-int4"]
    with pytest.raises(ModelLoadError, match="WORKER_QUANTIZATION=torchao-int4 needs torchao"):
        quantization_candidates(
            "torchao-int4", usable=frozenset({"none"}), free_bytes=None, **common
        )
    with pytest.raises(ModelLoadError, match=r"\(bitsandbytes and torchao not installed\)"):
        quantization_candidates("auto", usable=frozenset({"none"}), free_bytes=8 * GIB, **common)
    assert quantization_candidates("nf4", usable=EVERYTHING, free_bytes=None, **{
        **common, "on_cuda": False,
    }) == ["none"]  # fmt: skip


def test_auto_keeps_precision_while_fast_enough_else_takes_the_fastest() -> None:
    """The highest precision reaching the target wins; below it everywhere, the fastest does;
    unmeasured candidates never win over measured ones."""
    candidates: list[Quantization] = ["none", "int8", "nf4", "torchao-int4"]
    probes = measured(none=40.0, int8=12.0, nf4=30.0, torchao_int4=95.0)
    assert choose_by_speed(candidates, probes, 30.0)[0] == "none"
    choice, reason = choose_by_speed(candidates, probes, 60.0)
    assert choice == "torchao-int4"
    assert "60" in reason
    assert choose_by_speed(candidates, probes, 200.0)[0] == "torchao-int4"
    failed = measured(none=None, int8=12.0, nf4=None, torchao_int4=None)
    assert choose_by_speed(candidates, failed, 60.0)[0] == "int8"
    assert choose_by_speed(candidates, measured(none=None), 60.0)[0] == "none"


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return AutoConfig.from_pretrained(
        ensure_tiny_model(tmp_path_factory.getbasetemp() / "podpulse-cache")
    )


def test_probe_times_each_candidate_and_records_a_failing_one(tiny_config) -> None:
    """Every candidate gets a speed estimate or the one-line reason it has none."""

    def quantize(_model: Any, choice: Quantization, _dtype: torch.dtype) -> None:
        if choice == "nf4":
            raise RuntimeError("no 4-bit kernel for this device\nsecond line")

    results = probe_speeds(
        tiny_config, ["none", "nf4", "int8"], device=torch.device("cpu"), dtype=torch.float32,
        decode="static", budget_s=60, steps=2, quantize=quantize,
    )  # fmt: skip
    assert [r.quantization for r in results] == ["none", "nf4", "int8"]
    none, nf4, int8 = results
    assert none.tokens_per_second is not None
    assert none.tokens_per_second > 0
    assert int8.tokens_per_second is not None
    assert nf4.tokens_per_second is None
    assert nf4.error == "RuntimeError: no 4-bit kernel for this device"


def test_probe_starts_no_candidate_once_its_budget_is_spent(tiny_config) -> None:
    """With a clock that has run past the budget after the first candidate, the rest wait."""
    ticks = itertools.count(0.0, 1.0)
    results = probe_speeds(
        tiny_config, ["none", "int8", "nf4"], device=torch.device("cpu"), dtype=torch.float32,
        decode="static", budget_s=3, steps=1, quantize=lambda *_: None,
        clock=lambda: next(ticks),
    )  # fmt: skip
    assert results[0].tokens_per_second is not None
    assert [r.error for r in results[1:]] == ["not probed: budget spent"] * 2
