"""podpulse up's parts without the whole stack: its table, child environments, the status
readers and its refusals of bad input."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from podpulse.alerter import default_rules
from podpulse.common.retry import Backoff
from podpulse.common.settings import (
    ALERT_WEBHOOK_URL,
    ALERTER_RECEIVER_TOKEN,
    RUNPOD_API_KEY,
    SLACK_WEBHOOK_URL,
    settings_variable,
)
from podpulse.common.testing import free_port, wait_until
from podpulse.prober.settings import ProberSettings
from podpulse.stack import LogLine, Restart, ServiceSpec, State, Supervisor, SupervisorTimings
from podpulse.stack._env import service_env
from podpulse.stack._services import (
    OwnRedis,
    StackPlan,
    TwinPlan,
    enabled,
    joined,
    service_table,
)
from podpulse.stack._status import firing_alerts, last_probe
from podpulse.stack.settings import StackSettings

sys.path.insert(0, str(Path(__file__).parents[1] / "libs/common/tests"))
import summary_examples  # common's example summaries, found through the path above

PODPULSE = str(Path(sys.executable).with_name("podpulse"))
ENVIRON = {
    "PATH": "/usr/bin",
    "RUNPOD_API_KEY": "rpa_user_key",
    "SLACK_WEBHOOK_URL": "https://hooks.slack.test/T/B/x",
    "ALERT_WEBHOOK_URL_FILE": "/run/secrets/hook",
    "COPY": "rpa_user_key",
}


def _plan(tmp_path: Path, *, twin: bool = True, installed: frozenset[str] = frozenset()):
    return StackPlan(
        settings=StackSettings(log_dir=tmp_path / "logs", results_dir=tmp_path / "results"),
        redis_url="redis://127.0.0.1:16379/0",
        own_redis=OwnRedis("/usr/bin/redis-server", 16379, tmp_path / "redis"),
        twin=TwinPlan("podpulse-twin", "twin-key", 18765) if twin else None,
        python=sys.executable,
        podpulse=PODPULSE,
        installed_commands=installed,
    )


def test_alerter_and_tagger_rows_light_up_with_their_commands(tmp_path: Path) -> None:
    """The alerter and tagger rows exist but run only once their podpulse.cli entry point is
    installed; with the alerter every service exports spans to it (standard OTEL_* only)."""
    plan = _plan(tmp_path)
    rows = service_table(plan, ENVIRON)
    assert [r.name for r in enabled(rows, set())] == [
        "redis", "twin", "prober-worker", "prober-beat"]  # fmt: skip
    everything = enabled(rows, {"alerter", "release"})
    assert {"alerter", "alerter-worker", "tagger-worker"} <= {r.name for r in everything}
    with_alerter = service_table(_plan(tmp_path, installed=frozenset({"alerter"})), ENVIRON)
    prober = next(r for r in with_alerter if r.name == "prober-worker")
    assert prober.env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://127.0.0.1:4318"
    assert all(k.startswith("OTEL_") for r in with_alerter for k in r.env if "OTEL" in k)
    assert next(r for r in rows if r.name == "prober-worker").env["OTEL_TRACES_EXPORTER"] == "none"


def test_the_prober_rows_use_variables_the_prober_reads(tmp_path: Path) -> None:
    """Every PROBER_* the table sets is a ProberSettings variable, and with the twin they
    schedule a smoke every minute, the first after 15 s, against the stack's twin."""
    rows = service_table(_plan(tmp_path), ENVIRON)
    prober = next(r for r in rows if r.name == "prober-beat").env
    known = {settings_variable(ProberSettings, f) for f in ProberSettings.model_fields}
    assert {k for k in prober if k.startswith("PROBER_")} <= known
    assert prober["PROBER_SMOKE_EVERY_S"] == "15"
    assert prober["PROBER_SMOKE_FIRST_AFTER_S"] == "15"
    assert prober["RUNPOD_ENDPOINT_BASE_URL"] == "http://127.0.0.1:18765/v2"
    hosted = service_table(_plan(tmp_path, twin=False), ENVIRON)
    assert "twin" not in {r.name for r in hosted}
    assert "PROBER_SMOKE_EVERY_S" not in next(r for r in hosted if r.name == "prober-beat").env


def test_the_smoke_probes_alone_give_every_default_rule_its_samples(tmp_path: Path) -> None:
    """With the twin, the stack's smoke probes put at least min_samples spans in the window of
    every default rule on a metric they measure, however slow the handler: a probe sends its
    requests at once, so all its spans land within one job's time. So the README's drill fires
    on a fresh `podpulse up`. (Time to first token and per output token come only from streamed
    requests, which the smoke does not make: those rules sit in no-data there.)"""
    prober = next(r for r in service_table(_plan(tmp_path), ENVIRON) if r.name == "prober-beat")
    every_s = float(prober.env["PROBER_SMOKE_EVERY_S"])
    runs = ProberSettings().smoke_runs
    assert int(prober.env["PROBER_SMOKE_CONCURRENCY"]) >= runs
    streamed_only = {"ttft_ms", "tpot_ms"}
    rules = [rule for rule in default_rules().rules if rule.metric not in streamed_only]
    assert len(rules) == len(default_rules().rules) - 2
    for rule in rules:
        probes_in_window = int(rule.window // every_s)
        assert probes_in_window * runs >= rule.min_samples, rule.name


def test_the_banner_says_which_redis_twin_and_alerter_the_stack_uses(tmp_path: Path) -> None:
    """Started or joined Redis with its URL (never its password), the twin's and the
    alerter's URLs."""
    started = joined(_plan(tmp_path, installed=frozenset({"alerter"})))
    assert started == [
        f"redis: started at redis://127.0.0.1:16379/0 (data in {tmp_path / 'redis'})",
        "twin: endpoint podpulse-twin at http://127.0.0.1:18765/v2",
        "alerter: spans to http://127.0.0.1:4318/v1/traces, "
        "alerts on http://127.0.0.1:4318/metrics",
    ]
    shared = replace(
        _plan(tmp_path, twin=False), own_redis=None, redis_url="redis://:pw@127.0.0.1:6379/2"
    )
    assert joined(shared) == [
        "redis: joined the one answering at redis://127.0.0.1:6379/2",
        "endpoint: the hosted one RUNPOD_ENDPOINT_ID names",
    ]


def test_the_stacks_alerter_takes_only_its_own_new_events(tmp_path: Path) -> None:
    """The alerter's worker (which reads the bus) is told the stack's start and endpoint, so
    a joined Redis's older events and another deployment's are not delivered as new."""
    plan = replace(_plan(tmp_path, installed=frozenset({"alerter"})), started_at=1_800_000_000.5)
    rows = {r.name: r for r in service_table(plan, ENVIRON)}
    for name in ("alerter", "alerter-worker"):
        assert rows[name].env["ALERTER_EVENTS_SINCE"] == "1800000000.500"
        assert rows[name].env["ALERTER_ENDPOINT_IDS"] == "podpulse-twin"
    hosted = {r.name: r for r in service_table(
        replace(_plan(tmp_path, twin=False), installed_commands=frozenset({"alerter"})),
        {**ENVIRON, "RUNPOD_ENDPOINT_ID": "ep-hosted"})}  # fmt: skip
    assert hosted["alerter-worker"].env["ALERTER_ENDPOINT_IDS"] == "ep-hosted"


def test_children_get_only_the_secrets_their_row_lists(tmp_path: Path) -> None:
    """A secret is withheld by name, by *_FILE name and by value unless the row lists it; the
    twin's key reaches the prober as its RUNPOD_API_KEY, never the user's."""
    rows = {r.name: r for r in service_table(_plan(tmp_path, installed=frozenset({"alerter"})),
                                             ENVIRON)}  # fmt: skip
    prober = service_env(rows["prober-worker"], ENVIRON, withheld=("TWIN_API_KEY",))
    assert prober["RUNPOD_API_KEY"] == "twin-key"
    assert "SLACK_WEBHOOK_URL" not in prober
    assert "ALERT_WEBHOOK_URL_FILE" not in prober
    assert "COPY" not in prober  # the user's key under another name
    redis = service_env(rows["redis"], {**ENVIRON, "TWIN_API_KEY": "k"}, withheld=("TWIN_API_KEY",))
    assert not {"RUNPOD_API_KEY", "TWIN_API_KEY", "SLACK_WEBHOOK_URL"} & redis.keys()
    alerter = service_env(rows["alerter"], ENVIRON)
    assert alerter["SLACK_WEBHOOK_URL"] == ENVIRON["SLACK_WEBHOOK_URL"]
    assert alerter["ALERT_WEBHOOK_URL_FILE"] == "/run/secrets/hook"
    assert "RUNPOD_API_KEY" not in alerter
    assert rows["alerter"].secrets == (SLACK_WEBHOOK_URL, ALERT_WEBHOOK_URL, ALERTER_RECEIVER_TOKEN)
    hosted = {r.name: r for r in service_table(_plan(tmp_path, twin=False), ENVIRON)}
    assert hosted["prober-worker"].secrets == (RUNPOD_API_KEY, ALERTER_RECEIVER_TOKEN)
    # The receiver's token: the alerter requires it, the prober's spans carry it; no one else.
    with_token = {**ENVIRON, "ALERTER_RECEIVER_TOKEN_FILE": "/run/secrets/token"}
    envs = {name: service_env(row, with_token) for name, row in rows.items()}
    holders = {name for name, env in envs.items() if "ALERTER_RECEIVER_TOKEN_FILE" in env}
    assert holders == {"alerter", "prober-worker", "prober-beat"}
    assert "twin-key" not in repr(rows["twin"])


def test_firing_alerts_are_read_from_prometheus_alerts_series() -> None:
    """ALERTS{alertstate="firing"} with value 1 counts; pending, resolved (0) and other
    series do not."""
    text = "\n".join([
        "# HELP ALERTS alerts", "# TYPE ALERTS gauge",
        'ALERTS{alertname="ExecP95",alertstate="firing",severity="CRITICAL"} 1',
        'ALERTS{alertname="DelayP50",alertstate="pending",severity="WARNING"} 1',
        'ALERTS{alertname="FailRate",alertstate="firing",severity="CRITICAL"} 0',
        'podpulse_exec_ms{quantile="0.95"} 6000',
    ])  # fmt: skip
    alerts = firing_alerts(text)
    assert [(a.name, a.severity) for a in alerts] == [("ExecP95", "CRITICAL")]


def test_a_failed_probe_on_the_status_view_names_the_slo_line_that_failed(tmp_path: Path) -> None:
    """The last probe's line says FAILED and which SLO line failed with its value; a passing
    one names none."""
    for run_id, total_p95 in (("passed", 3150.0), ("failed", 9000.0)):
        summary = summary_examples.load_summary(run_id, total_p95=total_p95)
        results = tmp_path / f"results-{run_id}"  # one run each: no mtime order to rely on
        (results / run_id).mkdir(parents=True)
        (results / run_id / "summary.json").write_text(summary.model_dump_json())
        probe = last_probe(results)
        assert probe is not None
        assert probe.run_id == run_id
        if run_id == "passed":
            assert "PASSED" in probe.line()
            assert "failed" not in probe.line()
        else:
            assert "FAILED" in probe.line()
            assert probe.line().endswith("; failed Total P95 9000 ms (≤ 8000 ms)"), probe.line()


def test_supervisor_starts_in_order_and_backs_off_restarts(tmp_path: Path) -> None:
    """A service starts only after the one it comes after is ready (a log line); one that
    keeps exiting is restarted with growing back-off; ON_FAILURE leaves a clean exit be."""
    python = sys.executable
    rows = [
        ServiceSpec("first", (python, "-c", "import time; print('up', flush=True); time.sleep(60)"),
                    ready=LogLine("^up$")),
        ServiceSpec("crasher", (python, "-c", "raise SystemExit(3)"), ready=LogLine("never"),
                    after=("first",)),
        ServiceSpec("oneshot", (python, "-c", "pass"), ready=LogLine("never"),
                    restart=Restart.ON_FAILURE),
    ]  # fmt: skip
    events: list[str] = []
    supervisor = Supervisor(
        rows,
        log_dir=tmp_path,
        envs={r.name: {"PATH": "/usr/bin"} for r in rows},
        timings=SupervisorTimings(backoff=Backoff(base_s=0.2, max_s=0.4, jitter=lambda: 1.0)),
        on_event=events.append,
    )
    try:
        supervisor.tick()
        by_name = {s.name: s for s in supervisor.statuses()}
        assert by_name["crasher"].state is State.WAITING
        assert by_name["first"].state is State.STARTING

        def crashed_twice() -> bool:
            supervisor.tick()
            return {s.name: s for s in supervisor.statuses()}["crasher"].restarts >= 2

        wait_until(crashed_twice, timeout_s=20, what="two restarts", poll_s=0.05)
        state = {s.name: s for s in supervisor.statuses()}
        assert state["first"].state is State.READY
        assert state["oneshot"].state is State.EXITED
        assert "crasher exited with code 3; restart 1 in 0.2 s" in events
        assert "crasher exited with code 3; restart 2 in 0.4 s" in events
    finally:
        supervisor.stop()
    assert all(s.pid is None or s.state in (State.STOPPED, State.EXITED)
               for s in supervisor.statuses())  # fmt: skip


def test_stop_kills_processes_outside_the_service_group(tmp_path: Path) -> None:
    """A grandchild in its own session that ignores SIGTERM is still gone after stop."""
    script = (
        "import subprocess, sys, time\n"
        "code = 'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "time.sleep(60)'\n"
        "child = subprocess.Popen([sys.executable, '-c', code], start_new_session=True)\n"
        "print('child', child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    rows = [ServiceSpec("parent", (sys.executable, "-c", script), ready=LogLine("^child "))]
    supervisor = Supervisor(
        rows, log_dir=tmp_path, envs={"parent": {"PATH": "/usr/bin"}},
        timings=SupervisorTimings(stop_grace_s=0.5),
    )  # fmt: skip

    def ready() -> bool:
        supervisor.tick()
        return supervisor.all_ready()

    wait_until(ready, timeout_s=20, what="the parent ready", poll_s=0.05)
    line = next(x for x in (tmp_path / "parent.log").read_text().splitlines() if "child" in x)
    grandchild = int(line.split()[1])
    supervisor.stop()
    wait_until(lambda: not Path(f"/proc/{grandchild}").exists() or
               "Z" in Path(f"/proc/{grandchild}/stat").read_text().rsplit(")", 1)[1][:3],
               timeout_s=5, what="the grandchild gone")  # fmt: skip


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--twin-port", "0"], {}, "twin_port"),
        (["--redis-url", "http://nowhere"], {}, "redis_url"),
        (["--redis-url", "redis://127.0.0.1:notaport/0"], {}, "redis_url (--redis-url or "),
        ([], {"REDIS_URL": "redis://:secretpw@127.0.0.1:99999/0"}, "its port is not a number"),
        (["--redis-url", "redis://:secretpw@10.255.255.1:6399/0"], {}, "10.255.255.1:6399"),
        ([], {"RUNPOD_ENDPOINT_ID": "abc123"}, "RUNPOD_API_KEY"),
        ([], {"TWIN_WORKERS_MIN": "9", "TWIN_WORKERS_MAX": "1"}, "invalid twin settings"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    """A bad flag, Redis URL, hosted endpoint without a key or twin variable: exit 2, one
    line naming it, no traceback, no password echoed."""
    base = {"PATH": "/usr/bin", "HOME": str(tmp_path)}
    result = subprocess.run(
        [PODPULSE, "up", "--log-dir", str(tmp_path / "logs"), *args],
        env=base | env, capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert "secretpw" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_port_in_use_is_refused(tmp_path: Path) -> None:
    """The twin's port already taken: exit 2 naming the port, before anything starts."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = subprocess.run(
            [PODPULSE, "up", "--twin-port", str(port), "--log-dir", str(tmp_path / "l"),
             "--redis-url", f"redis://127.0.0.1:{free_port()}/0"],
            env={"PATH": "/usr/bin", "HOME": str(tmp_path)}, capture_output=True, text=True,
            timeout=60, cwd=tmp_path,
        )  # fmt: skip
    assert result.returncode == 2
    assert f"port {port}" in result.stderr
