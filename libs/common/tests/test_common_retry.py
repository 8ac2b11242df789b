"""Retry: bounded retries of the listed errors, the waits it asks for, and giving up."""

from __future__ import annotations

import pytest

from podpulse.common.retry import Backoff, Retry


class Flaky:
    """Raises each of *errors* in turn, then returns "done"."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


def test_fixed_delays_retry_then_succeed() -> None:
    """One retry after each delay, waiting exactly those delays; on_retry hears each."""
    waits: list[float] = []
    heard: list[tuple[int, str, float]] = []
    flaky = Flaky(OSError("a"), OSError("b"))
    retry = Retry.after((0.5, 1.0, 2.0), on=(OSError,))
    result = retry.call(
        flaky, sleep=waits.append, on_retry=lambda n, e, d: heard.append((n, str(e), d))
    )
    assert (result, flaky.calls, waits) == ("done", 3, [0.5, 1.0])
    assert heard == [(0, "a", 0.5), (1, "b", 1.0)]


def test_the_last_error_propagates_when_retries_run_out() -> None:
    """After its retries the last error is raised; nothing else is retried at all."""
    waits: list[float] = []
    with pytest.raises(OSError, match="third"):
        Retry.after((0.1, 0.1), on=(OSError,)).call(
            Flaky(OSError("first"), OSError("second"), OSError("third")), sleep=waits.append
        )
    assert waits == [0.1, 0.1]
    flaky = Flaky(ValueError("not retried"))
    with pytest.raises(ValueError, match="not retried"):
        Retry.after((0.1,), on=(OSError,)).call(flaky, sleep=waits.append)
    assert flaky.calls == 1


async def test_backoff_grows_and_honours_a_capped_retry_after() -> None:
    """Asynchronous: jittered exponential waits, or what the error asks for, capped."""

    class Limited(Exception):
        def __init__(self, after: float | None) -> None:
            super().__init__("429")
            self.after = after

    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    errors = [Limited(None), Limited(None), Limited(120.0), Limited(0.25)]

    async def send() -> str:
        if errors:
            raise errors.pop(0)
        return "ok"

    retry = Retry.backoff(
        Backoff(base_s=0.1, jitter=lambda: 1.0, retry_after_cap_s=30.0),
        retries=4,
        on=(Limited,),
        retry_after=lambda e: e.after if isinstance(e, Limited) else None,
    )
    assert await retry.acall(send, sleep=sleep) == "ok"
    assert waits == pytest.approx([0.1, 0.2, 30.0, 0.25])


def test_bad_policies_are_refused() -> None:
    """Negative retries or delays are errors, not silently no retries."""
    with pytest.raises(ValueError, match="retries"):
        Retry(on=(OSError,), retries=-1, wait=lambda n, e: 0.0)
    with pytest.raises(ValueError, match="delays"):
        Retry.after((1.0, -1.0), on=(OSError,))
