"""podpulse release's gate, run as a real process in a real git repository: a release needs a
passing, fresh, full soak of the very commit it tags, unless forced with a reason (split from
test_release_cli so the test workers stay balanced)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from release_helpers import GitRepo, RunCli

from podpulse.tagger.releases._records import read_records

TAG = "v1.0-production"


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


def test_tag_on_another_commit_is_refused(repo: GitRepo, podpulse: RunCli) -> None:
    """--tag naming a tag that points elsewhere refuses, and nothing is recorded."""
    repo.git("tag", "-a", "-m", "old", TAG)
    repo.commit()
    repo.soak()
    ran = podpulse("release", "--tag", TAG)
    assert ran.code == 1
    assert f"tag {TAG} already points at another commit" in ran.stderr
    assert not repo.records.exists()
