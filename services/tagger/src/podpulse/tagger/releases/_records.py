"""DEPLOYMENT.md: one record per production release, for people and for programs at once.

Each record is a Markdown section people read (tag, date, image, endpoint, model, GPU,
commit, config, evidence or force reason, trigger), closed by one HTML comment holding the
same facts as JSON, which Markdown renderers hide::

    <!-- podpulse-release {"schema_version": 1, "tag": "v1.0-production", ...} -->

:func:`parse_records` is the one reader: it reads the comments (and nothing else, so text
the user wrote around the records is kept and ignored) and validates each into a
:class:`ReleaseRecord`; a damaged comment is an error naming its line. :func:`append_record`
writes the whole file anew to a temporary file beside it and renames it into place, so a
reader sees the file before or after a record, never half of one. The caller holds the
release lock (podpulse.tagger.releases._release), so two releases never append at once.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from podpulse.common.events import UtcDatetime
from podpulse.common.runpod import EndpointConfig
from podpulse.common.summary import ProbeKind, RunSummary

__all__ = [
    "DEFAULT_RECORDS_FILE",
    "DeployedEndpoint",
    "Evidence",
    "RecordsError",
    "ReleaseRecord",
    "Trigger",
    "append_record",
    "parse_records",
    "read_records",
    "render_record",
]

DEFAULT_RECORDS_FILE = Path("DEPLOYMENT.md")
SCHEMA_VERSION: Literal[1] = 1
_MARKER = "<!-- podpulse-release "
_END = " -->"
_HEADER = (
    "# Deployments\n\n"
    "Production releases, newest last, appended by `podpulse release` (see docs/releases.md). "
    "Each ends with a machine-readable comment; `podpulse releases` lists them.\n"
)
_SHA = r"^[0-9a-f]{40}$"
_MAX_INDENT = 3
# A force reason is shown inside one Markdown line and one tag message line.
_ONE_LINE = re.compile(r"^[^\x00-\x1f\x7f\u2028\u2029]+$")

Trigger = Literal["cli", "auto"]


class _Model(BaseModel):
    # A record is a fact written once; a field this version does not know is an error.
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class Evidence(_Model):
    """The soak a release rests on: its run id, verdict and headline figures."""

    run_id: str = Field(min_length=1)
    kind: ProbeKind
    passed: bool
    ended_at: UtcDatetime | None
    requests: Annotated[int, Field(ge=0)]
    success_pct: float | None
    exec_p50_ms: float | None
    exec_p95_ms: float | None
    total_p50_ms: float | None
    total_p95_ms: float | None

    @classmethod
    def of(cls, summary: RunSummary) -> Evidence:
        """The evidence of a run, from its summary's headline level."""
        level = summary.level
        latency = level.latency_ms
        return cls(
            run_id=summary.run_id,
            kind=summary.kind,
            passed=summary.passed,
            ended_at=level.ended_at,
            requests=level.requests,
            success_pct=level.success_rate_pct,
            exec_p50_ms=latency.exec.p50,
            exec_p95_ms=latency.exec.p95,
            total_p50_ms=latency.total.p50,
            total_p95_ms=latency.total.p95,
        )


class DeployedEndpoint(_Model):
    """What was released where: podpulse.toml's [endpoint] at the time of the release."""

    id: str = Field(min_length=1)
    image: str = Field(min_length=1)
    model: str = Field(min_length=1)
    model_size_gb: float = Field(gt=0)
    gpu: str = Field(min_length=1)
    config: EndpointConfig


class ReleaseRecord(_Model):
    """One production release. It rests on a passing soak, or on a recorded force reason."""

    schema_version: Literal[1] = SCHEMA_VERSION
    tag: str = Field(min_length=1)
    commit: str = Field(pattern=_SHA, description="The full id of the released commit.")
    recorded_at: UtcDatetime
    endpoint: DeployedEndpoint
    evidence: Evidence | None = Field(description="The soak considered (None: none found).")
    force_reason: str | None = Field(
        default=None, max_length=500, description="Why the gate was overridden (--force)."
    )
    trigger: Trigger = Field(description="cli: podpulse release; auto: a soak-completed event.")

    @field_validator("force_reason")
    @classmethod
    def _one_line(cls, value: str | None) -> str | None:
        if value is not None and not _ONE_LINE.match(value):
            raise ValueError("must be one line of printable text")
        return value

    @model_validator(mode="after")
    def _rests_on_something(self) -> Self:
        if self.force_reason is None and not (self.evidence and self.evidence.passed):
            raise ValueError("a release without a passing soak needs a force reason")
        return self


class RecordsError(ValueError):
    """DEPLOYMENT.md cannot be read or holds a damaged record; the message names the line."""


# --- writing ----------------------------------------------------------------------------------


def render_record(record: ReleaseRecord) -> str:
    """The Markdown section of *record*, ending with its machine-readable comment."""
    endpoint, config = record.endpoint, record.endpoint.config
    lines = [
        f"## {_text(record.tag)} ({_iso(record.recorded_at)})",
        "",
        f"- Commit: `{record.commit}`",
        f"- Image: `{_text(endpoint.image)}`",
        f"- Endpoint: `{_text(endpoint.id)}`",
        f"- Model: `{_text(endpoint.model)}` ({endpoint.model_size_gb:g} GB)",
        f"- GPU: {_text(endpoint.gpu)}",
        f"- Config: workers {config.workers_min}-{config.workers_max}, idle timeout "
        f"{config.idle_timeout_s} s, scaler {config.scaler_type.value} {config.scaler_value:g}",
        f"- Evidence: {describe_evidence(record.evidence)}",
    ]
    if record.force_reason is not None:
        lines.append(f"- Forced: {_text(record.force_reason)}")
    lines += [f"- Trigger: {_TRIGGERS[record.trigger]}", "", _comment(record), ""]
    return "\n".join(lines)


_TRIGGERS: dict[Trigger, str] = {
    "cli": "`podpulse release`",
    "auto": "soak-completed event (auto-release)",
}


def describe_evidence(evidence: Evidence | None) -> str:
    """One line: the soak's id, verdict and figures, or that there was none."""
    if evidence is None:
        return "none (no soak for this endpoint)"
    verdict = "passed" if evidence.passed else "FAILED"
    ended = _iso(evidence.ended_at) if evidence.ended_at else "unknown"
    return (
        f"{evidence.kind} `{_text(evidence.run_id)}` {verdict}: exec P50 "
        f"{_ms(evidence.exec_p50_ms)} / P95 {_ms(evidence.exec_p95_ms)}, total P50 "
        f"{_ms(evidence.total_p50_ms)} / P95 {_ms(evidence.total_p95_ms)}, success "
        f"{_pct(evidence.success_pct)} of {evidence.requests} requests, ended {ended}"
    )


def append_record(path: Path, record: ReleaseRecord) -> None:
    """Append *record* to *path* (created with a header if absent), atomically.

    The new file is written beside the old one (beside a symlink's target) and renamed over
    it, so a crash leaves the old file or the new one. The caller holds the release lock.
    """
    # A symlinked DEPLOYMENT.md is written through its link: the rename replaces the target,
    # never the link itself.
    try:
        target = path.resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python 3.11)
        raise RecordsError(f"{path}: cannot be resolved ({exc})") from None
    try:
        old = target.read_text(encoding="utf-8")
    except FileNotFoundError:
        old = _HEADER
    if old and not old.endswith("\n"):
        old += "\n"
    _write_atomically(target, f"{old}\n{render_record(record)}")


def _write_atomically(path: Path, text: str) -> None:
    folder = path.parent
    handle, temp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="\n") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        if path.exists():
            os.chmod(temp, path.stat().st_mode & 0o7777)
        else:
            os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    # The rename is durable only once the folder's entry is on disk.
    directory = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _comment(record: ReleaseRecord) -> str:
    # ASCII JSON on one line; <, > and & escaped, so no value can close the comment early.
    body = json.dumps(record.model_dump(mode="json"), ensure_ascii=True, separators=(",", ":"))
    body = body.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return f"{_MARKER}{body}{_END}"


# --- reading ----------------------------------------------------------------------------------


def read_records(path: Path) -> list[ReleaseRecord]:
    """Every record in *path*, oldest first; none when the file does not exist yet."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        raise RecordsError(f"{path}: cannot be read ({type(exc).__name__})") from None
    return parse_records(text, source=str(path))


def parse_records(text: str, *, source: str = "DEPLOYMENT.md") -> list[ReleaseRecord]:
    """The records in DEPLOYMENT.md text; RecordsError naming the line of a damaged one."""
    records: list[ReleaseRecord] = []
    first_line: dict[str, tuple[int, str]] = {}  # tag -> (line, commit) of its first record
    for number, line in enumerate(text.splitlines(), start=1):
        indent = len(line) - len(line.lstrip())
        stripped = line.strip()
        if not stripped.startswith(_MARKER.rstrip()):
            continue
        # Markdown hides a comment indented by up to three spaces, as written; one indented
        # further (or by a tab) is a code block, shown as text: neither skipped nor guessed at.
        if indent > _MAX_INDENT or "\t" in line[:indent]:
            raise RecordsError(
                f"{source}: line {number}: a release comment indented by more than "
                f"{_MAX_INDENT} spaces (a Markdown code block); unindent it"
            )
        if not (stripped.startswith(_MARKER) and stripped.endswith(_END)):
            raise RecordsError(f"{source}: line {number}: a release comment that is not closed")
        body = stripped[len(_MARKER) : -len(_END)]
        try:
            record = ReleaseRecord.model_validate_json(body, strict=True)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in error['loc']) or '<record>'}: {error['msg']}"
                for error in exc.errors(include_url=False, include_input=False)
            )
            raise RecordsError(
                f"{source}: line {number}: damaged release record: {problems}"
            ) from None
        earlier = first_line.setdefault(record.tag, (number, record.commit))
        if earlier[1] != record.commit:
            raise RecordsError(
                f"{source}: line {number}: tag {record.tag} is recorded for commit "
                f"{record.commit[:12]} here and for {earlier[1][:12]} on line {earlier[0]}; "
                "a tag names one commit"
            )
        records.append(record)
    return records


# --- formatting -------------------------------------------------------------------------------


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} ms"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:g} %"


def _text(value: str) -> str:
    # podpulse.toml strings may hold a line break or a backtick: shown escaped, never as
    # Markdown structure (a line break would end the bullet, a backtick the code span).
    shown = "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in value)
    return shown.replace("`", "'")
