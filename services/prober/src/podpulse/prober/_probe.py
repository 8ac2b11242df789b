"""A probe run in this process: its requests sent, its rows written as they finish, its summary.

``run_probe`` runs a whole spec and returns its ``RunSummary`` (summary.json is written even
when the run is cancelled or interrupted, marked ``interrupted``, and the exception goes on;
when the stop rule ends it -- its endpoint cannot be reached, podpulse.prober._stop -- the
summary is marked ``interrupted`` with that reason as its ``end_reason``, and returned).
``run_shard`` runs shard i of k of a spec -- one per Celery worker -- and returns its
``RunStats`` per level, also written to ``stats-shard<i>.json``; whoever collects the shards
merges them (podpulse.prober._shards) and calls ``write_summary`` once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from opentelemetry.trace import Tracer

from podpulse.common.probe_spec import ProbeSpec
from podpulse.common.request_records import RequestRecord
from podpulse.common.runpod import RunPodClient, RunPodError
from podpulse.common.summary import RunSummary

from ._engine import Engine
from ._load import RequestOptions
from ._prompts import load_prompts
from ._results_dir import ResultsWriter, run_dir, write_json, write_target
from ._run_stats import RunStats, targets_of
from ._shards import check_sharding, shard_load, write_shard_stats
from ._spans import emit_span
from ._stop import RunAborted, StopRule
from ._summarize import slo_of, write_summary
from ._target import Target, TargetError
from .settings import ProberSettings

__all__ = ["run_probe", "run_shard"]

OnRecord = Callable[[RequestRecord], None]


async def run_probe(
    spec: ProbeSpec,
    target: Target,
    results_dir: Path,
    *,
    settings: ProberSettings,
    on_record: OnRecord | None = None,
    tracer: Tracer | None = None,
) -> RunSummary:
    """Run ``spec`` against ``target``; write and return its summary.

    Rows go to ``results_dir/<run_id>/`` as requests finish, and one ``runpod.job`` span per
    request to ``tracer`` (the global provider's when None). Cancelled or interrupted, it
    writes a partial summary and the exception propagates; stopped by the stop rule, it
    writes and returns the partial summary with the rule's reason as its ``end_reason``.
    """
    results: dict[int, RunStats] = {}
    # Opened first: a bad prompt set or a reused run id must not write a summary.
    with _Run(spec, target, results_dir, settings, shard=0, shards=1) as run:
        try:
            await run.measure(results, on_record, tracer)
        except RunAborted as exc:
            return write_summary(
                results_dir, spec, results, settings, target=target.info(), end_reason=str(exc)
            )
        except BaseException:
            # Cancelled, Ctrl-C, or a bug: what was measured is still summarised.
            write_summary(
                results_dir, spec, results, settings, target=target.info(), interrupted=True
            )
            raise
    return write_summary(results_dir, spec, results, settings, target=target.info())


async def run_shard(
    spec: ProbeSpec,
    target: Target,
    results_dir: Path,
    *,
    settings: ProberSettings,
    shard: int,
    shards: int,
    tracer: Tracer | None = None,
) -> dict[int, RunStats]:
    """Run shard ``shard`` of ``shards`` of ``spec``; its ``RunStats`` per concurrency level.

    However it ends, what it measured is written to ``stats-shard<shard>.json``.
    """
    if shards > 1 and spec.kind == "soak" and spec.start_at is None:
        raise ValueError("a sharded soak needs start_at, so that the shards' windows line up")
    check_sharding(spec, shards)
    results: dict[int, RunStats] = {}
    with _Run(spec, target, results_dir, settings, shard=shard, shards=shards) as run:
        try:
            await run.measure(results, None, tracer)
        finally:
            write_shard_stats(run.folder, shard, results)
    return results


class _Run:
    """One shard's run: its prompts, its CSV writer and its request options, then its levels."""

    def __init__(
        self,
        spec: ProbeSpec,
        target: Target,
        results_dir: Path,
        settings: ProberSettings,
        *,
        shard: int,
        shards: int,
    ) -> None:
        self.spec, self.target, self.settings = spec, target, settings
        self.shard, self.shards = shard, shards
        self.prompts = load_prompts(spec.prompts or settings.prompts_path)
        self.folder = run_dir(results_dir, spec.run_id)
        # Opened before anything else is written: it refuses a run id that already ran.
        self.writer = ResultsWriter(self.folder, shard=shard, shards=shards)
        if shard == 0:
            try:
                write_json(self.folder / "spec.json", spec.model_dump(mode="json"))
                write_target(self.folder, target.info())
            except BaseException:
                self.writer.close()
                raise

    def __enter__(self) -> _Run:
        return self

    def __exit__(self, *_: object) -> None:
        self.writer.close()

    def _make_input(self, seq: int) -> dict[str, object]:
        return self.prompts[seq % len(self.prompts)].to_input() | self.spec.input_overrides

    async def measure(
        self, results: dict[int, RunStats], on_record: OnRecord | None, tracer: Tracer | None
    ) -> None:
        """Send this shard's requests of every level, filling ``results`` as they finish."""
        spec, settings = self.spec, self.settings
        # A soak always has windows; another kind only when its spec asks for them.
        window_s = spec.window_s or (settings.soak_window_s if spec.kind == "soak" else None)
        options = RequestOptions(
            timeout_s=spec.timeout_s,
            wait_ms=settings.runsync_wait_ms,
            poll_interval_s=settings.status_poll_ms / 1000,
            policy=spec.policy,  # type: ignore[arg-type]  # JobPolicy's keys, checked by RunPod
            rate_limit_retries=settings.rate_limit_retries,
            api=spec.api or settings.api,
            model=settings.model_name,
        )
        stop_rule = StopRule(
            max_failures=settings.abort_after_failures, max_failing_s=settings.abort_after_s
        )
        targets = targets_of(slo_of(settings))
        async with self.target.client(timeout_s=spec.timeout_s) as client:
            if options.api == "openai" and not options.model:
                options = replace(options, model=await _served_model(client))
            for level in spec.concurrency:
                load = shard_load(spec, level, self.shard, self.shards)
                # Without start_at, windows count from the end of warm-up (set below).
                placeholder = 0.0 if window_s else None
                origin = spec.start_at if spec.start_at is not None else placeholder
                results[level] = RunStats(window_s=window_s, origin=origin, targets=targets)
                if load is None:
                    continue
                engine = Engine(
                    client,
                    run_id=spec.run_id,
                    make_input=self._make_input,
                    options=options,
                    concurrency_label=level,
                    shard=self.shard,
                    stop_rule=stop_rule,
                )
                engine.on_record = self._recorder(results, level, engine, on_record, tracer)
                await engine.run(load, start_at=spec.start_at)

    def _recorder(
        self,
        results: dict[int, RunStats],
        level: int,
        engine: Engine,
        on_record: OnRecord | None,
        tracer: Tracer | None,
    ) -> OnRecord:
        spec = self.spec

        def record(rec: RequestRecord) -> None:
            stats = results[level]
            if stats.requests == 0 and stats.window_s and spec.start_at is None:
                stats.origin = engine.started_at
            self.writer.write(rec)
            stats.add(rec)
            emit_span(
                rec,
                endpoint_id=self.target.endpoint_id,
                kind=spec.kind,
                target_kind=self.target.kind,
                model=self.settings.model_name,
                tracer=tracer,
            )
            if on_record is not None:
                on_record(rec)

        return record


async def _served_model(client: RunPodClient) -> str:
    """The model an OpenAI-route run names when PROBER_MODEL_NAME is unset: the first the
    route lists, as vLLM's bench serve does (the OpenAI API requires one)."""
    try:
        ids = await client.openai_model_ids()
    except RunPodError as exc:
        raise TargetError(f"the OpenAI route's models could not be listed: {exc}") from None
    if not ids:
        raise TargetError("the OpenAI route lists no model: set PROBER_MODEL_NAME")
    return ids[0]
