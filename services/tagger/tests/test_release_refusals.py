"""podpulse release refusing bad input, run as a real process: bad flags, a bad deployment
file or no repository, a dirty tree or a detached head, and what never makes a tree dirty
(split from test_release_cli so the test workers stay balanced)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from release_helpers import ENDPOINT_ID, GitRepo, RunCli

from podpulse.common.runpod import EndpointConfig, ScalerType
from podpulse.tagger.endpoint._history import HistoryRecord, append_record, changing

pytestmark = pytest.mark.slow

TAG = "v1.0-production"


def test_bad_flags_exit_2_with_one_line(repo: GitRepo, podpulse: RunCli) -> None:
    """--force without --reason, a multi-line reason, a bad tag, a missing evidence run: exit 2."""
    repo.soak()
    cases = {
        ("--force",): "--force and --reason go together",
        ("--reason", "why"): "--force and --reason go together",
        ("--force", "--reason", "two\nlines"): "--reason must be one line",
        ("--tag", "bad..tag"): "is not a valid git tag name",
        ("--tag", "-x"): "is not a valid git tag name",
        ("--evidence", "nope"): "run nope has no",
        ("--evidence", "../x"): "--evidence: run id",
    }
    for args, expected in cases.items():
        ran = podpulse("release", *args)
        assert ran.code == 2, (args, ran.stderr)
        assert expected in ran.stderr, (args, ran.stderr)
        assert len(ran.stderr.strip().splitlines()) == 1, (args, ran.stderr)
        assert "Traceback" not in ran.stderr
    assert not repo.records.exists()


def test_bad_deployment_file_and_no_repository_exit_2(repo: GitRepo, podpulse: RunCli) -> None:
    """A bad podpulse.toml names its key and line; outside a repository says so; both exit 2."""
    text = (repo.root / "podpulse.toml").read_text().replace("max = 5", "max = 0")
    (repo.root / "podpulse.toml").write_text(text)
    repo.git("commit", "-qam", "break it")
    ran = podpulse("release")
    assert ran.code == 2
    assert "endpoint.workers.max (line 10)" in ran.stderr
    outside = podpulse("release", cwd=repo.root.parent)
    assert outside.code == 2
    assert "run inside the git repository" in outside.stderr
    bad_env = podpulse("release", env={"TAGGER_RELEASE_MAX_EVIDENCE_AGE_S": "-1"})
    assert bad_env.code == 2
    assert "TAGGER_RELEASE_MAX_EVIDENCE_AGE_S" in bad_env.stderr


def test_dirty_tree_and_detached_head_are_refused(repo: GitRepo, podpulse: RunCli) -> None:
    """Uncommitted or untracked files and a detached HEAD refuse; records and results do not."""
    repo.soak()
    repo.records.write_text("# Deployments\n\nhand-written notes\n")
    (repo.root / "README.md").write_text("edited\n")
    ran = podpulse("release")
    assert (ran.code, ran.stderr.strip()) == (
        1, "refused: the work tree has uncommitted changes: README.md"
    )  # fmt: skip
    repo.git("checkout", "-q", "README.md")
    (repo.root / "notes.txt").write_text("untracked\n")
    assert "notes.txt" in podpulse("release").stderr
    (repo.root / "notes.txt").unlink()

    repo.git("checkout", "-q", "--detach")
    detached = podpulse("release")
    assert detached.code == 1
    assert "HEAD is detached" in detached.stderr
    repo.git("checkout", "-q", "main")
    assert podpulse("release").code == 0
    assert "hand-written notes" in repo.records.read_text()


def test_the_endpoint_history_and_stack_logs_never_block_a_release(
    repo: GitRepo, podpulse: RunCli
) -> None:
    """What podpulse writes under .podpulse/ (endpoint update's history, its lock, the stack's
    logs; at the root or where the command ran) does not count as uncommitted."""
    config = EndpointConfig(
        workers_min=2, workers_max=5, idle_timeout_s=180,
        scaler_type=ScalerType.QUEUE_DELAY, scaler_value=1,
    )  # fmt: skip
    change = HistoryRecord(
        at=datetime.now(UTC), endpoint_id=ENDPOINT_ID,
        management_base_url="https://rest.runpod.io/v2", command="update", source="flags",
        before=config, after=config, event_id="0" * 32, event_published=True,
    )  # fmt: skip
    for history in (
        repo.root / ".podpulse" / "endpoint-history.jsonl",
        repo.root / "deploy" / ".podpulse" / "endpoint-history.jsonl",
    ):
        with changing(history):  # as endpoint update writes it: the lock file beside it too
            append_record(history, change)
    (repo.root / ".podpulse" / "logs").mkdir()
    (repo.root / ".podpulse" / "logs" / "prober.log").write_text("started\n")
    repo.soak()
    (repo.root / "deploy" / "podpulse.toml").write_text("edited beside the history\n")
    ran = podpulse("release")
    assert (ran.code, ran.stderr.strip()) == (
        1, "refused: the work tree has uncommitted changes: deploy/podpulse.toml"
    )  # fmt: skip
    (repo.root / "deploy" / "podpulse.toml").unlink()
    ran = podpulse("release")
    assert ran.code == 0, ran.stderr
    assert repo.tag_target(TAG) == repo.git("rev-parse", "HEAD")
