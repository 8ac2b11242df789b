"""Worker decode benchmark: eager against graph (or static) decode, bf16 and each quantised path.

On a GPU: a random-weight model of Qwen2-7B's shape is built on the device for each precision
(bf16, torchao int4, bitsandbytes nf4, torchao int8, bitsandbytes int8: the most telling first,
so a spent budget drops the least), and the batching core decodes it on the eager path and on
the graph path at c = 1, 2, 4, 8 jobs. Each row: aggregate and per-job tokens/s, % of the
memory-bandwidth bound (measured copy bandwidth ÷ weight bytes: every decode step reads every
weight once), time to first token and peak memory; then graph/eager ratios side by side, and
per precision its build, quantise and capture times, which buckets were captured, and whether
the graph decodes the uncaptured static step's greedy tokens (it should, exactly) and how many
of eager's (bf16 rounding can part them on random weights). Before building anything it runs
``QUANTIZATION=auto``'s start-up probe on the same shape, so its estimates can be read against
the measured c=1 speeds.

Weights are random (the device has no network), so EOS is disabled and every job decodes
exactly ``--tokens`` tokens; prompts come from the tiny model's tokenizer, built offline.

With ``--tiny``, on the CPU: the tiny offline model itself (``podpulse.worker.tiny``, fp32),
eager against the static step (uncaptured: no CUDA) at c = 1, 2, 4, 8 in one run.

    python benchmarks/worker_gpu.py            # on the GPU machine (see device_worker_gpu.sh)
    .venv/bin/python benchmarks/worker_gpu.py --tiny
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import transformers

from podpulse.worker._batching import BatchGenerator, GenerationRequest, GenerationResult
from podpulse.worker._quant import Quantization, package_for, quantize_linears
from podpulse.worker._quant_probe import probe_speeds
from podpulse.worker.tiny import ensure_tiny_model

hf: Any = transformers

QWEN2_7B = {"hidden_size": 3584, "num_hidden_layers": 28, "num_attention_heads": 28,
            "num_key_value_heads": 4, "intermediate_size": 18944, "vocab_size": 152064}  # fmt: skip
GPU_PRECISIONS: tuple[Quantization, ...] = ("none", "torchao-int4", "nf4", "torchao-int8", "int8")
QUESTION = "I have five years as a data analyst. How do I move into machine learning?"
STARTED = time.monotonic()


@dataclass
class Row:
    precision: str
    path: str
    c: int
    agg_tps: float
    job_tps: float
    bound_share: float | None
    ttft_ms: float
    peak_gb: float | None


@dataclass
class Bench:
    """What every measurement shares, and where the report so far is kept."""

    tokenizer: Any
    args: argparse.Namespace
    device: torch.device
    title: str = ""
    out: Path | None = None
    rows: list[Row] = field(default_factory=list)
    preps: list[Prep] = field(default_factory=list)
    probe_lines: list[str] = field(default_factory=list)

    def add(self, row: Row) -> None:
        """Keep a measured row: printed at once, and the report under $OUT rewritten.

        The device's time limit can end the run mid-way; what was measured must survive it.
        """
        self.rows.append(row)
        print(f"measured: {row_line(row)}", flush=True)
        self.save()

    def save(self) -> None:
        if self.out is None:
            return
        text = report_text(self.title, self.rows, self.preps, self.probe_lines)
        data = {"rows": [asdict(r) for r in self.rows], "preps": [asdict(p) for p in self.preps]}
        _replace(Path(self.out, "worker_gpu.txt"), text + "\n")
        _replace(Path(self.out, "worker_gpu.json"), json.dumps(data, indent=2))


def _replace(path: Path, text: str) -> None:
    # Written aside, then renamed over: a kill mid-write leaves the last whole report.
    aside = path.with_name(path.name + ".tmp")
    aside.write_text(text, encoding="utf-8")
    os.replace(aside, path)


@dataclass
class Prep:
    """How one precision's model was made and each decode path set up."""

    precision: str
    weights_gb: float
    bound_tps: float | None
    build_s: float
    quantise_s: float
    paths: dict[str, str] = field(default_factory=dict)
    checks: list[str] = field(default_factory=list)


def installed(precision: Quantization) -> bool:
    """Whether its package imports here: the benchmark quantises in place, so unlike the
    worker's loader it needs no accelerate."""
    package = package_for(precision)
    return package is None or importlib.util.find_spec(package) is not None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def copy_bandwidth(device: torch.device) -> float | None:
    """Bytes/s of a large device-to-device copy (read + write), best of five."""
    if device.type != "cuda":
        return None
    n = 1 << 30
    src = torch.empty(n, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(5):
        sync(device)
        t = time.perf_counter()
        dst.copy_(src)
        sync(device)
        best = min(best, time.perf_counter() - t)
    del src, dst
    return 2 * n / best


def prompts(tokenizer: Any, count: int) -> list[list[int]]:
    chats = [[{"role": "user", "content": f"{QUESTION} (variant {i})"}] for i in range(count)]
    return [list(tokenizer.apply_chat_template(c, add_generation_prompt=True)["input_ids"])
            for c in chats]  # fmt: skip


def run_jobs(
    gen: BatchGenerator, ids: list[list[int]], tokens: int
) -> tuple[float, list[GenerationResult]]:
    """Wall seconds and results of ``len(ids)`` jobs submitted together (one shared prefill)."""
    gen.expected += len(ids)  # an idle loop waits for all of them to join its first prefill
    t = time.perf_counter()
    futures = [gen.submit(GenerationRequest(x, tokens)) for x in ids]
    gen.expected -= len(ids)
    results = [f.result() for f in futures]
    return time.perf_counter() - t, results


def sweep(model: Any, path: str, prep: Prep, bench: Bench) -> list[list[int]]:
    """Decode c = 1..8 jobs on ``path``; the greedy tokens of the c=2 check run."""
    tokenizer, args, device = bench.tokenizer, bench.args, bench.device
    ids = prompts(tokenizer, max(args.concurrency))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t = time.perf_counter()
    gen = BatchGenerator(model, tokenizer, max_batch_size=max(args.concurrency),
                         eos_token_ids=(), pad_token_id=0, batch_wait_ms=5, decode=path,
                         static_max_tokens=len(ids[0]) + args.tokens + 16)  # fmt: skip
    setup_s = time.perf_counter() - t
    report = gen.static_report
    captured = "-"
    if report is not None and path == "graph":
        ok = [str(b.size) for b in report.buckets if b.captured]
        failed = [f"{b.size}: {b.error}" for b in report.buckets if b.error]
        captured = ",".join(ok) or "none"
        if failed:
            captured += f" (failed {'; '.join(failed)})"
    prep.paths[gen.decode] = (
        f"set up {setup_s:.2f} s" + ("" if report is None else
        f", KV {report.kv_bytes / 2**20:.0f} MiB, capture {report.capture_s:.2f} s, "
        f"graph pool {report.graph_pool_bytes / 2**20:.0f} MiB, captured {captured}")
    )  # fmt: skip
    try:
        _, check = run_jobs(gen, ids[:2], args.check_tokens)
        for c in args.concurrency:
            if time.monotonic() - STARTED > args.budget_s:
                print(f"time budget reached; skipping {prep.precision} {path} c={c}")
                break
            # An untimed run first: the first run at each new shape loads kernels and lets
            # cuBLAS (oneDNN on the CPU) pick algorithms, several times a step's cost. Eager's
            # shapes grow every step, so it warms at full length; static's are fixed.
            run_jobs(gen, ids[:c], args.tokens if gen.decode == "eager" else 8)
            timed = [run_jobs(gen, ids[:c], args.tokens) for _ in range(args.repeats)]
            wall, results = sorted(timed, key=lambda t: t[0])[len(timed) // 2]  # the median
            agg = sum(len(r.token_ids) for r in results) / wall
            job = statistics.mean(len(r.token_ids) / (r.generate_ms / 1000) for r in results)
            peak = torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None
            bench.add(Row(prep.precision, gen.decode, c, agg, job,
                          None if prep.bound_tps is None else job / prep.bound_tps,
                          statistics.mean(r.first_token_ms for r in results), peak))  # fmt: skip
    finally:
        gen.close()
    return [r.token_ids for r in check]


def shared_prefix(a: list[int], b: list[int]) -> int:
    differ = (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y)
    return next(differ, min(len(a), len(b)))


def bench_model(model: Any, prep: Prep, bench: Bench) -> None:
    args = bench.args
    fast = "graph" if bench.device.type == "cuda" else "static"
    eager = sweep(model, "eager", prep, bench)
    other = sweep(model, fast, prep, bench)
    same = [shared_prefix(a, b) for a, b in zip(eager, other, strict=True)]
    prep.checks.append(f"{fast} vs eager greedy tokens in common: {same} of {args.check_tokens}")
    if fast == "graph":
        static = sweep_check(model, bench.tokenizer, args)
        same = [shared_prefix(a, b) for a, b in zip(static, other, strict=True)]
        prep.checks.append(f"graph vs uncaptured static: {same} of {args.check_tokens}")


def sweep_check(model: Any, tokenizer: Any, args: argparse.Namespace) -> list[list[int]]:
    ids = prompts(tokenizer, 2)
    gen = BatchGenerator(model, tokenizer, max_batch_size=max(args.concurrency),
                         eos_token_ids=(), pad_token_id=0, batch_wait_ms=5, decode="static",
                         static_max_tokens=len(ids[0]) + args.tokens + 16)  # fmt: skip
    try:
        return [r.token_ids for r in run_jobs(gen, ids, args.check_tokens)[1]]
    finally:
        gen.close()


def build_random(device: torch.device, dtype: torch.dtype) -> Any:
    """Random weights, created on the device itself (a CPU init of 7B would take minutes)."""
    config = hf.Qwen2Config(**QWEN2_7B, max_position_embeddings=32768, tie_word_embeddings=False)
    config._attn_implementation = "sdpa"
    with torch.device(device):
        model = hf.Qwen2ForCausalLM._from_config(config, dtype=dtype)
    return model.eval()


def gpu_precisions(bench: Bench, bandwidth: float) -> None:
    args, device = bench.args, bench.device
    dtype = torch.bfloat16
    for precision in args.precisions:
        if time.monotonic() - STARTED > args.budget_s:
            print(f"time budget reached; skipping {precision}")
            break
        if not installed(precision):
            print(f"{precision}: skipped: {package_for(precision)} is not installed")
            continue
        gc.collect()  # the last precision's model and graphs
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated(device)
        t = time.perf_counter()
        try:
            model = build_random(device, dtype)
            sync(device)
            build_s = time.perf_counter() - t
            t = time.perf_counter()
            quantize_linears(model, precision, dtype)
        except Exception as exc:  # one backend failing must not cost the others' rows
            print(f"{precision}: build or quantisation failed: {type(exc).__name__}: {exc}")
            model = None
            continue
        sync(device)
        quantise_s = time.perf_counter() - t
        torch.cuda.empty_cache()
        wbytes = torch.cuda.memory_allocated(device) - base
        label = "bfloat16" if precision == "none" else precision
        prep = Prep(label, wbytes / 1e9, bandwidth / wbytes, build_s, quantise_s)
        bench.preps.append(prep)
        try:
            bench_model(model, prep, bench)
        except Exception as exc:  # report what was measured, then go on
            prep.checks.append(f"failed: {type(exc).__name__}: {exc}")
        bench.save()
        del model


def row_line(r: Row) -> str:
    share = "n/a" if r.bound_share is None else f"{100 * r.bound_share:.0f}%"
    peak = "n/a" if r.peak_gb is None else f"{r.peak_gb:.1f}"
    return (f"{r.precision:<14}{r.path:<8}{r.c:>3}{r.agg_tps:>11.1f}{r.job_tps:>11.1f}"
            f"{share:>9}{r.ttft_ms:>9.1f}{peak:>9}")  # fmt: skip


def report_text(title: str, rows: list[Row], preps: list[Prep], probe_lines: list[str]) -> str:
    fast_paths = {r.path for r in rows} - {"eager"}
    lines = [title, "",
             f"{'precision':<14}{'path':<8}{'c':>3}{'agg tok/s':>11}{'tok/s/job':>11}"
             f"{'% bound':>9}{'TTFT ms':>9}{'peak GB':>9}"]  # fmt: skip
    lines += [row_line(r) for r in rows]
    for fast in sorted(fast_paths):
        lines += ["", f"side by side: {fast} / eager",
                  f"{'precision':<14}{'c':>3}{'eager agg':>11}{f'{fast} agg':>11}{'ratio':>7}"
                  f"{'eager/job':>11}{f'{fast}/job':>11}{'ratio':>7}{'c/c=1 agg':>11}"]  # fmt: skip
        by = {(r.precision, r.path, r.c): r for r in rows}
        for prep in preps:
            for c in sorted({r.c for r in rows if r.precision == prep.precision}):
                e, g = by.get((prep.precision, "eager", c)), by.get((prep.precision, fast, c))
                one = by.get((prep.precision, fast, 1))
                if e is None or g is None:
                    continue
                scale = f"{g.agg_tps / one.agg_tps:.2f}x" if one else "n/a"
                lines.append(f"{prep.precision:<14}{c:>3}{e.agg_tps:>11.1f}{g.agg_tps:>11.1f}"
                             f"{g.agg_tps / e.agg_tps:>6.2f}x{e.job_tps:>11.1f}{g.job_tps:>11.1f}"
                             f"{g.job_tps / e.job_tps:>6.2f}x{scale:>11}")  # fmt: skip
    lines += ["", "start-up per precision"]
    for prep in preps:
        bound = "n/a" if prep.bound_tps is None else f"{prep.bound_tps:.1f} tok/s"
        lines.append(f"{prep.precision}: weights {prep.weights_gb:.3g} GB, bound {bound}, "
                     f"built {prep.build_s:.1f} s, quantised {prep.quantise_s:.1f} s")  # fmt: skip
        lines += [f"  {path}: {text}" for path, text in prep.paths.items()]
        lines += [f"  check: {text}" for text in prep.checks]
    if probe_lines:
        lines += [
            "",
            "QUANTIZATION=auto's start-up probe on this shape (estimates, c=1)",
            *probe_lines,
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="the tiny model on the CPU")
    parser.add_argument("--tokens", type=int, default=None, help="new tokens a job (128; tiny 64)")
    parser.add_argument("--check-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=None, help="timed runs, median (1; tiny 5)")
    # One thread for the tiny model: its matrices are too small to gain from two, and on a
    # shared two-core machine a second thread's stalls dominate (eager's more than static's).
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (tiny: 1)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--precisions", nargs="+", default=list(GPU_PRECISIONS),
                        choices=list(GPU_PRECISIONS))  # fmt: skip
    parser.add_argument("--budget-s", type=float, default=450.0,
                        help="start no new measurement after this many seconds")  # fmt: skip
    args = parser.parse_args()
    args.tokens = args.tokens or (64 if args.tiny else 128)
    args.repeats = args.repeats or (5 if args.tiny else 1)
    cache = os.environ.get("PODPULSE_CACHE_DIR") or Path(tempfile.gettempdir()) / "podpulse-cache"
    folder = ensure_tiny_model(cache)
    tokenizer = hf.AutoTokenizer.from_pretrained(folder)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    versions = f"torch {torch.__version__}, transformers {transformers.__version__}"
    out = os.environ.get("OUT")
    bench = Bench(tokenizer, args, device, out=Path(out) if out else None)
    if args.threads or args.tiny:
        torch.set_num_threads(args.threads or 1)
    if device.type == "cpu":
        threads = torch.get_num_threads()
        bench.title = (f"{name} ({threads} torch threads), tiny model {folder.name}; {versions}; "
                       f"{args.tokens} new tokens a job, median of {args.repeats}")  # fmt: skip
        t = time.perf_counter()
        auto = hf.AutoModelForCausalLM
        model = auto.from_pretrained(folder, dtype=torch.float32, attn_implementation="sdpa")
        model.eval()
        params = sum(p.numel() * p.element_size() for p in model.parameters())
        prep = Prep("float32", params / 1e9, None, time.perf_counter() - t, 0.0)
        bench.preps.append(prep)
        bench_model(model, prep, bench)
    else:
        bandwidth = copy_bandwidth(device)
        assert bandwidth is not None
        bench.title = (f"{name}: copy bandwidth {bandwidth / 1e9:.0f} GB/s; Qwen2-7B shape, "
                       f"random weights; {versions}; {args.tokens} new tokens a job")  # fmt: skip
        config = hf.Qwen2Config(
            **QWEN2_7B, max_position_embeddings=32768, tie_word_embeddings=False
        )
        candidates = [q for q in args.precisions if installed(q)]
        for probe in probe_speeds(config, candidates, device=device, dtype=torch.bfloat16,
                                  decode="graph", budget_s=60):  # fmt: skip
            est = "-" if probe.tokens_per_second is None else f"{probe.tokens_per_second:.1f} tok/s"
            bench.probe_lines.append(f"{probe.quantization:<14}{est:>14}  in {probe.seconds:.1f} s"
                                     + (f"  ({probe.error})" if probe.error else ""))  # fmt: skip
        bench.save()
        gpu_precisions(bench, bandwidth)
    bench.save()  # the last precision's start-up notes and checks
    print(report_text(bench.title, bench.rows, bench.preps, bench.probe_lines))
    print(f"\nwhole run {time.monotonic() - STARTED:.0f} s")


if __name__ == "__main__":
    main()
