"""scripts/lockfile.py: what bootstrap and the Dockerfiles install from uv.lock."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("lockfile", ROOT / "scripts/lockfile.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("lockfile", module)
    spec.loader.exec_module(module)
    return module


lockfile = _load()

# A lock in miniature: the app needs pydantic and torch; PyPI's torch adds a CUDA wheel.
PACKAGES: list[dict[str, object]] = [
    {"name": "app", "source": {"editable": "services/app"}, "dependencies": [
        {"name": "pydantic"}, {"name": "torch"}]},
    {"name": "pydantic", "version": "2.0", "dependencies": []},
    {"name": "torch", "version": "2.13.0", "dependencies": [
        {"name": "sympy"}, {"name": "nvidia-cublas", "marker": "sys_platform == 'linux'"}]},
    {"name": "sympy", "version": "1.14", "dependencies": [{"name": "mpmath"}]},
    {"name": "mpmath", "version": "1.3", "dependencies": []},
    {"name": "nvidia-cublas", "version": "13.0", "dependencies": []},
]  # fmt: skip
LOCK: dict[str, object] = {"package": PACKAGES}


def _entry(name: str, marker: str = "") -> str:
    return f"{name}==1.0{marker} \\\n    --hash=sha256:{'0' * 64}\n    # via app\n"


def test_requirements_keep_what_the_installed_torch_needs_and_drop_the_rest() -> None:
    """The CPU torch's own requirements (and theirs) stay; CUDA-only wheels and torch go."""
    full = "# header\n" + "".join(
        _entry(name) for name in ["mpmath", "nvidia-cublas", "pydantic", "sympy", "torch"]
    )
    pruned = "# header\n" + _entry("pydantic")

    text, dropped = lockfile.reduce_requirements(LOCK, full, pruned, {"sympy"})

    assert sorted(lockfile.split_requirements(text)) == ["mpmath", "pydantic", "sympy"]
    assert dropped == ["nvidia-cublas"]
    assert "--hash=sha256:" in text
    assert "# header" not in text


def test_forked_entries_of_one_name_stay_together() -> None:
    """A name the lock forks by Python version keeps every one of its entries."""
    text = _entry("numpy", " ; python_full_version < '3.12'") + _entry(
        "numpy", " ; python_full_version >= '3.12'"
    )
    (entry,) = lockfile.split_requirements(text).values()
    assert entry.count("numpy==1.0") == 2


def test_members_follow_the_lock() -> None:
    """Members come from the lock: the model worker needs common; unknown names are refused."""
    lock = lockfile.load_lock()
    members = lockfile.workspace_members(lock)
    assert {"podpulse-common", "podpulse-worker"} <= set(members)
    worker = lockfile.select_members(lock, ["podpulse-worker"], [])
    assert set(worker) == {"podpulse-common", "podpulse-worker"}
    assert worker["podpulse-common"] == "libs/common"
    without = lockfile.select_members(lock, [], ["podpulse-worker"])
    assert "podpulse-worker" not in without
    assert set(without) == set(members) - {"podpulse-worker"}
    with pytest.raises(SystemExit, match="not a workspace member"):
        lockfile.select_members(lock, ["podpulse-nope"], [])


def test_the_torch_pin_is_read_from_the_lock() -> None:
    """The torch version bootstrap installs is the lock's, and exactly one is accepted."""
    assert lockfile.torch_version(LOCK) == "2.13.0"
    two = {"package": [*PACKAGES, {"name": "torch", "version": "2.14.1"}]}
    with pytest.raises(SystemExit, match="exactly one torch version"):
        lockfile.torch_version(two)
