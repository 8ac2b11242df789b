"""What the twin's strict body reader costs on the job path, side by side with bare parsing.

Run: ``.venv/bin/python benchmarks/validation.py``. Issue 8 put every job body through one
reader (``podpulse.twin._http``: ``read_body`` with its 5 s deadline, then ``parse_json``,
which refuses what no reply could carry). This times, in one run and interleaved, the bare
``json.loads`` a route did before against ``parse_json``, and the body read with and without
its deadline, for a typical career-guidance job and a large one. Median of repeated rounds.
"""

from __future__ import annotations

import asyncio
import functools
import json
import statistics
import time
from collections.abc import Callable

from starlette.requests import Request

from podpulse.twin._http import parse_json, read_body

_TYPICAL = {
    "input": {
        "question": "How do I move from support engineering into machine learning?",
        "profile": {
            "background": "Five years of L2 support at a SaaS company, some Python scripting.",
            "skills": ["python", "sql", "linux", "customer communication"],
            "goals": "An ML engineering role within two years",
            "location": "Pune, India",
        },
        "max_new_tokens": 256,
        "temperature": 0.7,
    },
    "policy": {"executionTimeout": 120000},
}
_LARGE = {
    "input": {
        "messages": [
            {"role": "user" if i % 2 == 0 else "assistant", "content": "word " * 400}
            for i in range(40)
        ]
    }
}


def _per_call_us(call: Callable[[], object], rounds: int, number: int) -> float:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(number):
            call()
        samples.append((time.perf_counter() - start) / number * 1e6)
    return statistics.median(samples)


def _request(body: bytes) -> Request:
    sent = False

    async def receive() -> dict[str, object]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/run",
        "headers": [(b"content-length", str(len(body)).encode())],
    }
    return Request(scope, receive)


async def _bare_read(request: Request) -> bytes:
    # The body read before issue 8: no deadline.
    return b"".join([chunk async for chunk in request.stream()])


def _read_us(body: bytes, *, deadline: bool, number: int) -> float:
    async def run() -> float:
        start = time.perf_counter()
        for _ in range(number):
            request = _request(body)
            if deadline:
                await read_body(request, 20_000_000)
            else:
                await _bare_read(request)
        return (time.perf_counter() - start) / number * 1e6

    return asyncio.run(run())


def main() -> None:
    print("twin job-body reader: bare vs strict, microseconds per body (median)")
    print(f"{'body':<22}{'bytes':>8}{'json.loads':>12}{'parse_json':>12}{'ratio':>8}")
    for name, payload, number in (("typical job", _TYPICAL, 2000), ("40-turn chat", _LARGE, 100)):
        body = json.dumps(payload).encode()
        bares, stricts = [], []
        for _ in range(7):  # interleaved, so drift on a noisy machine hits both alike
            bares.append(_per_call_us(functools.partial(json.loads, body), 1, number))
            stricts.append(_per_call_us(functools.partial(parse_json, body), 1, number))
        bare, strict = statistics.median(bares), statistics.median(stricts)
        print(f"{name:<22}{len(body):>8}{bare:>12.1f}{strict:>12.1f}{strict / bare:>8.2f}")
    print()
    print("body read: without vs with the 5 s deadline, microseconds per request (median)")
    body = json.dumps(_TYPICAL).encode()
    plain = [_read_us(body, deadline=False, number=2000) for _ in range(5)]
    timed = [_read_us(body, deadline=True, number=2000) for _ in range(5)]
    p, t = statistics.median(plain), statistics.median(timed)
    print(f"{'typical job':<22}{'no deadline':>12}{p:>8.1f}{'deadline':>10}{t:>8.1f}{t / p:>8.2f}")


if __name__ == "__main__":
    main()
