"""Structured logging for every podpulse process, with secrets redacted before anything is written.

structlog renders; the stdlib ``logging`` tree (Celery, httpx, redis, the RunPod SDK) is routed
through the same processors, so a third-party line is as redacted and as parseable as ours.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TextIO

import structlog
from structlog.tracebacks import ExceptionDictTransformer
from structlog.typing import EventDict, Processor, WrappedLogger

from podpulse.common.settings import KNOWN_SECRETS, CommonSettings, Secret, known_secret_values

__all__ = ["REDACTED", "SecretRedactor", "configure_logging", "redact_secrets", "redact_text"]

REDACTED = "[REDACTED]"

# RunPod's current API keys: "rpa_" and a long alphanumeric body. 20 is well under the real
# length, so a truncated key in a log line is still caught; no \b, so a key glued to a word
# ("token_rpa_...") is caught too: the prefix plus 20 characters is distinctive enough.
_RUNPOD_KEY = r"rpa_[A-Za-z0-9]{20,}"
# RunPod's older keys: 32+ characters of upper-case letters and digits. The lookaheads demand
# at least one letter and one digit, and \b demands the whole token be of that shape; podpulse's
# own ids never are (endpoint and worker ids, uuid4 hex, git SHAs and trace ids are lower-case;
# job ids carry hyphens), while a 32-digit number or an upper-case CONSTANT_NAME is left alone.
# What it may still catch is an upper-case hex digest: a loss of detail, never a leak.
_LEGACY_RUNPOD_KEY = r"\b(?=[A-Z0-9]*[A-Z])(?=[A-Z0-9]*[0-9])[A-Z0-9]{32,}\b"
# A Slack incoming webhook: the path is the credential, so the whole URL goes.
_SLACK_WEBHOOK = r"https://hooks\.slack\.com/services/[A-Za-z0-9_\-/]+"
_SHAPED_SECRETS = re.compile(f"{_RUNPOD_KEY}|{_LEGACY_RUNPOD_KEY}|{_SLACK_WEBHOOK}")

# A configured value shorter than this is not redacted by value: replacing every "abc" in every
# line would make logs unreadable, and a secret that short protects nothing anyway.
_MIN_KNOWN_SECRET_LENGTH = 8

# Added by structlog and the stdlib bridge; values are code objects or records, not text.
_SKIPPED_KEYS = frozenset({"_record", "_from_structlog", "exc_info"})

_HANDLER_NAME = "podpulse"


def redact_text(text: str, known: tuple[str, ...] | None = None) -> str:
    """Replace known secret values and anything shaped like a RunPod key or Slack webhook.

    *known* defaults to the known secrets' current values (see settings.Secret).
    """
    values = known_secret_values() if known is None else known
    # Longest first, so a secret that contains another is replaced whole.
    for value in sorted(values, key=len, reverse=True):
        if len(value) >= _MIN_KNOWN_SECRET_LENGTH:
            text = text.replace(value, REDACTED)
    return _SHAPED_SECRETS.sub(REDACTED, text)


def _redact(value: Any, known: tuple[str, ...]) -> Any:
    if isinstance(value, str):
        return redact_text(value, known)
    if isinstance(value, Mapping):
        return {key: _redact(item, known) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact(item, known) for item in value]
    if isinstance(value, BaseException):
        # An exception logged as a value would be str()-ed by the renderer, unredacted.
        return redact_text(f"{type(value).__name__}: {value}", known)
    return value


class SecretRedactor:
    """structlog processor: redact secrets anywhere in the event dict, nested values included.

    Runs after exceptions are rendered to text, so tracebacks and exception messages are
    covered. The values of *secrets* are asked for once per event, so every field of an event
    sees the same rotation; each Secret keeps its file's content for a second, so a busy log
    does not read every secret file on every line.
    """

    __slots__ = ("_secrets",)

    def __init__(self, secrets: Iterable[Secret] = KNOWN_SECRETS) -> None:
        self._secrets = tuple(secrets)

    def __call__(self, _logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
        known = known_secret_values(self._secrets)
        return {
            key: value if key in _SKIPPED_KEYS else _redact(value, known)
            for key, value in event_dict.items()
        }


redact_secrets = SecretRedactor()
"""The redactor for podpulse's known secrets (RUNPOD_API_KEY and the webhook URLs)."""


def _use_json(settings: CommonSettings, stream: TextIO) -> bool:
    if settings.log_format != "auto":
        return settings.log_format == "json"
    return not _isatty(stream)


def configure_logging(
    settings: CommonSettings,
    *,
    stream: TextIO | None = None,
    secrets: Iterable[Secret] = KNOWN_SECRETS,
) -> None:
    """Route structlog and stdlib logging to *stream* (stderr) as JSON lines or console text.

    The values of *secrets* are redacted from every line, whatever logger wrote it. Safe to
    call again (in a forked child, or a test): it replaces its own handler rather than
    adding a second one, and leaves handlers that others attached alone.
    """
    out = sys.stderr if stream is None else stream
    as_json = _use_json(settings, out)

    # Shared by structlog calls and foreign stdlib records, before rendering.
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    pre_chain: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        timestamper,
    ]
    # Exceptions become text (or dicts) before redaction in both modes: the console renderer's
    # own pretty tracebacks would be drawn from the live exception, after the redactor had run.
    exception_renderer: Processor = (
        structlog.processors.ExceptionRenderer(ExceptionDictTransformer(show_locals=False))
        if as_json
        else structlog.processors.format_exc_info
    )
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(
            colors=_isatty(out), exception_formatter=structlog.dev.plain_traceback
        )
    )

    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*pre_chain, structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.StackInfoRenderer(),
            exception_renderer,
            structlog.processors.UnicodeDecoder(),
            SecretRedactor(secrets),
            renderer,
        ],
    )
    handler = logging.StreamHandler(out)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)

    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    # httpx logs every request at INFO: a load test would drown its own log in them.
    for chatty in ("httpx", "httpcore"):
        logging.getLogger(chatty).setLevel(max(logging.WARNING, root.level))

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *pre_chain,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Not cached: a second configure_logging (tests, a forked child) must take effect on
        # loggers that modules created at import time.
        cache_logger_on_first_use=False,
    )


def _isatty(stream: TextIO) -> bool:
    isatty: Callable[[], bool] | None = getattr(stream, "isatty", None)
    return isatty is not None and isatty()
