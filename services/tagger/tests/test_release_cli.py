"""podpulse release and releases, run as real processes in real git repositories."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis
from release_helpers import ENDPOINT_ID, GitRepo, RunCli

from podpulse.common.events import ReleaseRecorded, parse_event
from podpulse.common.runpod import EndpointConfig, ScalerType
from podpulse.tagger.endpoint._history import HistoryRecord, append_record, changing
from podpulse.tagger.releases._records import read_records

TAG = "v1.0-production"


def _notify_events(redis_url: str) -> list[ReleaseRecorded]:
    """The events waiting on the notify queue (kombu's Redis list, newest first)."""
    client = redis.Redis.from_url(redis_url)
    events = []
    for raw in client.lrange("notify", 0, -1):
        body = json.loads(base64.b64decode(json.loads(raw)["body"]))
        event = parse_event(body[0][0])
        assert isinstance(event, ReleaseRecorded)
        events.append(event)
    client.close()
    return events


def _clear_notify(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    client.delete("notify")
    client.close()


def test_dry_run_shows_the_plan_and_writes_nothing(repo: GitRepo, podpulse: RunCli) -> None:
    """--dry-run names the tag, the steps and the message, and leaves no tag, record or lock."""
    repo.soak("soak-a")
    ran = podpulse("release", "--dry-run")
    assert ran.code == 0, ran.stderr
    assert f"dry run: would release {TAG}" in ran.stdout
    assert f"create annotated tag {TAG}" in ran.stdout
    assert "exec P50 1900 ms, total P50 2150 ms (soak soak-a)" in ran.stdout
    assert repo.tag_target(TAG) is None
    assert not repo.records.exists()
    assert not (repo.root / ".git" / "podpulse-release.lock").exists()


def test_release_tags_records_lists_and_publishes(
    repo: GitRepo, podpulse: RunCli, redis_url: str
) -> None:
    """A passing fresh soak: an annotated tag with the P50s and run id, one record that
    `podpulse releases` reads back, and one release_recorded event."""
    _clear_notify(redis_url)
    head = repo.git("rev-parse", "HEAD")
    repo.soak("soak-old", ended_at=datetime.now(UTC) - timedelta(minutes=5), exec_p50=2500)
    repo.soak("soak-new")
    ran = podpulse("release")
    assert ran.code == 0, ran.stderr
    assert f"released {TAG} on {head[:12]}" in ran.stdout
    assert repo.tag_target(TAG) == head
    assert repo.git("cat-file", "-t", TAG) == "tag"
    message = repo.git("tag", "-l", "--format=%(contents)", TAG)
    assert message.splitlines()[0] == (
        f"{TAG}: exec P50 1900 ms, total P50 2150 ms (soak soak-new)"
    )

    (record,) = read_records(repo.records)
    assert (record.tag, record.commit, record.trigger) == (TAG, head, "cli")
    assert record.endpoint.id == ENDPOINT_ID
    assert record.endpoint.model_size_gb == 22.69
    assert record.endpoint.config.workers_max == 5
    assert record.evidence is not None
    assert (record.evidence.run_id, record.evidence.total_p95_ms) == ("soak-new", 3150.0)
    text = repo.records.read_text()
    for shown in (
        f"## {TAG} (",
        f"- Commit: `{head}`",
        "- Model: `Puneetrinity/qwen2-7b-career` (22.69 GB)",
        "- GPU: NVIDIA GeForce RTX 4090",
        "- Config: workers 2-5, idle timeout 180 s, scaler QUEUE_DELAY 1",
        "soak `soak-new` passed",
    ):
        assert shown in text

    listed = podpulse("releases")
    assert listed.code == 0, listed.stderr
    assert TAG in listed.stdout
    assert "soak soak-new" in listed.stdout
    as_json = json.loads(podpulse("releases", "--json").stdout)
    assert [entry["tag"] for entry in as_json] == [TAG]

    (event,) = _notify_events(redis_url)
    assert (event.tag, event.commit, event.endpoint_id) == (TAG, head, ENDPOINT_ID)
    assert event.recorded_at == record.recorded_at


def test_second_run_is_a_no_op(repo: GitRepo, podpulse: RunCli, redis_url: str) -> None:
    """The same commit and tag again: exit 0, no second record, no second event."""
    repo.soak()
    assert podpulse("release").code == 0
    _clear_notify(redis_url)
    again = podpulse("release")
    assert again.code == 0, again.stderr
    assert "already released and recorded" in again.stdout
    assert len(read_records(repo.records)) == 1
    assert _notify_events(redis_url) == []


def test_a_record_indented_by_one_space_is_read_not_appended_again(
    repo: GitRepo, podpulse: RunCli
) -> None:
    """A record whose comment a user indented by one space (still a hidden Markdown comment)
    is listed, and releasing the same commit again finds it instead of appending a copy."""
    repo.soak()
    assert podpulse("release").code == 0
    text = repo.records.read_text()
    repo.records.write_text(text.replace("\n<!-- podpulse-release ", "\n <!-- podpulse-release "))
    listed = podpulse("releases")
    assert listed.code == 0, listed.stderr
    assert TAG in listed.stdout
    again = podpulse("release")
    assert again.code == 0, again.stderr
    assert "already released and recorded" in again.stdout
    assert repo.records.read_text().count("podpulse-release {") == 1


def test_a_symlinked_deployment_md_is_written_through_its_link(
    repo: GitRepo, podpulse: RunCli
) -> None:
    """DEPLOYMENT.md linked to docs/DEPLOYMENT.md: the release appends to the target, and the
    link stays a link."""
    (repo.root / "docs").mkdir()
    (repo.root / "docs" / "DEPLOYMENT.md").write_text("# Deployments\n\nkept notes\n")
    repo.records.symlink_to(Path("docs") / "DEPLOYMENT.md")
    repo.git("add", "DEPLOYMENT.md", "docs/DEPLOYMENT.md")
    repo.git("commit", "-q", "-m", "records in docs/")
    repo.soak()
    ran = podpulse("release")
    assert ran.code == 0, ran.stderr
    assert repo.records.is_symlink()
    assert [r.tag for r in read_records(repo.root / "docs" / "DEPLOYMENT.md")] == [TAG]
    assert "kept notes" in (repo.root / "docs" / "DEPLOYMENT.md").read_text()


def test_next_commit_gets_the_next_tag(repo: GitRepo, podpulse: RunCli) -> None:
    """After v1.0-production a later commit is released as v1.1-production."""
    repo.soak("soak-1")
    assert podpulse("release").code == 0
    second = repo.commit()
    repo.soak("soak-2")
    ran = podpulse("release")
    assert ran.code == 0, ran.stderr
    assert repo.tag_target("v1.1-production") == second
    assert [r.tag for r in read_records(repo.records)] == [TAG, "v1.1-production"]


def test_no_soak_is_refused_with_the_reason(repo: GitRepo, podpulse: RunCli) -> None:
    """Without a soak of this endpoint: exit 1, the reason on one line, nothing written."""
    repo.soak("other", endpoint_id="someoneelse01")
    ran = podpulse("release")
    assert ran.code == 1
    assert ran.stderr.startswith("refused: no soak of endpoint 4cqta56swdioxi")
    assert len(ran.stderr.strip().splitlines()) == 1
    assert repo.tag_target(TAG) is None
    assert not repo.records.exists()


def test_gate_refuses_failed_stale_early_and_twin_soaks(repo: GitRepo, podpulse: RunCli) -> None:
    """The latest soak must have passed, on the hosted endpoint, after the commit, recently."""
    now = datetime.now(UTC)
    repo.commit(at=now - timedelta(hours=2))
    repo.soak("passed-earlier", ended_at=now - timedelta(minutes=10))
    repo.soak("failed-latest", passed=False)
    ran = podpulse("release")
    assert ran.code == 1
    assert "refused: the latest soak failed-latest did not pass: stable P95 (+40 %)" in ran.stderr

    stale = podpulse("release", "--evidence", "passed-earlier",
                     env={"TAGGER_RELEASE_MAX_EVIDENCE_AGE_S": "60"})  # fmt: skip
    assert stale.code == 1
    assert "outside the freshness window of 1 min" in stale.stderr

    repo.soak("before-commit", ended_at=now - timedelta(hours=3))
    early = podpulse("release", "--evidence", "before-commit")
    assert early.code == 1
    assert "before this commit was made" in early.stderr

    repo.soak("on-twin", target="twin")
    twin = podpulse("release", "--evidence", "on-twin")
    assert twin.code == 1
    assert "probed a local twin" in twin.stderr

    # A "hosted" soak sent to another API (a twin behind RUNPOD_ENDPOINT_BASE_URL) did not test
    # the endpoint; it counts only where the tagger itself is pointed at that API.
    repo.soak("elsewhere", base_url="http://127.0.0.1:8765/v2")
    elsewhere = podpulse("release", "--evidence", "elsewhere")
    assert elsewhere.code == 1
    assert (
        "soak elsewhere probed the API at http://127.0.0.1:8765/v2, not the endpoint's "
        "https://api.runpod.ai/v2 (RUNPOD_ENDPOINT_BASE_URL)"
    ) in elsewhere.stderr
    assert not repo.records.exists()
    there = podpulse("release", "--evidence", "elsewhere", "--dry-run",
                     env={"RUNPOD_ENDPOINT_BASE_URL": "http://127.0.0.1:8765/v2/"})  # fmt: skip
    assert there.code == 0, there.stderr


def test_force_with_reason_overrides_and_is_recorded(repo: GitRepo, podpulse: RunCli) -> None:
    """--force --reason releases without a soak; the reason is in the record and tag message."""
    ran = podpulse("release", "--force", "--reason", "hotfix: soak box down")
    assert ran.code == 0, ran.stderr
    (record,) = read_records(repo.records)
    assert record.force_reason == "hotfix: soak box down"
    assert record.evidence is None
    message = repo.git("tag", "-l", "--format=%(contents)", TAG)
    assert "Forced: hotfix: soak box down" in message
    assert "- Forced: hotfix: soak box down" in repo.records.read_text()


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


def test_tag_on_another_commit_is_refused(repo: GitRepo, podpulse: RunCli) -> None:
    """--tag naming a tag that points elsewhere refuses, and nothing is recorded."""
    repo.git("tag", "-a", "-m", "old", TAG)
    repo.commit()
    repo.soak()
    ran = podpulse("release", "--tag", TAG)
    assert ran.code == 1
    assert f"tag {TAG} already points at another commit" in ran.stderr
    assert not repo.records.exists()


def test_push_sends_the_tag_to_the_remote(repo: GitRepo, podpulse: RunCli) -> None:
    """--push REMOTE pushes the new tag (only the tag) to a real bare remote."""
    remote = repo.root.parent / "remote.git"
    repo.git("init", "-q", "--bare", str(remote))
    repo.git("remote", "add", "origin", str(remote))
    repo.soak()
    ran = podpulse("release", "--push", "origin")
    assert ran.code == 0, ran.stderr
    assert "tag pushed" in ran.stdout
    pushed = repo.git("--git-dir", str(remote), "tag", "--list")
    assert pushed == TAG


def test_redis_down_keeps_the_release_and_says_so(
    repo: GitRepo, podpulse: RunCli, unused_port: int
) -> None:
    """With the bus unreachable the tag and record stand, stderr says the event was not sent."""
    repo.soak()
    ran = podpulse("release", env={"REDIS_URL": f"redis://127.0.0.1:{unused_port}/0"})
    assert ran.code == 0, ran.stderr
    assert "the release is recorded, but release_recorded was not published" in ran.stderr
    assert len(read_records(repo.records)) == 1


def test_no_secret_reaches_output_records_or_tags(repo: GitRepo, podpulse: RunCli) -> None:
    """A canary API key in the environment appears in no output, record or tag, and not in
    the environment of the git processes (a pre-push hook dumps what it got)."""
    canary = "rpa_" + "CANARY" * 6 + "1234"
    remote = repo.root.parent / "remote.git"
    repo.git("init", "-q", "--bare", str(remote))
    repo.git("remote", "add", "origin", str(remote))
    dump = repo.root.parent / "hook-env.txt"
    hook = repo.root / ".git" / "hooks" / "pre-push"
    hook.write_text(f"#!/bin/sh\nenv > {dump}\n")
    hook.chmod(0o755)
    repo.soak()
    env = {"RUNPOD_API_KEY": canary, "RUNPOD_API_KEY_FILE": str(dump)}
    outputs = [podpulse("release", "--dry-run", env=env),
               podpulse("release", "--push", "origin", env=env),
               podpulse("releases", "--json", env=env)]  # fmt: skip
    assert outputs[1].code == 0, outputs[1].stderr
    assert "PATH=" in dump.read_text()  # the hook ran
    seen = "".join(ran.stdout + ran.stderr for ran in outputs) + dump.read_text()
    seen += repo.records.read_text() + repo.git("tag", "-l", "--format=%(contents)", TAG)
    assert canary not in seen
    assert "RUNPOD_API_KEY" not in dump.read_text()
