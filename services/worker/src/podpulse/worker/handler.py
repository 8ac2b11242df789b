"""The model handler: the RunPod serverless job the user's customers actually talk to.

``runpod_config(settings)`` loads the model once and returns what ``runpod.serverless.start``
takes. Each job is parsed (pydantic, errors name the field), turned into a prompt, generated
by the shared continuous-batching loop off the event loop, validated, and answered with text,
usage, timings, validation and model. Every bad input and every fault becomes
``{"error": ...}`` so the worker keeps serving; a CUDA OOM also asks RunPod to restart it.

runpod itself is never imported here: the SDK calls us, not the other way round.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import structlog
import torch
from opentelemetry.trace import Tracer
from pydantic import ValidationError

from ._batching import BatchGenerator, GenerationRequest, GenerationResult, GenerationStalled
from ._genai_spans import generation_span, record_usage
from ._job_input import MAX_SEED, JobInput, Message, Profile, describe_input_error
from ._model import LoadedModel, ModelLoadError, load_model
from ._prompt import BuiltPrompt, PromptBuilder, PromptTooLongError
from ._static_decode import StaticCacheError
from ._validation import ValidationResult, ValidationThresholds, validate_answer
from .settings import WorkerSettings

__all__ = ["JobInput", "Message", "ModelHandler", "Profile", "runpod_config"]

log = structlog.get_logger("podpulse.worker.handler")

# Prompts longer than this are tokenised in a thread: below it, the hop costs more than the work.
_INLINE_TOKENIZE_CHARS = 4000


class ModelHandler:
    """Serves jobs from one loaded model through one batching loop."""

    def __init__(
        self,
        loaded: LoadedModel,
        generator: BatchGenerator,
        *,
        model_name: str,
        max_new_tokens_limit: int = 1024,
        thresholds: ValidationThresholds | None = None,
        max_regenerations: int = 0,
        regeneration_temperature: float = 0.7,
        tracer: Tracer | None = None,
        log_content: bool = False,
    ) -> None:
        self.loaded = loaded
        self.generator = generator
        self.model_name = model_name
        self.builder = PromptBuilder(loaded.tokenizer, loaded.context_length)
        self.max_new_tokens_limit = max_new_tokens_limit
        self.thresholds = thresholds or ValidationThresholds()
        self.max_regenerations = max_regenerations
        self.regeneration_temperature = regeneration_temperature
        self._tracer = tracer
        self._log_content = log_content

    async def handle(self, job: dict[str, Any]) -> dict[str, Any]:
        """Run one RunPod job; always returns a dict, with ``error`` when the job failed."""
        job_id = str(job.get("id", "")) if isinstance(job, dict) else ""
        try:
            return await self._handle(job, job_id)
        except GenerationStalled as exc:
            log.error("job.stalled", job_id=job_id, stalled_s=round(exc.stalled_s, 1))  # noqa: TRY400 - nothing to trace
            # The thread is stuck in the device and will not come back: every job sent here
            # would wait for it. RunPod replaces the worker after this job.
            return {"error": f"generation stalled: {exc}; the worker will restart",
                    "refresh_worker": True}  # fmt: skip
        except torch.OutOfMemoryError:
            log.error("job.oom", job_id=job_id)  # noqa: TRY400 - no traceback: it may quote input
            # The allocator may be fragmented beyond repair; RunPod restarts the worker after
            # this job, and the other jobs of the batch get the same answer.
            return {"error": "CUDA out of memory; the worker will restart", "refresh_worker": True}
        except Exception as exc:  # the worker must outlive any one job
            if self._log_content:
                log.exception("job.failed", job_id=job_id, error_type=type(exc).__name__)
            else:
                # No traceback by default: its frames and messages may quote the prompt.
                log.error("job.failed", job_id=job_id, error_type=type(exc).__name__)  # noqa: TRY400
            return {"error": f"generation failed: {type(exc).__name__}"}

    async def _handle(self, job: Any, job_id: str) -> dict[str, Any]:
        # Announce the job so that an idle generation loop waits for it to join a batch; it is
        # uncounted when submitted, or in the finally below if it never gets that far.
        self.generator.expected += 1
        submitted = False
        try:
            request, prompt, error = await self._prepare(job, job_id)
            if error is not None:
                return error
            assert request is not None  # no error means both are set
            assert prompt is not None
            submitted = True
            return await self._generate(request, prompt, job_id)
        finally:
            if not submitted:
                self.generator.expected -= 1

    async def _prepare(
        self, job: Any, job_id: str
    ) -> tuple[JobInput | None, BuiltPrompt | None, dict[str, Any] | None]:
        raw = job.get("input") if isinstance(job, dict) else None
        if not isinstance(raw, dict):
            return None, None, self._reject(job_id, "invalid input: 'input' must be a JSON object")
        try:
            request = JobInput.model_validate(
                raw, context={"max_new_tokens_limit": self.max_new_tokens_limit}
            )
        except ValidationError as exc:
            return None, None, self._reject(job_id, describe_input_error(exc))
        try:
            prompt = await self._build(request)
        except PromptTooLongError as exc:
            return None, None, self._reject(job_id, str(exc))
        except (UnicodeError, TypeError):
            message = "invalid input: the text cannot be tokenized"
            return None, None, self._reject(job_id, message)
        return request, prompt, None

    def _reject(self, job_id: str, message: str) -> dict[str, Any]:
        log.info("job.rejected", job_id=job_id, reason=message)
        return {"error": message}

    async def _build(self, request: JobInput) -> BuiltPrompt:
        if request.messages is not None:
            chat = self.builder.with_system_prompt([m.model_dump() for m in request.messages])
        else:
            assert request.question is not None  # guaranteed by JobInput
            profile = request.profile.model_dump() if request.profile else None
            chat = self.builder.messages_for_question(request.question, profile)
        size = sum(len(m["content"]) for m in chat)
        if size <= _INLINE_TOKENIZE_CHARS:
            return self.builder.build(chat, request.max_new_tokens)
        return await asyncio.to_thread(self.builder.build, chat, request.max_new_tokens)

    async def _generate(
        self, request: JobInput, prompt: BuiltPrompt, job_id: str
    ) -> dict[str, Any]:
        base_seed = request.seed if request.seed is not None else random.getrandbits(62)
        with generation_span(
            self._tracer,
            model=self.model_name,
            job_id=job_id,
            max_tokens=request.max_new_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            seed=request.seed,
        ) as span:
            attempts: list[tuple[GenerationResult, ValidationResult]] = []
            for attempt in range(1 + self.max_regenerations):
                temperature = request.temperature
                if attempt and temperature == 0:
                    temperature = self.regeneration_temperature
                result = await self.generator.generate(
                    GenerationRequest(
                        input_ids=prompt.input_ids,
                        max_new_tokens=request.max_new_tokens,
                        temperature=temperature,
                        top_p=request.top_p,
                        seed=(base_seed + attempt) % MAX_SEED,
                        stop=request.stop_strings,
                    ),
                    announced=attempt == 0,
                )
                verdict = validate_answer(
                    result.text,
                    finish_reason=result.finish_reason,
                    thresholds=self.thresholds,
                    system_prompt=prompt.system_prompt,
                    user_text=prompt.user_text,
                )
                attempts.append((result, verdict))
                if verdict.passed:
                    break
            # Fewest failed checks wins; on a tie the earlier attempt (the one the client's
            # own parameters produced).
            best_index = min(range(len(attempts)), key=lambda i: len(attempts[i][1].failures))
            best, verdict = attempts[best_index]
            seconds = best.generate_ms / 1000.0
            tps = len(best.token_ids) / seconds if seconds > 0 else 0.0
            record_usage(
                span,
                model=self.model_name,
                input_tokens=len(prompt.input_ids),
                output_tokens=len(best.token_ids),
                finish_reason=best.finish_reason,
                tokens_per_second=tps,
                first_token_ms=best.first_token_ms,
                batch_size=best.batch_size,
                attempts=len(attempts),
                validation_passed=verdict.passed,
            )
        validation = verdict.to_dict()
        validation["attempts"] = [
            {"seed": r.seed, "passed": v.passed, "checks": [f.check for f in v.failures]}
            for r, v in attempts
        ]
        validation["returned_attempt"] = best_index
        log.info(
            "job.done",
            job_id=job_id,
            input_tokens=len(prompt.input_ids),
            output_tokens=len(best.token_ids),
            generate_ms=round(best.generate_ms, 2),
            queue_ms=round(best.queue_ms, 2),
            first_token_ms=round(best.first_token_ms, 2),
            batch_size=best.batch_size,
            finish_reason=best.finish_reason,
            attempts=len(attempts),
            validation_passed=verdict.passed,
            failed_checks=[f.check for f in verdict.failures],
        )
        if self._log_content:
            log.debug("job.content", job_id=job_id, prompt=prompt.text, answer=best.text)
        return {
            "text": best.text,
            "usage": {"input_tokens": len(prompt.input_ids), "output_tokens": len(best.token_ids)},
            "timings": {
                "generate_ms": round(best.generate_ms, 3),
                "queue_ms": round(best.queue_ms, 3),
                # Queue wait plus prefill: what a streaming client would wait for a first word.
                "first_token_ms": round(best.first_token_ms, 3),
                "tokens_per_second": round(tps, 3),
            },
            "validation": validation,
            "model": self.model_name,
            "finish_reason": best.finish_reason,
            "seed": best.seed,
            # Most jobs that shared a forward pass with this one (1: it ran alone).
            "batch_size": best.batch_size,
        }


def build_handler(
    settings: WorkerSettings, loaded: LoadedModel, *, model_name: str, tracer: Tracer | None = None
) -> ModelHandler:
    """A handler over ``loaded`` with the batching loop and thresholds ``settings`` name."""
    generator = BatchGenerator(
        loaded.model,
        loaded.tokenizer,
        max_batch_size=settings.max_concurrency,
        eos_token_ids=loaded.eos_token_ids,
        pad_token_id=loaded.pad_token_id,
        batch_wait_ms=settings.batch_wait_ms if settings.max_concurrency > 1 else 0.0,
        decode=settings.decode,
        static_max_tokens=settings.static_max_tokens,
        stall_s=settings.stall_timeout_s,
    )
    return ModelHandler(
        loaded,
        generator,
        model_name=model_name,
        max_new_tokens_limit=settings.max_new_tokens,
        thresholds=ValidationThresholds(
            min_words=settings.validation_min_words,
            max_words=settings.validation_max_words,
            ngram=settings.validation_ngram,
            max_repeat_ratio=settings.validation_max_repeat_ratio,
            leak_words=settings.validation_leak_words,
        ),
        max_regenerations=settings.max_regenerations,
        regeneration_temperature=settings.regeneration_temperature,
        tracer=tracer,
        log_content=settings.log_content,
    )


def load_for(settings: WorkerSettings) -> tuple[LoadedModel, str]:
    """Load ``WORKER_MODEL_ID`` (or the tiny model when unset); the name jobs will report."""
    if settings.model_id:
        model_id, name = settings.model_id, settings.model_id
    else:
        from .tiny import TINY_MODEL_NAME, ensure_tiny_model

        model_id, name = str(ensure_tiny_model(settings.cache_dir)), TINY_MODEL_NAME
    reserve = settings.kv_reserve_tokens
    if settings.decode != "eager":
        # The static cache is preallocated whole: every slot at its full length.
        reserve = max(reserve, settings.max_concurrency * settings.static_max_tokens)
    loaded = load_model(
        model_id,
        quantization=settings.quantization,
        kv_reserve_tokens=reserve,
        decode=settings.decode,
        probe_s=settings.quantization_probe_s,
        target_tokens_per_second=settings.quantization_target_tokens_per_second,
    )
    return loaded, name


def log_decode(generator: BatchGenerator) -> None:
    """One line on the decode path, and one per bucket when it was captured."""
    report = generator.static_report
    if report is None:
        log.info("decode.ready", decode=generator.decode, note=generator.decode_note)
        return
    log.info(
        "decode.ready",
        decode=generator.decode,
        note=generator.decode_note,
        slots=report.slots,
        static_max_tokens=report.max_tokens,
        kv_cache_mib=round(report.kv_bytes / 2**20, 1),
        buckets=[b.size for b in report.buckets],
        captured=[b.size for b in report.buckets if b.captured],
        capture_s=round(report.capture_s, 3),
        graph_pool_mib=round(report.graph_pool_bytes / 2**20, 1),
    )
    for bucket in report.buckets:
        if bucket.error is not None:
            log.warning("decode.capture_failed", bucket=bucket.size, error=bucket.error)


def runpod_config(settings: WorkerSettings) -> dict[str, Any]:
    """Load the model once and return ``runpod.serverless.start``'s config.

    A model that cannot be served stops the process here, with one line saying why.
    """
    started = time.perf_counter()
    try:
        loaded, name = load_for(settings)
    except ModelLoadError as exc:
        raise SystemExit(f"podpulse worker: {exc}") from None
    for probe in loaded.probes:
        log.info(
            "quantization.probe",
            quantization=probe.quantization,
            tokens_per_second=None
            if probe.tokens_per_second is None
            else round(probe.tokens_per_second, 1),
            layer_ms=None if probe.layer_ms is None else round(probe.layer_ms, 3),
            seconds=round(probe.seconds, 2),
            error=probe.error,
        )
    try:
        handler = build_handler(settings, loaded, model_name=name)
    except StaticCacheError as exc:
        raise SystemExit(
            f"podpulse worker: {exc}: lower WORKER_STATIC_MAX_TOKENS or WORKER_MAX_CONCURRENCY, "
            "or set WORKER_DECODE=eager"
        ) from None
    log.info(
        "model.loaded",
        model=name,
        # Load, probe and capture: the part of a cold start the worker itself spends.
        startup_s=round(time.perf_counter() - started, 2),
        device=str(loaded.device),
        dtype=str(loaded.dtype).removeprefix("torch."),
        quantization=loaded.quantization,
        quantization_reason=loaded.quantization_reason,
        context_length=loaded.context_length,
        max_concurrency=settings.max_concurrency,
    )
    log_decode(handler.generator)
    return {"handler": handler.handle, "concurrency_modifier": settings.concurrency_modifier()}
