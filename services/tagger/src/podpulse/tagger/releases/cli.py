"""``podpulse release`` and ``podpulse releases``, run inside the user's git repository.

Exit codes of ``release``: 0 released, repaired, already released, or a dry run; 1 refused
(the gate, a dirty tree, a detached HEAD, a tag on another commit) or a git step failed
(rerun to repair); 2 bad flags, settings, podpulse.toml or DEPLOYMENT.md. An event that
cannot be published (Redis down) is one line on stderr and does not change the exit code:
the tag and the record are the release, and they are written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from podpulse.common.bus import create_celery_app
from podpulse.common.settings import CommonSettings, describe_settings_error

from .._deployment_file import DeploymentFileError, read_deployment_file
from ..settings import ReleaseSettings
from ._git import GitError, Repository
from ._publish import CLI_PUBLISH_DELAYS_S, publish_release
from ._records import RecordsError, ReleaseRecord, describe_evidence, read_records
from ._release import ReleaseOutcome, ReleaseRefused, ReleaseRequest, ReleaseUsageError
from ._release import release as run_release

__all__ = ["release", "releases"]

_EXIT_REFUSED, _EXIT_USAGE = 1, 2


def _fail(code: int, message: str) -> NoReturn:
    # One line whatever the input held: a line break in a flag is shown escaped.
    line = "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in message)
    label = "refused" if code == _EXIT_REFUSED else "error"
    console = Console(stderr=True)
    console.print(f"[red]{label}:[/red] {escape(line)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _settings() -> tuple[CommonSettings, ReleaseSettings]:
    try:
        return CommonSettings(), ReleaseSettings()
    except ValidationError as exc:
        _fail(_EXIT_USAGE, f"invalid settings in the environment: {describe_settings_error(exc)}")


def _repository() -> Repository:
    try:
        return Repository.discover(Path.cwd())
    except GitError as exc:
        _fail(_EXIT_USAGE, f"run inside the git repository to release ({exc})")


def release(
    tag: Annotated[
        str | None,
        typer.Option(help="The tag to create.", show_default="the next vX.Y-production"),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be done; write nothing.")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Release without a passing soak (needs --reason).")
    ] = False,
    reason: Annotated[
        str | None,
        typer.Option(help="Why --force overrides the gate; it is recorded.", show_default="none"),
    ] = None,
    push: Annotated[
        str | None,
        typer.Option(
            metavar="<remote>", help="Push the tag to this git remote.", show_default="no push"
        ),
    ] = None,
    evidence: Annotated[
        str | None,
        typer.Option(
            metavar="<run id>", help="The soak to rest on.", show_default="the latest soak"
        ),
    ] = None,
) -> None:
    """Tag HEAD as a production release and record it in DEPLOYMENT.md, behind the soak gate."""
    if force != (reason is not None):
        _fail(_EXIT_USAGE, "--force and --reason go together: --force --reason 'why'")
    common, settings = _settings()
    repo = _repository()
    try:
        deployment = read_deployment_file(repo.root / settings.deployment_file)
    except DeploymentFileError as exc:
        _fail(_EXIT_USAGE, str(exc))
    request = ReleaseRequest(
        tag=tag,
        dry_run=dry_run,
        force_reason=reason,
        push_remote=push,
        evidence_run_id=evidence,
        endpoint_api=common.runpod_endpoint_base_url,
    )
    try:
        outcome = run_release(repo, deployment.endpoint, settings, request)
    except (ReleaseUsageError, RecordsError) as exc:
        _fail(_EXIT_USAGE, str(exc))
    except ReleaseRefused as exc:
        _fail(_EXIT_REFUSED, str(exc))
    except (GitError, OSError) as exc:
        _fail(_EXIT_REFUSED, f"{exc}; nothing done twice if you rerun: it repairs what is missing")
    _show(outcome)
    if outcome.record_written:
        app = create_celery_app("tagger", common)
        problem = publish_release(app, outcome.record, CLI_PUBLISH_DELAYS_S)
        if problem is not None:
            typer.echo(
                f"warning: the release is recorded, but release_recorded was not published "
                f"(the bus at REDIS_URL is unreachable: {problem})",
                err=True,
            )


_HEADLINES = {
    "released": "released {tag} on {commit}",
    "repaired": "repaired {tag} on {commit} (added what an earlier run left out)",
    "already_released": "{tag} on {commit} is already released and recorded: nothing to do",
    "dry_run": "dry run: would release {tag} on {commit}",
}


def _show(outcome: ReleaseOutcome) -> None:
    record = outcome.record
    typer.echo(_HEADLINES[outcome.action].format(tag=record.tag, commit=record.commit[:12]))
    for warning in outcome.warnings:
        typer.echo(f"warning: {warning}", err=True)
    if outcome.action == "dry_run":
        for step in outcome.steps:
            typer.echo(f"  - {step}")
        typer.echo("tag message:")
        for line in outcome.message.splitlines():
            typer.echo(f"  | {line}")
        return
    typer.echo(f"  evidence: {describe_evidence(record.evidence)}")
    if record.force_reason is not None:
        typer.echo(f"  forced: {record.force_reason}")
    if outcome.pushed:
        typer.echo("  tag pushed")


def releases(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the records as a JSON array.")
    ] = False,
) -> None:
    """List the releases recorded in DEPLOYMENT.md, oldest first."""
    _, settings = _settings()
    try:
        root = Repository.discover(Path.cwd()).root
    except GitError:
        root = Path.cwd()  # a copy of DEPLOYMENT.md outside a repository reads the same
    try:
        records = read_records(root / settings.records_file)
    except RecordsError as exc:
        _fail(_EXIT_USAGE, str(exc))
    if as_json:
        typer.echo(json.dumps([record.model_dump(mode="json") for record in records], indent=2))
        return
    if not records:
        typer.echo(f"no releases recorded in {settings.records_file}")
        return
    for record in records:
        typer.echo(_row(record))


def _row(record: ReleaseRecord) -> str:
    evidence = record.evidence
    rests_on = (
        f"forced: {record.force_reason}"
        if record.force_reason is not None
        else f"soak {evidence.run_id}"
        if evidence is not None
        else "-"
    )
    p50s = (
        f"exec P50 {evidence.exec_p50_ms:.0f} ms, total P50 {evidence.total_p50_ms:.0f} ms"
        if evidence is not None
        and evidence.exec_p50_ms is not None
        and evidence.total_p50_ms is not None
        else "P50s n/a"
    )
    when = record.recorded_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    return (
        f"{record.tag:<20} {when}  {record.commit[:12]}  {record.endpoint.id}  "
        f"{p50s}  {rests_on}  ({record.trigger})"
    )
