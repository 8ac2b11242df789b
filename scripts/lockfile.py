"""Answers what scripts/bootstrap and the Dockerfiles need to know from uv.lock.

uv.lock is the one lock file. uv resolves torch from PyPI, where the Linux x86_64 wheel is a
CUDA build that pulls in several GB of nvidia-*, triton and cuda-* wheels; machines with a
CPU wheel of the pinned torch (and the GPU image, whose base image brings torch) install
torch apart and the rest of the lock with pip. `requirements` decides which of torch's
locked dependencies the installed torch really needs from that torch's own metadata, so no
CUDA package name is written down anywhere.

Commands (run from anywhere; paths are relative to the repository root):
  uv-version                 the uv version the root pyproject requires
  torch-version              the torch version pinned in uv.lock
  members [--package NAME]... [--without NAME]... [--paths]
                             workspace members (or their paths): all of them, or those the
                             named packages need, less the ones named by --without
  requirements ALL PRUNED    the export ALL (uv export with torch) reduced to PRUNED (the
                             same export with --prune torch) plus what the installed torch
                             requires, on stdout; what was dropped goes to stderr
  extraneous REQUIREMENTS    installed distributions that neither REQUIREMENTS, the members
                             nor torch account for (left over from an older lock)
"""

from __future__ import annotations

import argparse
import importlib.metadata
import re
import sys
import tomllib
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_NAME = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)")


def normalize(name: str) -> str:
    """PEP 503 normalisation, the form uv.lock uses."""
    return re.sub(r"[-_.]+", "-", name).lower()


def load_lock(root: Path = ROOT) -> dict[str, object]:
    """uv.lock, parsed."""
    with (root / "uv.lock").open("rb") as f:
        return tomllib.load(f)


def _packages(lock: dict[str, object]) -> list[dict[str, object]]:
    packages = lock.get("package")
    if not isinstance(packages, list):
        raise SystemExit("uv.lock has no [[package]] entries; run `make lock`")
    return packages


def uv_version(root: Path = ROOT) -> str:
    """The exact uv version `[tool.uv] required-version` asks for."""
    with (root / "pyproject.toml").open("rb") as f:
        spec = tomllib.load(f).get("tool", {}).get("uv", {}).get("required-version", "")
    match = re.fullmatch(r"==\s*([0-9][0-9A-Za-z.]*)", spec)
    if match is None:
        raise SystemExit(
            f"the root pyproject's [tool.uv] required-version must pin one uv (==X.Y.Z), "
            f"got {spec!r}"
        )
    return match.group(1)


def torch_version(lock: dict[str, object]) -> str:
    """The one torch version in the lock."""
    versions = {str(p["version"]) for p in _packages(lock) if p.get("name") == "torch"}
    if len(versions) != 1:
        raise SystemExit(
            f"uv.lock must hold exactly one torch version, found {sorted(versions) or 'none'}; "
            "pin it in the root pyproject's [tool.uv] constraint-dependencies"
        )
    return versions.pop()


def _dependency_graph(lock: dict[str, object]) -> dict[str, set[str]]:
    """Package name -> names it may depend on (any version, marker or extra: an upper bound)."""
    graph: dict[str, set[str]] = {}
    for package in _packages(lock):
        deps = graph.setdefault(normalize(str(package["name"])), set())
        groups = [package.get("dependencies", [])]
        optional = package.get("optional-dependencies", {})
        if isinstance(optional, dict):
            groups.extend(optional.values())
        for group in groups:
            assert isinstance(group, list)
            deps.update(normalize(str(dep["name"])) for dep in group)
    return graph


def closure(graph: dict[str, set[str]], start: Iterable[str]) -> set[str]:
    """Every name reachable from `start`, `start` included."""
    seen: set[str] = set()
    todo = [normalize(name) for name in start]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(graph.get(name, ()))
    return seen


def workspace_members(lock: dict[str, object]) -> dict[str, str]:
    """Member name -> its path relative to the root, from the lock's editable sources."""
    members: dict[str, str] = {}
    for package in _packages(lock):
        source = package.get("source", {})
        if isinstance(source, dict) and "editable" in source:
            members[normalize(str(package["name"]))] = str(source["editable"])
    if not members:
        raise SystemExit("uv.lock lists no workspace members; run `make lock`")
    return dict(sorted(members.items()))


def select_members(
    lock: dict[str, object], packages: list[str], without: list[str]
) -> dict[str, str]:
    """The members `packages` need (all members when none is named), less `without`."""
    members = workspace_members(lock)
    for name in [*packages, *without]:
        if normalize(name) not in members:
            raise SystemExit(f"{name!r} is not a workspace member; members: {', '.join(members)}")
    wanted = set(members)
    if packages:
        wanted = closure(_dependency_graph(lock), packages) & set(members)
    wanted -= {normalize(name) for name in without}
    return {name: path for name, path in members.items() if name in wanted}


def split_requirements(text: str) -> dict[str, str]:
    """A `uv export` requirements file as name -> its entry (requirement, hashes, comments).

    Names repeat when the lock forks by Python version; their entries are joined.
    """
    entries: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        match = _NAME.match(line)
        if match:
            current = entries.setdefault(normalize(match.group(1)), [])
        elif line[:1] in ("-", "#"):
            current = None  # a header comment or an option line belongs to no entry
            continue
        if current is not None:
            current.append(line)
    return {name: "\n".join(lines) for name, lines in entries.items()}


def installed_torch_requires() -> set[str]:
    """The names the installed torch requires, its optional extras left out."""
    names = set()
    for requirement in importlib.metadata.requires("torch") or []:
        requirement_part, _, marker = requirement.partition(";")
        if "extra" in marker:
            continue
        match = _NAME.match(requirement_part.strip())
        assert match, requirement
        names.add(normalize(match.group(1)))
    return names


def reduce_requirements(
    lock: dict[str, object], full: str, pruned: str, torch_requires: set[str]
) -> tuple[str, list[str]]:
    """`pruned` plus the entries of `full` that `torch_requires` needs, and the names dropped."""
    full_entries = split_requirements(full)
    keep = set(split_requirements(pruned)) | closure(_dependency_graph(lock), torch_requires)
    keep.discard("torch")  # installed apart, from the wheel the machine has
    kept = [entry for name, entry in full_entries.items() if name in keep]
    dropped = sorted(name for name in full_entries if name not in keep | {"torch"})
    return "\n".join(kept) + "\n", dropped


# Installed by the environment or by scripts/uv, not by the lock.
_TOOLS = {"pip", "uv", "torch"}


def extraneous(lock: dict[str, object], requirements: str) -> list[str]:
    """Installed distributions the lock no longer accounts for."""
    wanted = set(split_requirements(requirements)) | set(workspace_members(lock)) | _TOOLS
    installed = {normalize(d.metadata["Name"]) for d in importlib.metadata.distributions()}
    return sorted(installed - wanted)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("uv-version")
    commands.add_parser("torch-version")
    members = commands.add_parser("members")
    members.add_argument("--package", action="append", default=[])
    members.add_argument("--without", action="append", default=[])
    members.add_argument("--paths", action="store_true")
    requirements = commands.add_parser("requirements")
    requirements.add_argument("full", type=Path)
    requirements.add_argument("pruned", type=Path)
    commands.add_parser("extraneous").add_argument("requirements", type=Path)
    args = parser.parse_args(argv)

    if args.command == "uv-version":
        print(uv_version())
        return 0
    lock = load_lock()
    if args.command == "torch-version":
        print(torch_version(lock))
    elif args.command == "members":
        chosen = select_members(lock, args.package, args.without)
        print("\n".join(chosen.values() if args.paths else chosen))
    elif args.command == "extraneous":
        print("\n".join(extraneous(lock, args.requirements.read_text())))
    else:
        text, dropped = reduce_requirements(
            lock, args.full.read_text(), args.pruned.read_text(), installed_torch_requires()
        )
        sys.stdout.write(text)
        print(
            f"not installed (only the CUDA build of torch needs them): {' '.join(dropped)}",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
