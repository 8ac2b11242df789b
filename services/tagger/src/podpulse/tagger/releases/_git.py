"""The git operations a release needs, each one real ``git`` command in the user's repository.

Nothing is reimplemented: git decides what a valid tag name is, what "dirty" means and where
the repository's private folder is. Every call runs with a minimal environment (no secrets,
no pager, no prompts), so a release can run unattended and a key in the environment never
reaches a child process.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from podpulse.common.settings import KNOWN_SECRETS

__all__ = ["GitError", "Repository"]

_SHA = re.compile(r"^[0-9a-f]{40}$")
# Git's own variables that matter here; everything else a release needs is in its config.
_KEPT_PREFIXES = ("GIT_AUTHOR_", "GIT_COMMITTER_", "GIT_CONFIG", "GIT_SSH")
_KEPT_NAMES = ("HOME", "PATH", "LANG", "LC_ALL", "TZ", "SSH_AUTH_SOCK", "USER", "LOGNAME")


class GitError(RuntimeError):
    """git is missing, or a git command failed; the message is git's own first line."""


def _child_env() -> dict[str, str]:
    secret_names = {s.name for s in KNOWN_SECRETS} | {s.file_variable for s in KNOWN_SECRETS}
    env = {
        name: value
        for name, value in os.environ.items()
        if (name in _KEPT_NAMES or name.startswith(_KEPT_PREFIXES)) and name not in secret_names
    }
    # Never wait on a terminal that is not there: no pager, no credential or editor prompt.
    env |= {"GIT_TERMINAL_PROMPT": "0", "GIT_PAGER": "cat", "GIT_EDITOR": "true", "LC_ALL": "C"}
    return env


@dataclass(frozen=True)
class Repository:
    """A git work tree: ``root`` is its top-level folder."""

    root: Path

    @classmethod
    def discover(cls, path: Path) -> Repository:
        """The repository containing *path*; GitError when there is none."""
        if shutil.which("git") is None:
            raise GitError("git is not installed (or not on PATH)")
        if not path.is_dir():
            raise GitError(f"{path} is not a folder")
        top = _git(path, "rev-parse", "--show-toplevel")
        return cls(Path(top))

    def git(self, *args: str) -> str:
        """Run ``git <args>`` here; its stdout without the final newline; GitError on failure."""
        return _git(self.root, *args)

    @property
    def git_dir(self) -> Path:
        """The repository's private folder (``.git``, shared by linked work trees)."""
        return (self.root / self.git("rev-parse", "--git-common-dir")).resolve()

    def head(self) -> str:
        """The full id of the commit HEAD names; GitError in a repository without commits."""
        return self.git("rev-parse", "--verify", "HEAD^{commit}")

    def branch(self) -> str | None:
        """The checked-out branch, or None on a detached HEAD."""
        try:
            return self.git("symbolic-ref", "--quiet", "--short", "HEAD")
        except GitError:
            return None

    def committed_at(self, commit: str) -> datetime:
        """When *commit* was committed (the committer date), in UTC."""
        return datetime.fromtimestamp(int(self.git("show", "-s", "--format=%ct", commit)), UTC)

    def changes(
        self, ignoring: Iterable[Path] = (), *, ignoring_folders: Iterable[str] = ()
    ) -> list[str]:
        """Paths with uncommitted changes, untracked ones included, as git status shows them.

        Paths under *ignoring* (absolute, or relative to the root) are left out: the release's
        own record file is written after the check and must not make the next release refuse.
        So are paths inside a folder named one of *ignoring_folders*, at any depth.
        """
        skipped = [self._relative(path) for path in ignoring]
        folders = frozenset(ignoring_folders)
        out = self.git("status", "--porcelain=v1", "-z", "--untracked-files=all")
        entries = [entry for entry in out.split("\0") if entry]
        paths: list[str] = []
        index = 0
        while index < len(entries):
            entry = entries[index]
            status, path = entry[:2], entry[3:]
            if "R" in status or "C" in status:
                index += 1  # the source path of a rename or copy follows
            index += 1
            if any(_under(path, skip) for skip in skipped if skip is not None):
                continue
            # --untracked-files=all lists files, never a folder: the folders are its parents.
            if folders.intersection(PurePosixPath(path).parts[:-1]):
                continue
            paths.append(path)
        return paths

    def tag_commit(self, tag: str) -> str | None:
        """The commit *tag* points at, or None when there is no such tag."""
        try:
            return self.git("rev-parse", "--verify", "--quiet", f"refs/tags/{tag}^{{commit}}")
        except GitError:
            return None

    def tag_is_annotated(self, tag: str) -> bool:
        """Whether *tag* is an annotated tag object rather than a bare name for a commit."""
        return self.git("cat-file", "-t", f"refs/tags/{tag}") == "tag"

    def tags(self, pattern: str) -> list[str]:
        """Tag names matching the glob *pattern*."""
        out = self.git("tag", "--list", pattern)
        return [line for line in out.splitlines() if line]

    def tags_at(self, commit: str, pattern: str) -> list[str]:
        """Tag names matching *pattern* that point at *commit*."""
        out = self.git("tag", "--list", pattern, "--points-at", commit)
        return [line for line in out.splitlines() if line]

    def is_valid_tag_name(self, tag: str) -> bool:
        """Whether git accepts *tag* as a tag name (and it cannot be read as an option)."""
        if not tag or tag.startswith("-") or not tag.isprintable():
            return False
        try:
            self.git("check-ref-format", f"refs/tags/{tag}")
        except GitError:
            return False
        return True

    def create_tag(self, tag: str, commit: str, message: str) -> None:
        """An annotated *tag* on *commit* with *message*; GitError when it exists already."""
        if not _SHA.match(commit):
            raise GitError(f"not a full commit id: {commit!r}")
        _git(self.root, "tag", "--annotate", "--file=-", tag, commit, stdin=message)

    def push_tag(self, remote: str, tag: str) -> None:
        """Push *tag* (only the tag) to *remote*."""
        self.git("push", "--quiet", "--", remote, f"refs/tags/{tag}:refs/tags/{tag}")

    def _relative(self, path: Path) -> str | None:
        absolute = path if path.is_absolute() else self.root / path
        try:
            return PurePosixPath(absolute.resolve().relative_to(self.root.resolve())).as_posix()
        except ValueError:
            return None  # outside the work tree: git status never shows it anyway


def _under(path: str, prefix: str) -> bool:
    path = path.rstrip("/")
    return prefix in (".", "") or path == prefix or path.startswith(prefix.rstrip("/") + "/")


def _git(cwd: Path, *args: str, stdin: str | None = None) -> str:
    # S603/S607: the argv is fixed words and values git itself validates; no shell.
    try:
        done = subprocess.run(  # noqa: S603
            ["git", *args],  # noqa: S607
            cwd=cwd,
            input=stdin,
            capture_output=True,
            text=True,
            env=_child_env(),
            check=False,
            timeout=120,
        )
    except FileNotFoundError:
        raise GitError(f"git is not installed, or {cwd} is gone") from None
    except subprocess.TimeoutExpired:
        raise GitError(f"git {args[0]} did not finish in 120 s") from None
    if done.returncode != 0:
        first = next((line for line in done.stderr.splitlines() if line.strip()), "")
        raise GitError(f"git {args[0]} failed: {first or f'exit {done.returncode}'}")
    return done.stdout.rstrip("\n")
