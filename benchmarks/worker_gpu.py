"""Worker benchmark on a GPU: a random-weight model of Qwen2-7B's shape, bf16 (and nf4).

Measures decode tokens/s at batch 1 through the handler, through raw ``model.generate``, and
the memory-bandwidth bound (measured copy bandwidth ÷ weight bytes: every decode step reads
every weight once); then aggregate tokens/s with c = 1, 2, 4, 8 jobs on one worker. Weights
are random (the machine has no network), so EOS is disabled and every job decodes exactly
``--tokens`` tokens. The tokenizer is the tiny model's, built offline.

The handler row needs pydantic, pydantic-settings, structlog and opentelemetry-api; where they
are missing the script drives the batching core (``BatchGenerator``) directly and labels the
rows ``core``: the handler adds well under a millisecond per job on top of the core.

    python benchmarks/worker_gpu.py            # on the GPU machine (see device_worker_gpu.sh)
    python benchmarks/worker_gpu.py --tiny     # small shape, CPU or GPU: a smoke test
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import transformers

from podpulse.worker._batching import BatchGenerator, GenerationRequest
from podpulse.worker._model import LoadedModel
from podpulse.worker.tiny import ensure_tiny_model

hf: Any = transformers

QWEN2_7B = {"hidden_size": 3584, "num_hidden_layers": 28, "num_attention_heads": 28,
            "num_key_value_heads": 4, "intermediate_size": 18944, "vocab_size": 152064}  # fmt: skip
TINY = {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 8,
        "num_key_value_heads": 2, "intermediate_size": 512, "vocab_size": 4096}  # fmt: skip
STARTED = time.monotonic()


def build_model(shape: dict[str, int], device: torch.device, dtype: torch.dtype) -> Any:
    """Random weights, created on the device itself (a CPU init of 7B would take minutes)."""
    config = hf.Qwen2Config(**shape, max_position_embeddings=32768, tie_word_embeddings=False)
    config._attn_implementation = "sdpa"
    with torch.device(device):
        model = hf.Qwen2ForCausalLM._from_config(config, dtype=dtype)
    return model.eval()


def to_nf4(model: Any, dtype: torch.dtype) -> str | None:
    """Swap the decoder's nn.Linear layers for bitsandbytes nf4 ones, in place; None if done."""
    try:
        import bitsandbytes as bnb
    except ImportError as exc:
        return f"bitsandbytes not importable ({exc})"
    for layer in model.model.layers:
        for parent in (layer.self_attn, layer.mlp):
            for name, child in list(parent.named_children()):
                if not isinstance(child, torch.nn.Linear):
                    continue
                q = bnb.nn.Linear4bit(child.in_features, child.out_features,
                                      bias=child.bias is not None, compute_dtype=dtype,
                                      quant_type="nf4", device="meta")  # fmt: skip
                q.weight = bnb.nn.Params4bit(child.weight.data, requires_grad=False,
                                             quant_type="nf4").to(child.weight.device)  # fmt: skip
                if child.bias is not None:
                    q.bias = torch.nn.Parameter(child.bias.data, requires_grad=False)
                setattr(parent, name, q)
                del child
    torch.cuda.empty_cache()
    return None


def weight_bytes(model: Any) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def copy_bandwidth(device: torch.device) -> float:
    """Bytes/s of a large device-to-device copy (read + write), best of five."""
    if device.type != "cuda":
        return float("nan")
    n = 1 << 30
    src = torch.empty(n, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(5):
        torch.cuda.synchronize()
        t = time.perf_counter()
        dst.copy_(src)
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    del src, dst
    return 2 * n / best


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def raw_generate_tps(model: Any, ids: list[int], tokens: int, device: torch.device) -> float:
    x = torch.tensor([ids], device=device)
    kwargs = {"attention_mask": torch.ones_like(x), "max_new_tokens": tokens,
              "min_new_tokens": tokens, "do_sample": False, "pad_token_id": 0}  # fmt: skip
    with torch.inference_mode():
        t = time.perf_counter()
        model.generate(x, **kwargs)
        sync(device)
    return tokens / (time.perf_counter() - t)


def make_runner(
    loaded: LoadedModel, gen: BatchGenerator, question: str, tokens: int
) -> tuple[str, Callable[..., Awaitable[int]], list[int]]:
    """A coroutine running one job: through ModelHandler where importable, else the core."""
    try:
        from podpulse.worker.handler import ModelHandler
    except ImportError as exc:
        print(f"handler not importable ({exc}); driving the batching core directly")

        async def core(ids: list[int], question: str, tokens: int) -> int:
            result = await gen.generate(GenerationRequest(ids, tokens))
            return len(result.token_ids)

        chat = [{"role": "user", "content": question}]
        ids = loaded.tokenizer.apply_chat_template(chat, add_generation_prompt=True)["input_ids"]
        return "core", core, list(ids)
    handler = ModelHandler(loaded, gen, model_name="qwen2-7b-shape-random",
                           max_new_tokens_limit=4096)  # fmt: skip

    async def through_handler(ids: list[int], question: str, tokens: int) -> int:
        out = await handler.handle({"id": "bench", "input": {"question": question,
                                    "max_new_tokens": tokens, "temperature": 0}})  # fmt: skip
        if "error" in out:
            raise RuntimeError(out["error"])
        return int(out["usage"]["output_tokens"])

    # Raw generate gets exactly the prompt the handler builds, so both decode the same tokens.
    chat = handler.builder.messages_for_question(question, None)
    return "handler", through_handler, list(handler.builder.build(chat, tokens).input_ids)


async def concurrent_tps(run: Callable[..., Awaitable[int]], c: int, ids: list[int], question: str,
                         tokens: int) -> float:  # fmt: skip
    t = time.perf_counter()
    counts = await asyncio.gather(*(run(ids, f"{question} #{i}", tokens) for i in range(c)))
    return float(sum(counts)) / (time.perf_counter() - t)


@dataclass
class Bench:
    """What every precision's run shares."""

    tokenizer: Any
    args: argparse.Namespace
    device: torch.device
    bandwidth: float
    rows: list[dict[str, Any]] = field(default_factory=list)


def bench_precision(label: str, model: Any, bench: Bench) -> None:
    tokenizer, args, device, rows = bench.tokenizer, bench.args, bench.device, bench.rows
    bandwidth = bench.bandwidth
    loaded = LoadedModel(model=model, tokenizer=tokenizer, name=label, device=device,
                         dtype=next(model.parameters()).dtype, quantization="none",
                         context_length=32768, eos_token_ids=(), pad_token_id=0)  # fmt: skip
    gen = BatchGenerator(model, tokenizer, max_batch_size=max(args.concurrency),
                         eos_token_ids=(), pad_token_id=0, batch_wait_ms=5)  # fmt: skip
    question = "I have five years as a data analyst. How do I move into machine learning?"
    path, run, ids = make_runner(loaded, gen, question, args.tokens)
    wbytes = weight_bytes(model)
    bound = bandwidth / wbytes
    rows.append({"precision": label, "path": "bandwidth bound", "c": 1, "tps": bound,
                 "per_job": bound, "weights_gb": wbytes / 1e9})  # fmt: skip
    # The first run at a new shape pays for kernel loading and autotuning (several times
    # the steady per-token time on the H200): every path gets a full-length untimed run.
    raw_generate_tps(model, ids, args.tokens, device)
    raw = statistics.median(raw_generate_tps(model, ids, args.tokens, device) for _ in range(3))
    rows.append({"precision": label, "path": "raw generate", "c": 1, "tps": raw, "per_job": raw,
                 "weights_gb": wbytes / 1e9})  # fmt: skip

    async def sweep() -> None:
        for c in args.concurrency:
            if time.monotonic() - STARTED > args.budget_s:
                print(f"time budget reached; skipping c={c} for {label}")
                break
            await concurrent_tps(run, c, ids, question, args.tokens)  # warm this batch shape
            timed = [await concurrent_tps(run, c, ids, question, args.tokens) for _ in range(2)]
            tps = statistics.median(timed)
            rows.append({"precision": label, "path": path, "c": c, "tps": tps,
                         "per_job": tps / c, "weights_gb": wbytes / 1e9})  # fmt: skip

    asyncio.run(sweep())
    gen.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="small shape: a smoke test")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--no-nf4", action="store_true")
    parser.add_argument("--budget-s", type=float, default=300.0,
                        help="stop starting new measurements after this many seconds")  # fmt: skip
    args = parser.parse_args()
    try:  # per-job log lines would be measured too (and bury the table)
        import logging

        import structlog

        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    except ImportError:
        pass
    if args.tiny:
        args.tokens = min(args.tokens, 16)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    cache = os.environ.get("PODPULSE_CACHE_DIR") or Path(tempfile.gettempdir()) / "podpulse-cache"
    tokenizer = hf.AutoTokenizer.from_pretrained(ensure_tiny_model(cache))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device {name}; torch {torch.__version__}; transformers {transformers.__version__}")
    bandwidth = copy_bandwidth(device)
    model = build_model(TINY if args.tiny else QWEN2_7B, device, dtype)
    sync(device)
    print(f"model built in {time.monotonic() - STARTED:.1f} s since start")
    bench = Bench(tokenizer, args, device, bandwidth)
    rows = bench.rows
    bench_precision(str(dtype).removeprefix("torch."), model, bench)
    if device.type == "cuda" and not args.no_nf4:
        skipped = to_nf4(model, dtype)
        if skipped:
            print(f"nf4: skipped: {skipped}")
        elif time.monotonic() - STARTED < args.budget_s:
            bench_precision("nf4", model, bench)
    table = [
        f"{name}: copy bandwidth {bandwidth / 1e9:.0f} GB/s; {args.tokens} new tokens a job",
        f"{'precision':<10}{'path':<17}{'c':>3}{'agg tok/s':>11}{'tok/s/job':>11}"
        f"{'% of bound':>11}{'weights GB':>12}",
    ]
    bounds = {r["precision"]: r["tps"] for r in rows if r["path"] == "bandwidth bound"}
    for r in rows:
        share = 100 * r["per_job"] / bounds[r["precision"]] if bounds[r["precision"]] else 0
        table.append(f"{r['precision']:<10}{r['path']:<17}{r['c']:>3}{r['tps']:>11.1f}"
                     f"{r['per_job']:>11.1f}{share:>10.0f}%{r['weights_gb']:>12.2f}")  # fmt: skip
    text = "\n".join(table)
    print(text)
    if out := os.environ.get("OUT"):
        Path(out, "worker_gpu.txt").write_text(text + "\n", encoding="utf-8")
        Path(out, "worker_gpu.json").write_text(json.dumps(rows, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
