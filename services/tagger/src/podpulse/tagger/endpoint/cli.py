"""``podpulse endpoint`` (the live endpoint's workers and scaling) and ``podpulse keys``.

``endpoint show|diff|apply|update|history``: the endpoint is RunPod's v2 management API at
RUNPOD_MANAGEMENT_BASE_URL (a twin's ``http://127.0.0.1:PORT/v2`` works the same), with
RUNPOD_API_KEY or RUNPOD_API_KEY_FILE. ``apply`` and ``diff`` target the endpoint their
podpulse.toml names; ``show``, ``update`` and ``history`` the one ``--endpoint`` names, else
RUNPOD_ENDPOINT_ID, else ./podpulse.toml's. A change is shown as a diff and sent only with
``--yes``; ``--dry-run`` shows it and sends nothing.

Exit codes: 0 done (or nothing to change); 1 ``diff`` found differences, or a change was
applied but could not be written to the history; 2 bad flags, podpulse.toml, settings, or a
change without ``--yes``; 3 RunPod refused or could not be reached, or the endpoint changed
while the command ran (nothing was sent). An applied change whose event could not be
published (Redis down) still exits 0: the change and its history record stand, and stderr and
the record's ``event_published`` say the event is missing.

``keys rotate --new-key-file F`` swaps in a new RunPod API key, verified first. The key file
replaced is ``--key-file``, else the one RUNPOD_API_KEY_FILE names: the file every running
podpulse process re-reads (within a second), so they move to the new key without a restart.
The new key is first checked against the job API (``/health`` of the endpoint) and the
management API (``GET /serverless/{id}``) at RUNPOD_ENDPOINT_BASE_URL and
RUNPOD_MANAGEMENT_BASE_URL; the endpoint is ``--endpoint``, else RUNPOD_ENDPOINT_ID, else
./podpulse.toml's. No key is ever printed, logged or written anywhere but the key file.

Exit codes: 0 rotated; 1 an API refused the new key (nothing changed); 2 bad flags, files or
settings (RUNPOD_API_KEY set in the environment, which would shadow the file, included);
3 the APIs could not be reached or the key file could not be replaced (nothing changed).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from pydantic import ValidationError

from podpulse.common.runpod import EndpointConfig, ManagementClient, RunPodError
from podpulse.common.settings import (
    RUNPOD_API_KEY,
    CommonSettings,
    SecretError,
    describe_settings_error,
)

from .._deployment_file import (
    DEFAULT_FILE,
    DeploymentFileError,
    EndpointSpec,
    read_deployment_file,
)
from ..settings import EndpointSettings
from ._change import (
    ConcurrentChange,
    EndpointInputError,
    FieldChange,
    apply_change,
    bus_publisher,
    changes_between,
    config_rows,
    flag_changes,
    read_update_flags,
)
from ._history import HistoryError, read_history
from ._keys import (
    KeyFileError,
    KeyRejected,
    key_file_target,
    read_key_file,
    swap_key_file,
    verify_key,
)

__all__ = ["endpoint_app", "keys_app"]

T = TypeVar("T")

EXIT_DIFFERS, EXIT_USAGE, EXIT_RUNPOD = 1, 2, 3
# podpulse keys rotate's own: the key refused, or the APIs or the key file out of reach.
EXIT_REJECTED, EXIT_UNREACHABLE = 1, 3

endpoint_app = typer.Typer(
    name="endpoint",
    help="Show, diff and change the live endpoint's workers and scaling (RunPod v2 or a twin).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)

_ENDPOINT_HELP = "Endpoint id."
_ENDPOINT_DEFAULT = "RUNPOD_ENDPOINT_ID, else ./podpulse.toml's"
_FILE_HELP = "The deployment file."
# Each flag of `endpoint update` is read as text and parsed by read_update_flags, which names
# the flag on a bad value; the metavar says what it takes.
_UNCHANGED = "unchanged"


def _fail(code: int, message: str) -> NoReturn:
    """One line on stderr (control characters escaped), then exit *code*."""
    line = "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in message)
    typer.echo(f"error: {line}", err=True)
    raise typer.Exit(code)


def _warn(message: str) -> None:
    typer.echo(f"warning: {message}", err=True)


def _from_env(build: Callable[[], T]) -> T:
    """``build()`` (settings from the environment), or exit 2 naming the variable."""
    try:
        return build()
    except ValidationError as exc:
        _fail(EXIT_USAGE, f"invalid settings in the environment: {describe_settings_error(exc)}")


def _resolve_endpoint_id(flag: str | None, common: CommonSettings) -> str:
    """--endpoint, else RUNPOD_ENDPOINT_ID, else ./podpulse.toml's id; exit 2 when none."""
    if flag is not None:
        try:
            # The same shape rule as RUNPOD_ENDPOINT_ID's; the value is never echoed.
            return (
                CommonSettings.model_validate({"RUNPOD_ENDPOINT_ID": flag}).runpod_endpoint_id or ""
            )
        except ValidationError:
            _fail(
                EXIT_USAGE, "--endpoint: not an endpoint id (1-32 lowercase letters, digits, '-')"
            )
    if common.runpod_endpoint_id:
        return common.runpod_endpoint_id
    if DEFAULT_FILE.exists():
        return _deployment(DEFAULT_FILE).id
    _fail(
        EXIT_USAGE, "which endpoint? pass --endpoint, set RUNPOD_ENDPOINT_ID or add ./podpulse.toml"
    )


def _deployment(path: Path) -> EndpointSpec:
    try:
        return read_deployment_file(path).endpoint
    except DeploymentFileError as exc:
        _fail(EXIT_USAGE, str(exc))


def _require_key() -> None:
    try:
        RUNPOD_API_KEY.require()
    except SecretError as exc:
        _fail(EXIT_USAGE, str(exc))


def _client(common: CommonSettings) -> ManagementClient:
    _require_key()
    # The key is re-read before every request, so a rotation mid-command is honoured.
    return ManagementClient(RUNPOD_API_KEY.require, base_url=common.runpod_management_base_url)


def _run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(coro)
    except RunPodError as exc:
        _fail(EXIT_RUNPOD, str(exc))
    except ConcurrentChange as exc:
        _fail(EXIT_RUNPOD, str(exc))


async def _live(common: CommonSettings, endpoint_id: str) -> EndpointConfig:
    async with _client(common) as client:
        return await client.get(endpoint_id)


def _echo_rows(rows: list[tuple[str, str]]) -> None:
    for name, value in rows:
        typer.echo(f"  {name:<24}{value}")


def _echo_diff(endpoint_id: str, base_url: str, changes: tuple[FieldChange, ...]) -> None:
    if not changes:
        typer.echo(f"endpoint {endpoint_id} at {base_url}: no changes")
        return
    typer.echo(f"endpoint {endpoint_id} at {base_url}: {len(changes)} change(s)")
    for change in changes:
        typer.echo(f"  {change.name:<24}{change.before} -> {change.after}")


@endpoint_app.command("show")
def show(
    endpoint: Annotated[
        str | None,
        typer.Option("--endpoint", help=_ENDPOINT_HELP, show_default=_ENDPOINT_DEFAULT),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
) -> None:
    """Print the live endpoint's workers and scaling."""
    common = _from_env(CommonSettings)
    endpoint_id = _resolve_endpoint_id(endpoint, common)
    config = _run(_live(common, endpoint_id))
    if as_json:
        typer.echo(json.dumps({"endpoint_id": endpoint_id, **config.model_dump(mode="json")}))
        return
    typer.echo(f"endpoint {endpoint_id} at {common.runpod_management_base_url}")
    _echo_rows(config_rows(config))


@endpoint_app.command("diff")
def diff(
    file: Annotated[Path, typer.Argument(help=_FILE_HELP)] = DEFAULT_FILE,
) -> None:
    """Show how the live endpoint differs from FILE; exit 1 when it does."""
    common = _from_env(CommonSettings)
    spec = _deployment(file)
    _same_endpoint(spec.id, common, file)
    live = _run(_live(common, spec.id))
    changes = changes_between(live, spec.config())
    _echo_diff(spec.id, common.runpod_management_base_url, changes)
    if changes:
        raise typer.Exit(EXIT_DIFFERS)


def _same_endpoint(file_id: str, common: CommonSettings, file: Path) -> None:
    # Applying one endpoint's file to another is the mistake this refuses.
    if common.runpod_endpoint_id and common.runpod_endpoint_id != file_id:
        _fail(
            EXIT_USAGE,
            f"{file} describes endpoint {file_id} but RUNPOD_ENDPOINT_ID is "
            f"{common.runpod_endpoint_id}; unset it or use the file of that endpoint",
        )


def _change(
    common: CommonSettings,
    endpoint_id: str,
    make: Callable[[EndpointConfig], EndpointConfig],
    *,
    yes: bool,
    dry_run: bool,
    command: str,
    source: str,
) -> None:
    """Read live, build the desired config, show the diff, then apply it under --yes."""
    if yes and dry_run:
        _fail(EXIT_USAGE, "--yes and --dry-run contradict each other; pass one")
    settings = _from_env(EndpointSettings)
    base_url = common.runpod_management_base_url
    client = _client(common)

    async def scenario() -> None:
        async with client:
            live = await client.get(endpoint_id)
            desired = make(live)
            changes = changes_between(live, desired)
            _echo_diff(endpoint_id, base_url, changes)
            if not changes:
                return
            if dry_run:
                typer.echo("dry run: nothing sent")
                return
            if not yes:
                _fail(EXIT_USAGE, "not applied: pass --yes to apply this change (or --dry-run)")
            record, not_sent = await apply_change(
                client,
                endpoint_id,
                desired,
                shown=live,
                history_file=settings.endpoint_history_file,
                publisher=bus_publisher(common, settings.endpoint_publish_attempts),
                command=command,
                source=source,
            )
            typer.echo(f"applied at {record.at.isoformat()}")
            if record.after != desired:
                typer.echo(
                    "warning: the endpoint reports a config other than the one sent:", err=True
                )
                for change in changes_between(desired, record.after):
                    typer.echo(
                        f"  {change.name}: sent {change.before}, reported {change.after}", err=True
                    )
            if not_sent is not None:
                _warn(
                    f"endpoint_config_changed not published ({not_sent}); the change is "
                    f"applied and kept in {settings.endpoint_history_file}"
                )

    try:
        _run(scenario())
    except EndpointInputError as exc:
        _fail(EXIT_USAGE, str(exc))
    except HistoryError as exc:
        _fail(EXIT_DIFFERS, f"the change was applied but not recorded: {exc}")


@endpoint_app.command("apply")
def apply(
    file: Annotated[Path, typer.Argument(help=_FILE_HELP)] = DEFAULT_FILE,
    yes: Annotated[bool, typer.Option("--yes", help="Apply the change shown.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show it, send nothing.")] = False,
) -> None:
    """Make the live endpoint's workers and scaling those of FILE."""
    common = _from_env(CommonSettings)
    spec = _deployment(file)
    _same_endpoint(spec.id, common, file)
    desired = spec.config()
    _change(common, spec.id, lambda _: desired, yes=yes, dry_run=dry_run,
            command="apply", source=str(file))  # fmt: skip


@endpoint_app.command("update")
def update(
    *,
    workers_min: Annotated[
        str | None,
        typer.Option(
            "--workers-min", metavar="<integer>", help="Workers kept warm.", show_default=_UNCHANGED
        ),
    ] = None,
    workers_max: Annotated[
        str | None,
        typer.Option(
            "--workers-max", metavar="<integer>", help="Most workers.", show_default=_UNCHANGED
        ),
    ] = None,
    idle_timeout: Annotated[
        str | None,
        typer.Option(
            "--idle-timeout",
            metavar="<integer>",
            help="Seconds an idle worker is kept.",
            show_default=_UNCHANGED,
        ),
    ] = None,
    scaler_type: Annotated[
        str | None,
        typer.Option(
            "--scaler-type",
            metavar="<QUEUE_DELAY|REQUEST_COUNT>",
            help="How the endpoint scales.",
            show_default=_UNCHANGED,
        ),
    ] = None,
    scaler_value: Annotated[
        str | None,
        typer.Option(
            "--scaler-value",
            metavar="<number>",
            help="QUEUE_DELAY: seconds (>= 0.5); REQUEST_COUNT: requests per worker.",
            show_default=_UNCHANGED,
        ),
    ] = None,
    endpoint: Annotated[
        str | None,
        typer.Option("--endpoint", help=_ENDPOINT_HELP, show_default=_ENDPOINT_DEFAULT),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Apply the change shown.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show it, send nothing.")] = False,
) -> None:
    """Change some of the live endpoint's workers and scaling settings."""
    common = _from_env(CommonSettings)
    try:
        changes = read_update_flags(
            workers_min=workers_min, workers_max=workers_max, idle_timeout_s=idle_timeout,
            scaler_type=scaler_type, scaler_value=scaler_value,
        )  # fmt: skip
    except EndpointInputError as exc:
        _fail(EXIT_USAGE, str(exc))
    endpoint_id = _resolve_endpoint_id(endpoint, common)
    _change(common, endpoint_id, lambda live: flag_changes(live, changes), yes=yes,
            dry_run=dry_run, command="update", source="flags")  # fmt: skip


@endpoint_app.command("history")
def history(
    endpoint: Annotated[
        str | None,
        typer.Option("--endpoint", help="Only this endpoint.", show_default="every endpoint"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """List the endpoint config changes podpulse applied, oldest first."""
    settings = _from_env(EndpointSettings)
    try:
        records = read_history(settings.endpoint_history_file, endpoint_id=endpoint)
    except HistoryError as exc:
        _fail(EXIT_USAGE, str(exc))
    for record in records:
        if as_json:
            typer.echo(record.model_dump_json())
            continue
        published = "" if record.event_published else " (event not published)"
        typer.echo(f"{record.at.isoformat()} {record.endpoint_id} {record.command} "
                   f"from {record.source}{published}")  # fmt: skip
        for change in changes_between(record.before, record.after):
            typer.echo(f"  {change.name:<24}{change.before} -> {change.after}")


keys_app = typer.Typer(
    name="keys",
    help="Rotate the RunPod API key podpulse uses, without restarting anything.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


@keys_app.command("rotate")
def rotate(
    new_key_file: Annotated[
        Path, typer.Option("--new-key-file", help="A file holding the new key (only it).")
    ],
    key_file: Annotated[
        Path | None,
        typer.Option(
            "--key-file", help="The key file to replace.", show_default="RUNPOD_API_KEY_FILE"
        ),
    ] = None,
    endpoint: Annotated[
        str | None,
        typer.Option(
            "--endpoint",
            help="Endpoint the key is verified against.",
            show_default=_ENDPOINT_DEFAULT,
        ),
    ] = None,
) -> None:
    """Verify the new key against RunPod's APIs, then swap it into the key file atomically."""
    common = _from_env(CommonSettings)
    if RUNPOD_API_KEY.origin() == "environment":
        _fail(
            EXIT_USAGE,
            f"{RUNPOD_API_KEY.name} is set in the environment and wins over "
            f"{RUNPOD_API_KEY.file_variable}: keep the key in a file (unset "
            f"{RUNPOD_API_KEY.name}) so it can be rotated without a restart",
        )
    target = key_file if key_file is not None else RUNPOD_API_KEY.file_path()
    if target is None:
        _fail(EXIT_USAGE, f"which key file? pass --key-file or set {RUNPOD_API_KEY.file_variable}")
    endpoint_id = _resolve_endpoint_id(endpoint, common)
    try:
        new_key = read_key_file(new_key_file)
        written_to = key_file_target(target)
        current = read_key_file(target, what="key file") if written_to.exists() else None
    except KeyFileError as exc:
        _fail(EXIT_USAGE, str(exc))
    if current == new_key:
        _fail(EXIT_USAGE, f"--new-key-file holds the key already in {target}; nothing to rotate")
    try:
        asyncio.run(
            verify_key(
                new_key,
                endpoint_id,
                endpoint_base_url=common.runpod_endpoint_base_url,
                management_base_url=common.runpod_management_base_url,
            )
        )
    except KeyRejected as exc:
        _fail(EXIT_REJECTED, f"{exc}; {target} is unchanged")
    except RunPodError as exc:
        _fail(EXIT_UNREACHABLE, f"the new key could not be verified ({exc}); {target} is unchanged")
    try:
        written = swap_key_file(target, new_key)
    except KeyFileError as exc:
        _fail(EXIT_UNREACHABLE, str(exc))
    typer.echo(
        f"verified the new key against endpoint {endpoint_id}'s job and management APIs and "
        f"replaced {written}; running podpulse processes use it within a second. Revoke the "
        f"old key in RunPod's console, and delete {new_key_file} if nothing else needs it."
    )
