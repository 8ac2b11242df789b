"""``podpulse keys rotate --new-key-file F``: swap in a new RunPod API key, verified first.

The key file replaced is ``--key-file``, else the one RUNPOD_API_KEY_FILE names: the file
every running podpulse process re-reads (within a second), so they move to the new key
without a restart. The new key is first checked against the job API (``/health`` of the
endpoint) and the management API (``GET /serverless/{id}``) at RUNPOD_ENDPOINT_BASE_URL and
RUNPOD_MANAGEMENT_BASE_URL; the endpoint is ``--endpoint``, else RUNPOD_ENDPOINT_ID, else
./podpulse.toml's. No key is ever printed, logged or written anywhere but the key file.

Exit codes: 0 rotated; 1 an API refused the new key (nothing changed); 2 bad flags, files or
settings (RUNPOD_API_KEY set in the environment, which would shadow the file, included);
3 the APIs could not be reached or the key file could not be replaced (nothing changed).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from podpulse.common.runpod import RunPodError
from podpulse.common.settings import RUNPOD_API_KEY, CommonSettings

from ._endpoint_cli import fail, from_env, resolve_endpoint_id
from ._keys import KeyFileError, KeyRejected, read_key_file, swap_key_file, verify_key

__all__ = ["app"]

EXIT_REJECTED, EXIT_USAGE, EXIT_UNREACHABLE = 1, 2, 3

app = typer.Typer(
    name="keys",
    help="Rotate the RunPod API key podpulse uses, without restarting anything.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


@app.command("rotate")
def rotate(
    new_key_file: Annotated[
        Path, typer.Option("--new-key-file", help="A file holding the new key (only it).")
    ],
    key_file: Annotated[
        Path | None,
        typer.Option("--key-file", help="The key file to replace (default RUNPOD_API_KEY_FILE)."),
    ] = None,
    endpoint: Annotated[
        str | None, typer.Option("--endpoint", help="Endpoint the key is verified against.")
    ] = None,
) -> None:
    """Verify the new key against RunPod's APIs, then swap it into the key file atomically."""
    common = from_env(CommonSettings)
    if RUNPOD_API_KEY.origin() == "environment":
        fail(
            EXIT_USAGE,
            f"{RUNPOD_API_KEY.name} is set in the environment and wins over "
            f"{RUNPOD_API_KEY.file_variable}: keep the key in a file (unset "
            f"{RUNPOD_API_KEY.name}) so it can be rotated without a restart",
        )
    target = key_file if key_file is not None else RUNPOD_API_KEY.file_path()
    if target is None:
        fail(EXIT_USAGE, f"which key file? pass --key-file or set {RUNPOD_API_KEY.file_variable}")
    endpoint_id = resolve_endpoint_id(endpoint, common)
    try:
        new_key = read_key_file(new_key_file)
        current = read_key_file(target, what="key file") if target.exists() else None
    except KeyFileError as exc:
        fail(EXIT_USAGE, str(exc))
    if current == new_key:
        fail(EXIT_USAGE, f"--new-key-file holds the key already in {target}; nothing to rotate")
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
        fail(EXIT_REJECTED, f"{exc}; {target} is unchanged")
    except RunPodError as exc:
        fail(EXIT_UNREACHABLE, f"the new key could not be verified ({exc}); {target} is unchanged")
    try:
        written = swap_key_file(target, new_key)
    except KeyFileError as exc:
        fail(EXIT_UNREACHABLE, str(exc))
    typer.echo(
        f"verified the new key against endpoint {endpoint_id}'s job and management APIs and "
        f"replaced {written}; running podpulse processes use it within a second. Revoke the "
        f"old key in RunPod's console, and delete {new_key_file} if nothing else needs it."
    )
