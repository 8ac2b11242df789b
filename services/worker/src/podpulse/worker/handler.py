"""The model handler: the RunPod serverless job the user's customers actually talk to.

``runpod_config(settings)`` loads the model once and returns what ``runpod.serverless.start``
takes. Each job is parsed (pydantic, errors name the field), turned into a prompt, generated
by the shared continuous-batching loop off the event loop, validated, and answered with text,
usage, timings, validation and model. Every bad input and every fault becomes
``{"error": ...}`` so the worker keeps serving; a CUDA OOM also asks RunPod to restart it.

The handler is an async generator (as runpod-workers/worker-vllm's), and the config asks the
SDK for ``return_aggregate_stream``: a plain job yields its whole answer once; a job with
``"stream": true`` yields a chunk per decoded step, then a final chunk with the whole answer's
fields; a job on RunPod's OpenAI route (``openai_route``, ``openai_input``) yields what that
route answers (``_openai``).

runpod itself is never imported here: the SDK calls us, not the other way round.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import AsyncGenerator
from typing import Any

import structlog
import torch
from opentelemetry.trace import Tracer
from pydantic import ValidationError

from ._answer import Attempt, answer_fields, record_answer
from ._batching import BatchGenerator, GenerationRequest, GenerationResult, GenerationStalled
from ._genai_spans import generation_span
from ._job_input import MAX_SEED, JobInput, Message, Profile, describe_input_error
from ._model import LoadedModel, ModelLoadError, load_model
from ._openai import (
    CHAT_ROUTE,
    MODELS_ROUTE,
    ChatStream,
    OpenAIInputError,
    chat_completion,
    error_body,
    model_list,
    read_chat,
)
from ._prompt import BuiltPrompt, PromptBuilder, PromptTooLongError
from ._static_decode import StaticCacheError
from ._text_stream import Piece, TextStream
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
        # When the model was loaded: the ``created`` of the OpenAI model list.
        self.created = int(time.time())
        # ``runpod.serverless.start``'s config, once runpod_config has built it. The SDK reads
        # ``refresh_worker`` from a returned dict only, never from what a generator yields, but
        # it reads the config's flag after every job: a fault that needs a new worker sets it.
        self.platform_config: dict[str, Any] | None = None

    async def handle(self, job: dict[str, Any]) -> AsyncGenerator[Any, None]:
        """RunPod's handler: an async generator, so the SDK posts each output to job-stream as
        it comes and, with ``return_aggregate_stream``, answers the job with the list of them.

        A native job yields its whole answer once (:meth:`answer`), or with ``"stream": true``
        a chunk per decoded step and a final chunk; an OpenAI-route job yields what that route
        answers. A fault yields ``{"error": ...}`` last, which fails the job.
        """
        job_id = str(job.get("id", "")) if isinstance(job, dict) else ""
        raw = job.get("input") if isinstance(job, dict) else None
        if isinstance(raw, dict) and "openai_route" in raw:
            outputs: AsyncGenerator[Any, None] = self._openai(raw, job_id)
        elif isinstance(raw, dict) and raw.get("stream") is True:
            outputs = self._streamed(raw, job_id)
        else:
            yield await self.answer(job)
            return
        try:
            # aclosing, here and below: a consumer that stops closes every inner generator at
            # once, down to the batcher's, which drops the job's row (an async generator left
            # to the garbage collector would keep decoding for nobody until then).
            async with contextlib.aclosing(outputs):
                async for output in outputs:
                    yield output
        except Exception as exc:  # the worker must outlive any one job
            yield self._failure(exc, job_id)

    async def answer(self, job: dict[str, Any]) -> dict[str, Any]:
        """Run one job whole; always returns a dict, with ``error`` when the job failed."""
        job_id = str(job.get("id", "")) if isinstance(job, dict) else ""
        try:
            return await self._handle(job, job_id)
        except Exception as exc:  # the worker must outlive any one job
            return self._failure(exc, job_id)

    def _failure(self, exc: Exception, job_id: str) -> dict[str, Any]:
        """The job's answer to a fault, logged without any of its text."""
        if isinstance(exc, GenerationStalled):
            log.error("job.stalled", job_id=job_id, stalled_s=round(exc.stalled_s, 1))
            # The thread is stuck in the device and will not come back: every job sent here
            # would wait for it. RunPod replaces the worker after this job.
            return self._refresh(f"generation stalled: {exc}; the worker will restart")
        if isinstance(exc, torch.OutOfMemoryError):
            log.error("job.oom", job_id=job_id)  # no traceback: it may quote input
            # The allocator may be fragmented beyond repair; RunPod restarts the worker after
            # this job, and the other jobs of the batch get the same answer.
            return self._refresh("CUDA out of memory; the worker will restart")
        if self._log_content:
            log.error("job.failed", job_id=job_id, error_type=type(exc).__name__, exc_info=exc)
        else:
            # No traceback by default: its frames and messages may quote the prompt.
            log.error("job.failed", job_id=job_id, error_type=type(exc).__name__)
        return {"error": f"generation failed: {type(exc).__name__}"}

    def _refresh(self, message: str) -> dict[str, Any]:
        if self.platform_config is not None:
            self.platform_config["refresh_worker"] = True
        return {"error": message, "refresh_worker": True}

    async def _handle(self, job: Any, job_id: str) -> dict[str, Any]:
        # Announce the job so that an idle generation loop waits for it to join a batch; it is
        # uncounted when submitted, or in the finally below if it never gets that far.
        self.generator.expected += 1
        submitted = False
        try:
            raw = job.get("input") if isinstance(job, dict) else None
            request, prompt, error = await self._prepare(raw, job_id)
            if error is not None:
                return error
            assert request is not None  # no error means both are set
            assert prompt is not None
            submitted = True
            return await self._generate(request, prompt, job_id)
        finally:
            if not submitted:
                self.generator.expected -= 1

    async def _streamed(
        self, raw: dict[str, Any], job_id: str
    ) -> AsyncGenerator[dict[str, Any], None]:
        """A ``"stream": true`` job: ``{"text", "tokens"}`` per decoded step, then the final
        chunk (the whole answer's fields, its text already sent, and ``"done": true``)."""
        self.generator.expected += 1  # as in _handle
        submitted = False
        try:
            request, prompt, error = await self._prepare(raw, job_id)
            if error is not None:
                yield error
                return
            assert request is not None  # no error means both are set
            assert prompt is not None
            submitted = True
            async with contextlib.aclosing(self._pieces(request, prompt, job_id)) as pieces:
                async for item in pieces:
                    if isinstance(item, Piece):
                        yield {"text": item.text, "tokens": item.tokens}
                    else:
                        rest = {key: value for key, value in item.items() if key != "text"}
                        yield {"text": "", "tokens": 0, **rest, "done": True}
        finally:
            if not submitted:
                self.generator.expected -= 1

    async def _openai(self, raw: dict[str, Any], job_id: str) -> AsyncGenerator[Any, None]:
        """RunPod's OpenAI route: the models list, or a chat completion (SSE strings when
        streamed, one ``chat.completion`` otherwise); a bad request yields OpenAI's error."""
        route = raw.get("openai_route")
        if route == MODELS_ROUTE:
            yield model_list(self.model_name, self.created)
            return
        if route != CHAT_ROUTE:
            message = f"this worker serves {CHAT_ROUTE} and {MODELS_ROUTE} only"
            log.info("job.rejected", job_id=job_id, reason=message)
            yield error_body(message, param="openai_route", code="unknown_route")
            return
        self.generator.expected += 1  # as in _handle
        submitted = False
        try:
            try:
                chat, request = read_chat(
                    raw.get("openai_input"), max_new_tokens_limit=self.max_new_tokens_limit
                )
                prompt = await self._build(request)
            except OpenAIInputError as exc:
                log.info("job.rejected", job_id=job_id, reason=str(exc))
                yield exc.body
                return
            except PromptTooLongError as exc:
                log.info("job.rejected", job_id=job_id, reason=str(exc))
                yield error_body(str(exc), param="messages", code="context_length_exceeded")
                return
            except (UnicodeError, TypeError):
                yield error_body("the text cannot be tokenized", param="messages")
                return
            completion_id = f"chatcmpl-{job_id or uuid.uuid4().hex}"
            created = int(time.time())
            submitted = True
            if not chat.stream:
                answer = await self._generate(request, prompt, job_id)
                yield chat_completion(completion_id, created, answer)
                return
            events = ChatStream(
                completion_id, created, self.model_name, include_usage=chat.include_usage
            )
            async with contextlib.aclosing(self._pieces(request, prompt, job_id)) as pieces:
                async for item in pieces:
                    if isinstance(item, Piece):
                        if item.text:  # a count without text is in the usage at the end
                            yield events.text(item.text)
                    else:
                        usage = item["usage"]
                        yield events.end(
                            item["finish_reason"], usage["input_tokens"], usage["output_tokens"]
                        )
        finally:
            if not submitted:
                self.generator.expected -= 1

    async def _prepare(
        self, raw: object, job_id: str
    ) -> tuple[JobInput | None, BuiltPrompt | None, dict[str, Any] | None]:
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

    def _span(self, request: JobInput, job_id: str, *, activate: bool = True) -> Any:
        return generation_span(
            self._tracer,
            model=self.model_name,
            job_id=job_id,
            max_tokens=request.max_new_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            seed=request.seed,
            activate=activate,
        )

    @staticmethod
    def _generation(
        request: JobInput, prompt: BuiltPrompt, seed: int, temperature: float
    ) -> GenerationRequest:
        return GenerationRequest(
            input_ids=prompt.input_ids,
            max_new_tokens=request.max_new_tokens,
            temperature=temperature,
            top_p=request.top_p,
            seed=seed % MAX_SEED,
            stop=request.stop_strings,
        )

    def _validate(self, result: GenerationResult, prompt: BuiltPrompt) -> ValidationResult:
        return validate_answer(
            result.text,
            finish_reason=result.finish_reason,
            thresholds=self.thresholds,
            system_prompt=prompt.system_prompt,
            user_text=prompt.user_text,
        )

    async def _generate(
        self, request: JobInput, prompt: BuiltPrompt, job_id: str
    ) -> dict[str, Any]:
        base_seed = request.seed if request.seed is not None else random.getrandbits(62)
        with self._span(request, job_id) as span:
            attempts: list[Attempt] = []
            for attempt in range(1 + self.max_regenerations):
                temperature = request.temperature
                if attempt and temperature == 0:
                    temperature = self.regeneration_temperature
                result = await self.generator.generate(
                    self._generation(request, prompt, base_seed + attempt, temperature),
                    announced=attempt == 0,
                )
                verdict = self._validate(result, prompt)
                attempts.append((result, verdict))
                if verdict.passed:
                    break
            # Fewest failed checks wins; on a tie the earlier attempt (the one the client's
            # own parameters produced).
            best_index = min(range(len(attempts)), key=lambda i: len(attempts[i][1].failures))
            self._record(span, prompt, attempts[best_index], len(attempts))
        return self._answer(prompt, attempts, best_index, job_id, streamed=False)

    async def _pieces(
        self, request: JobInput, prompt: BuiltPrompt, job_id: str
    ) -> AsyncGenerator[Piece | dict[str, Any], None]:
        """A streamed job's text pieces as the batcher decodes them, then its whole answer.

        No regeneration here, whatever the settings say: the text is out as it is made, so a
        failed check can only be reported (in the validation's ``regeneration``), not undone.
        """
        seed = request.seed if request.seed is not None else random.getrandbits(62)
        text = TextStream(self.loaded.tokenizer, request.stop_strings)
        result: GenerationResult | None = None
        # Not the current span: the consumer runs between our yields, in the same context.
        with self._span(request, job_id, activate=False) as span:
            steps = self.generator.stream(
                self._generation(request, prompt, seed, request.temperature), announced=True
            )
            async with contextlib.aclosing(steps):
                async for step in steps:
                    if isinstance(step, GenerationResult):
                        result = step
                    elif (piece := text.push(step)) is not None:
                        yield piece
            assert result is not None  # the stream ends with its result or raises
            if (last := text.finish(result.text)) is not None:
                yield last
            verdict = self._validate(result, prompt)
            self._record(span, prompt, (result, verdict), 1)
        answer = self._answer(prompt, [(result, verdict)], 0, job_id, streamed=True)
        answer["validation"]["regeneration"] = "none: a streamed answer is sent as it is made"
        yield answer

    def _record(self, span: Any, prompt: BuiltPrompt, best: Attempt, attempts: int) -> None:
        record_answer(
            span, best, attempts=attempts, input_tokens=len(prompt.input_ids), model=self.model_name
        )

    def _answer(
        self,
        prompt: BuiltPrompt,
        attempts: list[Attempt],
        best_index: int,
        job_id: str,
        *,
        streamed: bool,
    ) -> dict[str, Any]:
        """The whole answer's output fields, and the job's one log line."""
        best, verdict = attempts[best_index]
        log.info(
            "job.done",
            job_id=job_id,
            stream=streamed,
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
        return answer_fields(
            attempts, best_index, input_tokens=len(prompt.input_ids), model=self.model_name
        )


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
    config = {
        "handler": handler.handle,
        "concurrency_modifier": settings.concurrency_modifier(),
        # /runsync and /status answer with the list of every output the job yielded.
        "return_aggregate_stream": True,
    }
    handler.platform_config = config
    return config
