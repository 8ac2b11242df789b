"""Worker benchmark on the tiny CPU model: handler overhead, and batching at concurrency 4.

1. Overhead: one greedy job through ``ModelHandler.handle`` versus raw ``model.generate`` for
   the same prompt and the same number of new tokens (median of several runs). Also the part
   of the handler's wall time spent outside the decode loop (parse, prompt, validation,
   thread hand-off), which is what the ≤ 1 ms goal is about.
2. c = 4: four jobs awaited together on one worker (shared forward passes) versus the same
   four awaited one after another.

    .venv/bin/python benchmarks/worker_cpu.py [--tokens 32] [--repeats 15]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

import structlog
import torch

from podpulse.worker.handler import ModelHandler, build_handler, load_for
from podpulse.worker.settings import WorkerSettings


def _job(question: str, tokens: int) -> dict[str, object]:
    return {"id": "bench", "input": {"question": question, "max_new_tokens": tokens,
                                     "temperature": 0}}  # fmt: skip


async def _main(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    # Per-job log lines to a terminal would be measured too; a worker ships them as JSON.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    cache = Path(args.cache_dir)
    settings = WorkerSettings(cache_dir=cache, max_concurrency=4, batch_wait_ms=2)
    loaded, name = load_for(settings)
    batched = build_handler(settings, loaded, model_name=name)
    single = build_handler(settings.model_copy(update={"max_concurrency": 1}), loaded,
                           model_name=name)  # fmt: skip
    question = "I have five years as a data analyst. How do I move into machine learning?"
    # The EOS token may end a job early; measure both paths on the count the handler produced.
    warm = await single.answer(_job(question, args.tokens))
    n_out = warm["usage"]["output_tokens"]
    prompt = single.builder.build(single.builder.messages_for_question(question), args.tokens)
    ids = torch.tensor([prompt.input_ids])
    mask = torch.ones_like(ids)

    def raw() -> list[int]:
        with torch.inference_mode():
            out = loaded.model.generate(ids, attention_mask=mask, max_new_tokens=n_out,
                                        min_new_tokens=n_out, do_sample=False,
                                        pad_token_id=loaded.pad_token_id)  # fmt: skip
        return list(out[0, ids.shape[1] :].tolist())

    raw()
    raw_ms, handler_ms, outside_ms = [], [], []
    for _ in range(args.repeats):
        t = time.perf_counter()
        tokens = raw()
        raw_ms.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        out = await single.answer(_job(question, args.tokens))
        wall = (time.perf_counter() - t) * 1000
        handler_ms.append(wall)
        outside_ms.append(wall - out["timings"]["generate_ms"])
    if loaded.tokenizer.decode(tokens, skip_special_tokens=True) != out["text"]:
        raise SystemExit("handler and generate produced different tokens: not comparable")
    med = statistics.median
    print(f"tiny model {name} on CPU, {args.threads} torch threads, {n_out} new tokens a job")
    print(f"{'measure':<52}{'value':>12}")
    print(f"{'raw model.generate, median ms/job':<52}{med(raw_ms):>12.2f}")
    print(f"{'handler (c=1), median ms/job':<52}{med(handler_ms):>12.2f}")
    print(f"{'handler - generate, median ms/job':<52}{med(handler_ms) - med(raw_ms):>12.2f}")
    print(f"{'handler outside its decode loop, median ms/job':<52}{med(outside_ms):>12.3f}")

    await _concurrency(args, batched, single, question)
    batched.generator.close()
    single.generator.close()


async def _concurrency(
    args: argparse.Namespace, batched: ModelHandler, single: ModelHandler, question: str
) -> None:
    med = statistics.median
    questions = [f"{question} (variant {i})" for i in range(4)]
    c4_tokens = args.tokens * 2
    for h in (batched, single):  # warm both paths
        await h.answer(_job(questions[0], 4))
    in_turn, together = [], []
    for _ in range(max(3, args.repeats // 3)):
        t = time.perf_counter()
        for q in questions:
            await single.answer(_job(q, c4_tokens))
        in_turn.append(time.perf_counter() - t)
        t = time.perf_counter()
        outs = await asyncio.gather(*(batched.answer(_job(q, c4_tokens)) for q in questions))
        together.append(time.perf_counter() - t)
    batch_sizes = sorted({o["batch_size"] for o in outs})

    print(f"{f'c=4 x {c4_tokens} tokens, in turn, median s':<52}{med(in_turn):>12.3f}")
    print(f"{f'c=4 x {c4_tokens} tokens, batched, median s':<52}{med(together):>12.3f}")
    print(f"{'c=4 wall-time ratio, batched / in turn':<52}{med(together) / med(in_turn):>12.2f}")
    print(f"{'batch sizes seen in the batched run':<52}{batch_sizes!s:>12}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument(
        "--cache-dir",
        default=os.environ.get("WORKER_CACHE_DIR", Path(tempfile.gettempdir()) / "podpulse-cache"),
    )
    asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()
