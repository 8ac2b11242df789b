"""Auto-release: the tagger's on_probe_run task, on a real worker and a real Redis, releases
for a passing soak of the deployment's endpoint once, however often the event arrives."""

from __future__ import annotations

import redis
from celery.contrib.testing.worker import start_worker
from release_helpers import GitRepo

from podpulse.common.bus import create_celery_app
from podpulse.common.events import ProbeRunCompleted, publish
from podpulse.common.settings import CommonSettings
from podpulse.common.testing import wait_until
from podpulse.tagger.app import create_app
from podpulse.tagger.releases._auto import on_probe_run_completed
from podpulse.tagger.releases._records import read_records
from podpulse.tagger.settings import ReleaseSettings

TAG = "v1.0-production"


def _event(repo: GitRepo, run_id: str = "soak-auto", **changes: object) -> ProbeRunCompleted:
    summary = repo.soak(run_id, **changes)
    return ProbeRunCompleted.of(summary, results_path=str(repo.root / "results" / run_id))


def test_a_passing_soak_event_releases_once(repo: GitRepo, redis_url: str) -> None:
    """Two deliveries of one passing soak's event: one tag, one record (trigger auto), one
    release_recorded event; the event's own summary is the evidence."""
    common = CommonSettings(redis_url=redis_url)
    app = create_app(common, ReleaseSettings(auto=True, repo=repo.root))
    event = _event(repo)
    publisher = create_celery_app("prober", common)
    publish(publisher, event)
    publish(publisher, event)
    client = redis.Redis.from_url(redis_url)
    client.delete("notify")
    with start_worker(
        app, pool="solo", perform_ping_check=False, queues=["tagger"], shutdown_timeout=10
    ):
        wait_until(repo.records.exists, timeout_s=60, what="the release record")
        wait_until(
            lambda: client.llen("tagger") == 0 and not client.hlen("unacked"),
            timeout_s=60,
            what="both deliveries handled",
        )
    (record,) = read_records(repo.records)
    assert (record.tag, record.trigger) == (TAG, "auto")
    assert record.evidence is not None
    assert record.evidence.run_id == "soak-auto"
    assert repo.tag_target(TAG) == repo.git("rev-parse", "HEAD")
    assert client.llen("notify") == 1
    client.close()


def test_no_release_without_auto_a_pass_or_the_deployments_endpoint(repo: GitRepo) -> None:
    """Auto off, a failed soak, another endpoint's soak, a load run: nothing is released."""
    app = create_celery_app("tagger", CommonSettings(redis_url="redis://127.0.0.1:1/0"))
    on = ReleaseSettings(auto=True, repo=repo.root)
    cases = [
        (ReleaseSettings(auto=False, repo=repo.root), _event(repo), "auto-release is off"),
        (on, _event(repo, "failed", passed=False), "the soak did not pass"),
        (on, _event(repo, "elsewhere", endpoint_id="otherendpoint1"), "not the deployment's"),
    ]
    for settings, event, reason in cases:
        done = on_probe_run_completed(app, settings, event)
        assert (done.action, reason in done.reason) == ("ignored", True), done
    assert not repo.records.exists()
    assert repo.tag_target(TAG) is None


def test_a_refused_auto_release_is_logged_not_raised(repo: GitRepo) -> None:
    """A dirty tree refuses the auto-release: the task reports it and releases nothing."""
    (repo.root / "README.md").write_text("edited\n")
    app = create_celery_app("tagger", CommonSettings(redis_url="redis://127.0.0.1:1/0"))
    done = on_probe_run_completed(app, ReleaseSettings(auto=True, repo=repo.root), _event(repo))
    assert done.action == "refused"
    assert "uncommitted changes: README.md" in done.reason
    assert not repo.records.exists()
