"""Rotating the RunPod API key: read the new one, prove it works, swap the secret file.

Running podpulse processes read RUNPOD_API_KEY_FILE through ``podpulse.common.settings.Secret``
at most a second apart, so replacing that file is the whole rotation: no restart. The swap is
a rename of a fully written, fsynced temporary file in the same folder, so a reader sees the
old key or the new one, never a half-written file. Nothing here prints, logs or raises with a
key in it: errors say which file or API, never what was read.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from podpulse.common.runpod import ManagementClient, RunPodAuthError, RunPodClient

__all__ = [
    "MAX_KEY_CHARS",
    "KeyFileError",
    "KeyRejected",
    "key_file_target",
    "read_key_file",
    "swap_key_file",
    "verify_key",
]

# RunPod keys are ~45 characters; a file this long holds something else (a whole env file).
MAX_KEY_CHARS = 512
# Read at most this much: a key with generous whitespace around it fits, and /dev/zero or a
# huge file is refused after 4 KiB instead of filling memory.
_MAX_KEY_FILE_BYTES = 4096


class KeyFileError(ValueError):
    """A key file that cannot be read or does not hold exactly one key (the key not shown)."""


class KeyRejected(RuntimeError):
    """An API refused the new key; the message names which API, never the key."""


def read_key_file(path: Path, *, what: str = "--new-key-file") -> str:
    """The one key *path* holds (surrounding whitespace dropped); KeyFileError otherwise."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(_MAX_KEY_FILE_BYTES + 1)
    except FileNotFoundError:
        raise KeyFileError(f"{what} {path}: no such file") from None
    except OSError as exc:
        raise KeyFileError(f"{what} {path}: cannot be read ({exc.strerror or exc})") from None
    if len(raw) > _MAX_KEY_FILE_BYTES:
        raise KeyFileError(
            f"{what} {path}: holds more than {_MAX_KEY_FILE_BYTES} bytes, not one API key"
        )
    try:
        key = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        raise KeyFileError(f"{what} {path}: holds non-ASCII bytes; an API key is ASCII") from None
    if not key:
        raise KeyFileError(f"{what} {path}: is empty")
    if len(key) > MAX_KEY_CHARS:
        raise KeyFileError(f"{what} {path}: holds {len(key)} characters, not one API key")
    if any(c.isspace() or not c.isprintable() for c in key):
        raise KeyFileError(
            f"{what} {path}: holds spaces, several lines or control characters; "
            "expected exactly one key"
        )
    return key


async def verify_key(
    key: str, endpoint_id: str, *, endpoint_base_url: str, management_base_url: str
) -> None:
    """Prove *key* works where podpulse uses it: the job API and the management API.

    KeyRejected naming the API that refused it; other RunPod errors (unreachable, 5xx,
    unknown endpoint) propagate: an unverified key is not swapped in.
    """
    async with RunPodClient(endpoint_id, key, base_url=endpoint_base_url) as jobs:
        try:
            await jobs.health()
        except RunPodAuthError:
            raise KeyRejected(
                f"the job API ({endpoint_base_url}/{endpoint_id}/health) refused the new key"
            ) from None
    async with ManagementClient(key, base_url=management_base_url) as management:
        try:
            await management.get(endpoint_id)
        except RunPodAuthError:
            raise KeyRejected(
                f"the management API ({management_base_url}/serverless/{endpoint_id}) "
                "refused the new key"
            ) from None


def key_file_target(path: Path) -> Path:
    """The file a swap of *path* writes (through symlinks; it need not exist yet).

    Checked before any API is called: a symlink loop or a folder that is not there is a
    KeyFileError now, not a failure after the new key was sent to RunPod.
    """
    try:
        target = path.resolve()
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop (Python 3.11)
        raise KeyFileError(f"{path}: a symlink loop, or a link that cannot be followed") from None
    if not target.parent.is_dir():
        raise KeyFileError(f"{path}: its folder {target.parent} does not exist")
    return target


def swap_key_file(path: Path, key: str) -> Path:
    """Replace the file at *path* (through a symlink: its target) with *key*, atomically.

    Returns the file written. The new file keeps the old one's permission bits (0600 when
    there was none). KeyFileError when the folder cannot be written; the old file is then
    untouched.
    """
    target = key_file_target(path)
    try:
        mode = target.stat().st_mode & 0o777
    except FileNotFoundError:
        mode = 0o600
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    tmp_name = ""
    try:
        # mkstemp creates the file 0600: the key is never readable by others, even briefly.
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".new")
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(key + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, mode)
        os.replace(tmp_name, target)
        tmp_name = ""
        _fsync_dir(target.parent)
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot be replaced ({exc.strerror or exc})") from None
    finally:
        if tmp_name:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
    return target


def _fsync_dir(folder: Path) -> None:
    # The rename is durable only once the folder's entry is on disk.
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
