"""How podpulse is installed: one lock file, torch only where the model worker is, and
Dockerfiles whose dependency layer really is reused."""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
# The one member that needs torch; every other member must install without it.
MODEL_WORKER = "podpulse-worker"
HEAVY = ("torch", "transformers")
DOCKERFILES = sorted(
    path.relative_to(ROOT).as_posix()
    for pattern in ("Dockerfile", "libs/*/Dockerfile", "services/*/Dockerfile")
    for path in ROOT.glob(pattern)
)


def _lock() -> dict[str, object]:
    with (ROOT / "uv.lock").open("rb") as f:
        return tomllib.load(f)


def _members() -> dict[str, str]:
    """Workspace member name -> path, as the lock records them."""
    members = {}
    packages = _lock()["package"]
    assert isinstance(packages, list)
    for package in packages:
        source = package.get("source", {})
        if "editable" in source:
            members[str(package["name"])] = str(source["editable"])
    return members


def _installs(distribution: str) -> dict[str, list[str]]:
    """Every distribution that installing `distribution` installs, with the chain that pulls
    it in, read from the installed metadata with markers (and requested extras) evaluated."""
    chains: dict[str, list[str]] = {canonicalize_name(distribution): [distribution]}
    todo: list[tuple[str, frozenset[str]]] = [(distribution, frozenset())]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, extras = todo.pop()
        key = (canonicalize_name(name), extras)
        if key in seen:
            continue
        seen.add(key)
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            chain = " -> ".join(chains[key[0]])
            pytest.fail(f"{name} ({chain}) is not installed; run `make setup`")
        for text in requires:
            requirement = Requirement(text)
            marker = requirement.marker
            if marker is not None and not any(
                marker.evaluate({"extra": extra}) for extra in extras | {""}
            ):
                continue
            dep = canonicalize_name(requirement.name)
            chains.setdefault(dep, [*chains[key[0]], requirement.name])
            todo.append((requirement.name, frozenset(requirement.extras)))
    return chains


def _instructions(dockerfile: str) -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    text = (ROOT / dockerfile).read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    return [line.strip() for line in joined.splitlines() if line.strip()]


def _final_stage(dockerfile: str) -> list[str]:
    instructions = _instructions(dockerfile)
    last_from = max(i for i, line in enumerate(instructions) if line.upper().startswith("FROM "))
    return instructions[last_from:]


@pytest.mark.parametrize("member", sorted(set(_members()) - {MODEL_WORKER}))
def test_member_installs_neither_torch_nor_transformers(member: str) -> None:
    """Installing any member but the model worker (prober, alerter, tagger, ...) never
    installs torch or transformers, by the installed distributions' own requirements."""
    chains = _installs(member)
    pulled = {name: " -> ".join(chains[name]) for name in HEAVY if name in chains}
    assert not pulled, f"installing {member} installs {', '.join(pulled.values())}"


def test_the_model_worker_does_install_torch() -> None:
    """The metadata walk above does reach torch where it is required, so its silence counts."""
    assert "torch" in _installs(MODEL_WORKER)


def test_lock_matches_every_pyproject() -> None:
    """uv.lock is what the pyprojects ask for now (checked offline by the pinned uv)."""
    result = subprocess.run(
        [str(ROOT / "scripts/lock"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, (
        f"uv.lock does not match the pyprojects: run `make lock`\n{result.stderr}"
    )


def test_a_stale_lock_is_caught(tmp_path: Path) -> None:
    """The same check fails once a pyproject asks for something the lock does not hold."""
    for pyproject in [ROOT / "pyproject.toml", *ROOT.glob("*/*/pyproject.toml")]:
        target = tmp_path / pyproject.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(pyproject, target)
    shutil.copy(ROOT / "uv.lock", tmp_path / "uv.lock")
    common = tmp_path / "libs/common/pyproject.toml"
    common.write_text(
        common.read_text().replace('"structlog>=', '"not-in-the-lock>=1", "structlog>=')
    )
    result = subprocess.run(
        [str(ROOT / "scripts/uv"), "--directory", str(tmp_path), "lock", "--check", "--offline"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0


def test_torch_is_pinned_in_one_place() -> None:
    """Only the root pyproject's uv constraint names a torch version; the rest read the lock."""
    pinned = []
    for path in [
        ROOT / "Makefile",
        *ROOT.glob("scripts/*"),
        *ROOT.glob("pyproject.toml"),
        *ROOT.glob("*/*/pyproject.toml"),
        *(ROOT / dockerfile for dockerfile in DOCKERFILES),
    ]:
        if not path.is_file():
            continue
        if re.search(r"torch\s*==\s*[0-9]", path.read_text()):
            pinned.append(path.relative_to(ROOT).as_posix())
    assert pinned == ["pyproject.toml"]
    with (ROOT / "pyproject.toml").open("rb") as f:
        constraints = tomllib.load(f)["tool"]["uv"]["constraint-dependencies"]
    assert any(Requirement(c).name == "torch" for c in constraints)


@pytest.mark.parametrize("path", ["Makefile", "scripts/bootstrap", *DOCKERFILES])
def test_member_list_is_written_nowhere_else(path: str) -> None:
    """The Makefile, bootstrap and the Dockerfiles find the members through the workspace;
    none of them names more than the one member it is about."""
    text = (ROOT / path).read_text()
    named = sorted(
        name
        for name, member_path in _members().items()
        if name in text or re.search(rf"\b{re.escape(member_path)}\b", text)
    )
    assert len(named) <= 1, f"{path} names the members {named}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_dockerfile_installs_dependencies_from_the_lock_before_the_sources(
    dockerfile: str,
) -> None:
    """Each image installs uv.lock's pins from hashes, and copies sources only afterwards,
    so a code change reuses the dependency layer."""
    assert "uv.lock" in (ROOT / dockerfile).read_text()
    stage = _final_stage(dockerfile)
    dependency_runs = [
        i
        for i, line in enumerate(stage)
        if line.startswith("RUN ") and "uv export --frozen" in line and "--require-hashes" in line
    ]
    assert dependency_runs, f"{dockerfile}: no RUN installs the `uv export --frozen` hashes"
    source_copies = [
        i
        for i, line in enumerate(stage)
        if line.startswith(("COPY ", "ADD ")) and "--from=" not in line
    ]
    assert source_copies, f"{dockerfile}: copies no sources"
    assert dependency_runs[0] < source_copies[0], (
        f"{dockerfile}: `{stage[source_copies[0]]}` comes before the dependency install"
    )
    # What the final stage takes from the metadata stage must be metadata only.
    lock_stage = _instructions(dockerfile)[: len(_instructions(dockerfile)) - len(stage)]
    assert any("! -name pyproject.toml ! -name uv.lock" in line for line in lock_stage)


def test_the_cpu_image_leaves_the_model_worker_out() -> None:
    """The root image prunes the model worker (and with it torch) from what it exports."""
    (install,) = [line for line in _final_stage("Dockerfile") if "uv export --frozen" in line]
    assert f"--prune {MODEL_WORKER}" in install
    assert f"--without {MODEL_WORKER}" in install
