"""When a run stops itself: its endpoint cannot be reached.

A request that failed to connect (refused, reset, DNS) or got an HTTP 5xx says nothing about
the model; it says the endpoint is not there. Without a bound, a closed loop against a dead
endpoint fails as fast as the loopback answers (thousands of rows a second) and a soak
would go on for its whole hour. Two things bound it, as k6's ``abortOnFail`` thresholds and
guidellm's ``max_errors`` do:

* each slot backs off (podpulse.common.retry's jittered exponential) after such a failure,
  so the failed rows -- still written, they were measured -- come at a bounded rate;
* the stop rule ends the run when ``max_failures`` such requests failed in a row, or when
  they went on failing for ``max_failing_s`` without one success in between. The run ends
  with ``RunAborted`` and its one-line reason, which the summary keeps as its end reason.

Other failures (a job the handler FAILED, a client timeout, a 4xx) are the endpoint's answer
and part of the evidence; they neither back off nor count here.
"""

from __future__ import annotations

from dataclasses import dataclass

from podpulse.common.runpod import RunPodConnectionError, RunPodError, RunPodServerError

__all__ = ["RunAborted", "StopRule", "Streak", "unreachable"]


@dataclass(frozen=True, slots=True)
class StopRule:
    """When a run whose requests cannot reach its endpoint ends (0 turns a bound off)."""

    max_failures: int = 20
    max_failing_s: float = 60.0

    def __post_init__(self) -> None:
        if self.max_failures < 0 or self.max_failing_s < 0:
            raise ValueError("a stop rule's bounds must be >= 0 (0: no bound)")


class RunAborted(Exception):
    """The stop rule ended the run; the message is the one-line reason."""


def unreachable(error: RunPodError) -> bool:
    """True for a failure that means the endpoint is not there: no connection, or a 5xx."""
    return isinstance(error, RunPodConnectionError | RunPodServerError)


class Streak:
    """Requests in a row, across a run's slots, that could not reach the endpoint."""

    def __init__(self, rule: StopRule) -> None:
        self.rule = rule
        self.count = 0
        self._since: float | None = None  # when the first request of the streak was sent

    def passed(self) -> None:
        """A request reached the endpoint: the streak is over."""
        self.count, self._since = 0, None

    def failed(self, *, sent: float, done: float, error: str | None) -> None:
        """A request could not reach it; RunAborted when the rule says the run is over."""
        self.count += 1
        if self._since is None:
            self._since = sent
        failing_s = done - self._since
        rule = self.rule
        by_count = rule.max_failures and self.count >= rule.max_failures
        by_time = rule.max_failing_s and failing_s >= rule.max_failing_s
        if by_count or by_time:
            raise RunAborted(
                f"endpoint unreachable: {self.count} requests in a row failed to connect or "
                f"got HTTP 5xx over {failing_s:.1f} s, with no success in between "
                f"(stop rule: {rule.max_failures} failures or {rule.max_failing_s:g} s); "
                f"last error: {error or 'none given'}"
            )
