"""Releases at once, a release that dies between tag and record, and a lost tag: one tag and
one record in the end, every time, in real repositories with real processes."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import textwrap
from collections import Counter

import pytest
from release_helpers import PODPULSE, GitRepo, RunCli

from podpulse.tagger.releases._records import read_records

pytestmark = pytest.mark.slow

TAG = "v1.0-production"

# Runs the release core in a process that dies (as a kill -9 would) right after the tag.
_CRASH_AFTER_TAG = textwrap.dedent(
    """
    import os
    from pathlib import Path

    import podpulse.tagger.releases._release as release_module
    from podpulse.tagger._deployment_file import read_deployment_file
    from podpulse.tagger.releases._git import Repository
    from podpulse.tagger.settings import ReleaseSettings

    def die(*_args, **_kwargs):
        os._exit(137)

    release_module.append_record = die
    repo = Repository.discover(Path.cwd())
    endpoint = read_deployment_file(repo.root / "podpulse.toml").endpoint
    release_module.release(repo, endpoint, ReleaseSettings(), release_module.ReleaseRequest())
    """
)


def test_concurrent_releases_make_one_tag_and_one_record(repo: GitRepo, redis_url: str) -> None:
    """Four `podpulse release` processes at once: one releases, three find it done, all exit 0."""
    repo.soak()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAGGER_")}
    env |= {"REDIS_URL": redis_url}
    processes = [
        subprocess.Popen(
            [PODPULSE, "release"],
            cwd=repo.root,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=120) for p in processes]
    results = [(p.returncode, out, err) for p, (out, err) in zip(processes, outputs, strict=True)]
    assert [code for code, _, _ in results] == [0, 0, 0, 0], results
    said = Counter(
        "released" if out.startswith("released ") else "already" for _, out, _ in results
    )
    assert said == {"released": 1, "already": 3}, results
    assert len(read_records(repo.records)) == 1
    assert repo.git("tag", "--list") == TAG


def test_a_release_waiting_too_long_for_the_lock_is_refused(
    repo: GitRepo, podpulse: RunCli
) -> None:
    """While another release holds the lock past the timeout: exit 1 saying so, nothing written."""
    repo.soak()
    fd = os.open(repo.root / ".git" / "podpulse-release.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        ran = podpulse("release", env={"TAGGER_RELEASE_LOCK_TIMEOUT_S": "1"})
    finally:
        os.close(fd)
    assert ran.code == 1
    assert "another release held podpulse-release.lock for over 1 s" in ran.stderr
    assert repo.tag_target(TAG) is None
    assert not repo.records.exists()


def test_a_crash_between_tag_and_record_is_repaired_once(repo: GitRepo, podpulse: RunCli) -> None:
    """A release killed after tagging leaves a tag and no record; the next run adds the record
    to that same tag (no second tag, no second record), its lock long gone with the process."""
    repo.soak()
    crashed = subprocess.run(
        [sys.executable, "-c", _CRASH_AFTER_TAG], cwd=repo.root, capture_output=True,
        text=True, check=False, timeout=120,
    )  # fmt: skip
    assert crashed.returncode == 137, crashed.stderr
    tag_object = repo.git("rev-parse", f"refs/tags/{TAG}")
    assert repo.tag_target(TAG) == repo.git("rev-parse", "HEAD")
    assert not repo.records.exists()

    ran = podpulse("release", env={"TAGGER_RELEASE_LOCK_TIMEOUT_S": "5"})
    assert ran.code == 0, ran.stderr
    assert f"repaired {TAG}" in ran.stdout
    assert repo.git("rev-parse", f"refs/tags/{TAG}") == tag_object
    assert [r.tag for r in read_records(repo.records)] == [TAG]
    again = podpulse("release")
    assert "already released" in again.stdout
    assert len(read_records(repo.records)) == 1


def test_a_record_whose_tag_was_lost_gets_its_tag_back(repo: GitRepo, podpulse: RunCli) -> None:
    """A recorded release whose tag was deleted gets the tag again, and no second record."""
    repo.soak()
    assert podpulse("release").code == 0
    repo.git("tag", "-d", TAG)
    ran = podpulse("release")
    assert ran.code == 0, ran.stderr
    assert f"repaired {TAG}" in ran.stdout
    assert repo.tag_target(TAG) == repo.git("rev-parse", "HEAD")
    assert "exec P50 1900 ms" in repo.git("tag", "-l", "--format=%(contents)", TAG)
    assert len(read_records(repo.records)) == 1
