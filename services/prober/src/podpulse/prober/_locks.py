"""A run executes once: a Redis lease per run id, renewed while it runs, and a memory of runs.

Celery on Redis may deliver one message twice: when a task outlives the broker's visibility
timeout, or when a worker dies and ``task_reject_on_worker_lost`` hands the message back. A
probe run is not idempotent (it sends real requests and writes ``results/<run_id>/``), so the
task claims its run id first:

* ``podpulse:prober:run:<run_id>:lease`` -- ``SET NX PX`` with a TTL longer than the run,
  renewed from a thread while the run goes on, so an overrunning run keeps it;
* ``podpulse:prober:run:<run_id>:done`` -- set when the run ends, however it ended, and kept
  for days: a copy delivered after the lease is gone still finds the run taken.

A second delivery finds either key and is skipped with a log line. Redis restarted without
persistence loses both keys; the renewer takes the lease back (``SET NX``) on its next beat, so
a copy delivered afterwards is still refused -- unless that copy claimed the run first, in which
case the claim is marked ``lost`` and :func:`while_held` stops this copy's run.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal, TypeVar, cast

import redis
import structlog

__all__ = [
    "DONE_TTL_S",
    "KEY_PREFIX",
    "LeaseLostError",
    "RunClaim",
    "claim_run",
    "lease_ttl_s",
    "while_held",
]

KEY_PREFIX = "podpulse:prober:run:"
# How long a finished run id is remembered. Far beyond any visibility timeout or retry, so a
# late copy of the message can never start the run again.
DONE_TTL_S = 7 * 24 * 3600
# Added to a run's expected length: engine start-up, the results write, a slow endpoint.
LEASE_GRACE_S = 300.0
# The renewer beats at most this far apart, and at least three times per lease.
MAX_RENEW_INTERVAL_S = 60.0
# How often a running run looks at its claim for a lost lease.
LEASE_CHECK_S = 1.0

T = TypeVar("T")

_log = structlog.get_logger(__name__)

ClaimState = Literal["acquired", "running", "completed"]

# Atomic claim: a finished run wins over a free lease; a held lease over a new claim.
_CLAIM = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 'completed' end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 'acquired' end
return 'running'
"""
# Renew our lease; take it back when Redis lost it (restart without persistence); never take
# another holder's. 1: renewed, 2: re-taken, 0: someone else holds it.
_RENEW = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
if not holder then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 2 end
return 0
"""
# Remember the run as done and drop our lease (only ours) in one step.
_FINISH = """
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""


def lease_ttl_s(expected_s: float, grace_s: float = LEASE_GRACE_S) -> float:
    """A lease TTL longer than a run expected to take *expected_s* seconds."""
    return max(0.0, expected_s) + grace_s


@dataclass
class RunClaim:
    """The outcome of claiming a run id; ``owned`` says whether this process runs it."""

    run_id: str
    state: ClaimState
    token: str
    lost: bool = field(default=False)  # another holder took the lease while we ran

    @property
    def owned(self) -> bool:
        """True when this process holds the lease and must run the run."""
        return self.state == "acquired"


class LeaseLostError(RuntimeError):
    """Another holder took the run's lease while it ran, so this copy stopped."""


async def while_held(claim: RunClaim, work: Awaitable[T], *, check_s: float = LEASE_CHECK_S) -> T:
    """Await *work* while *claim* holds its lease; cancel it and raise LeaseLostError if lost.

    A lost lease means another process is running the same run into the same folder: two
    copies would send the load twice and interleave their rows, so this one stops (its
    partial results are written as on any cancellation).
    """
    task = asyncio.ensure_future(work)
    try:
        while not (await asyncio.wait({task}, timeout=check_s))[0]:
            if claim.lost:
                _log.error("probe_run_stopped_lease_lost", run_id=claim.run_id)
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                raise LeaseLostError(f"run {claim.run_id}: another holder took its lease")
    except asyncio.CancelledError:
        task.cancel()
        raise
    return task.result()


def _keys(run_id: str) -> list[str]:
    return [f"{KEY_PREFIX}{run_id}:lease", f"{KEY_PREFIX}{run_id}:done"]


@contextmanager
def claim_run(
    client: redis.Redis,
    run_id: str,
    *,
    ttl_s: float,
    renew_every_s: float | None = None,
    done_ttl_s: int = DONE_TTL_S,
) -> Iterator[RunClaim]:
    """Claim *run_id* for the block; yield a claim whose ``owned`` says whether to run.

    An owned claim renews its lease every *renew_every_s* (default: a third of *ttl_s*, at most
    a minute) and, when the block ends -- normally or by an exception -- records the run as done
    and releases the lease: a run id is executed at most once, even one that failed half-way
    (its partial results are in its folder; a rerun would overwrite them).

    Redis errors in the claim itself propagate (without the claim nothing may run); errors while
    renewing or finishing are logged and survived, since the run's rows are on disk, not in Redis.
    """
    token = uuid.uuid4().hex
    keys = _keys(run_id)
    ttl_ms = max(1, int(ttl_s * 1000))
    raw = client.eval(_CLAIM, 2, *keys, token, ttl_ms)
    state = cast(ClaimState, raw.decode() if isinstance(raw, bytes) else str(raw))
    claim = RunClaim(run_id=run_id, state=state, token=token)
    if not claim.owned:
        _log.warning("probe_run_skipped", run_id=run_id, reason=f"already {state}")
        yield claim
        return

    interval = renew_every_s if renew_every_s is not None else min(ttl_s / 3, MAX_RENEW_INTERVAL_S)
    stop = threading.Event()
    renewer = threading.Thread(
        target=_renew_until,
        args=(client, claim),
        kwargs={"key": keys[0], "ttl_ms": ttl_ms, "interval_s": interval, "stop": stop},
        name=f"run-lease-{run_id}",
        daemon=True,
    )
    renewer.start()
    outcome = "failed"
    try:
        yield claim
        outcome = "ok"
    finally:
        stop.set()
        renewer.join()
        try:
            client.eval(_FINISH, 2, *keys, token, outcome, done_ttl_s)
        except redis.RedisError as exc:
            # The lease expires on its own; the run's results are already written.
            _log.warning("probe_run_finish_not_recorded", run_id=run_id, error=repr(exc))


def _renew_until(
    client: redis.Redis,
    claim: RunClaim,
    *,
    key: str,
    ttl_ms: int,
    interval_s: float,
    stop: threading.Event,
) -> None:
    while not stop.wait(interval_s):
        try:
            result = client.eval(_RENEW, 1, key, claim.token, ttl_ms)
        except redis.RedisError as exc:
            # Redis restarting: keep running the probe and try again on the next beat.
            _log.warning("probe_run_lease_not_renewed", run_id=claim.run_id, error=repr(exc))
            continue
        if result == 2:
            _log.warning("probe_run_lease_retaken", run_id=claim.run_id)
        elif result == 0 and not claim.lost:
            claim.lost = True
            _log.error("probe_run_lease_lost", run_id=claim.run_id)
