"""podpulse release and releases, run as real processes in real git repositories."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from release_helpers import ENDPOINT_ID, GitRepo, RunCli

from podpulse.common.events import ReleaseRecorded, parse_event
from podpulse.tagger.releases._records import read_records

pytestmark = pytest.mark.slow

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
