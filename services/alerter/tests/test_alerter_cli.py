"""`podpulse alerts status|rules|test|silence` in this process, on a real Redis and real
loopback receivers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis
from alerter_helpers import recorder
from typer.testing import CliRunner, Result

from podpulse.alerter._rules._state import AlertState, StateStore
from podpulse.alerter._rules._yaml import default_rules, parse_rules
from podpulse.alerter._windows._contract import SeriesKey
from podpulse.common.cli import app_from_installed
from podpulse.common.testing import free_port

BAD_RULES = """rules:
  - name: X
    metric: exec_ms
    stat: p95
    op: ">"
    threshold: "5000"
    window: 1m
    severity: critical
"""


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, redis_url: str, key_prefix: str):
    """`podpulse ...` with this test's Redis and key prefix, no receivers configured."""
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("ALERTER_STATE_PREFIX", key_prefix)
    for name in ("SLACK_WEBHOOK_URL", "ALERT_WEBHOOK_URL", "ALERTMANAGER_URL", "ALERT_RULES_FILE"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(f"{name}_FILE", raising=False)
    runner = CliRunner()
    app = app_from_installed()

    def invoke(*args: str) -> Result:
        return runner.invoke(app, list(args), catch_exceptions=False)

    return invoke


def test_rules_prints_the_defaults_and_validates_a_file(cli, tmp_path: Path) -> None:
    """`rules` prints the shipped seven (which read back as the defaults); a bad file: exit 2,
    FILE:LINE: key: why."""
    result = cli("alerts", "rules")
    assert result.exit_code == 0
    assert parse_rules(result.stdout) == default_rules()
    assert len(default_rules().rules) == 7
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD_RULES)
    result = cli("alerts", "rules", "--rules", str(bad))
    assert result.exit_code == 2
    assert (
        result.stderr.strip()
        == f"error: {bad}:6: rules.0.threshold: Input should be a valid number"
    )
    good = tmp_path / "good.yaml"
    good.write_text(BAD_RULES.replace('"5000"', "5000"))
    result = cli("alerts", "rules", "--rules", str(good))
    assert (result.exit_code, result.stdout) == (0, good.read_text())


def test_silence_add_list_expire_and_bad_flags(cli) -> None:
    """A silence is added with matchers and a duration, listed, and expired; bad matchers,
    durations and end times are exit 2 with one line."""
    result = cli(
        "alerts",
        "silence",
        "add",
        "endpoint=ep1",
        'alertname=~"Exec.*"',
        "--duration",
        "2h",
        "--comment",
        "deploy",
    )
    assert result.exit_code == 0, result.stderr
    silence_id = result.stdout.split()[0]
    listed = cli("alerts", "silence", "list").stdout
    assert silence_id in listed
    assert 'endpoint="ep1"' in listed
    assert 'alertname=~"Exec.*"' in listed
    assert "deploy" in listed
    for args, why in [
        (("endpoint", "--duration", "1h"), "matcher: not a matcher"),
        (('endpoint=~"("', "--duration", "1h"), "matcher: not a regular expression"),
        (("endpoint=ep1", "--duration", "5"), "--duration: '5' is not a duration"),
        (("endpoint=ep1", "--until", "tomorrow"), "--until: not an ISO 8601 time"),
        (("endpoint=ep1", "--until", "2020-01-01T00:00:00+00:00"), "would end before it starts"),
        (("endpoint=ep1",), "give one of --duration or --until"),
    ]:
        result = cli("alerts", "silence", "add", *args)
        assert result.exit_code == 2, args
        assert len(result.stderr.splitlines()) == 1, result.stderr
        assert why in result.stderr
    assert cli("alerts", "silence", "expire", silence_id).exit_code == 0
    assert cli("alerts", "silence", "list").stdout.strip() == "no silences"
    missing = cli("alerts", "silence", "expire", silence_id)
    assert missing.exit_code == 1
    assert "no silence" in missing.stderr


def test_status_shows_each_rule_and_series_and_the_firing_alerts(
    cli, redis_url: str, key_prefix: str
) -> None:
    """`status` lists every kept (rule, series) state and names the firing alerts."""
    assert "no alert states yet" in cli("alerts", "status").stdout
    client = redis.Redis.from_url(redis_url)
    states = StateStore(client, key_prefix)
    states.save(
        {
            ("ExecP95High", SeriesKey("ep1", "m")): AlertState(
                phase="firing", value=6200.0, samples=40, active_at=1.0, fired_at=5.0
            ),
            ("DelayP50High", SeriesKey("ep1", "m")): AlertState(phase="no_data", samples=2),
        }
    )
    out = cli("alerts", "status").stdout
    lines = out.splitlines()
    assert lines[0].split() == ["RULE", "ENDPOINT", "MODEL", "STATE", "VALUE", "SAMPLES", "SINCE"]
    assert lines[1].split()[:6] == ["DelayP50High", "ep1", "m", "no_data", "-", "2"]
    assert lines[2].split()[:6] == ["ExecP95High", "ep1", "m", "firing", "6200", "40"]
    assert "FIRING CRITICAL ExecP95High on ep1: 6200 > 5000" in out


def test_test_sends_a_sample_to_every_receiver_and_reports_each(cli, monkeypatch) -> None:
    """`test` sends one sample to each configured receiver: one delivered, one down (exit 1);
    none configured is exit 2."""
    result = cli("alerts", "test")
    assert result.exit_code == 2
    assert "no receiver configured" in result.stderr
    with recorder() as hook:
        monkeypatch.setenv("ALERT_WEBHOOK_URL", hook.url)
        monkeypatch.setenv("SLACK_WEBHOOK_URL", f"http://127.0.0.1:{free_port()}/down")
        result = cli("alerts", "test")
        bodies = hook.bodies()
    assert result.exit_code == 1
    assert "webhook: delivered" in result.stdout
    assert "slack: FAILED (slack: ConnectError)" in result.stdout
    assert [b["alerts"][0]["labels"]["alertname"] for b in bodies] == ["PodpulseTest"]
    assert bodies[0]["version"] == "4"


def test_a_malformed_receiver_url_is_refused_at_start_naming_its_variable(
    cli, monkeypatch, tmp_path: Path, capsys
) -> None:
    """A receiver URL httpx cannot send to stops `alerts test`, `alerter serve` and the Celery
    entry point before anything is sent: exit 2, one line naming the variable (its _FILE when
    read from one), never the value, no traceback."""
    from podpulse.alerter.__main__ import main

    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")  # nothing to reach
    monkeypatch.setenv("ALERT_WEBHOOK_URL", "http://[::1/x")
    said = "error: invalid settings in the environment: ALERT_WEBHOOK_URL: not a URL\n"
    for args in (("alerts", "test"), ("alerter", "serve", "--port", str(free_port()))):
        result = cli(*args)
        assert (result.exit_code, result.stderr) == (2, said), args
        assert "[::1/x" not in result.stdout
    assert main(["worker", "--help"]) == 2
    assert capsys.readouterr().err == said.removeprefix("error: ")
    monkeypatch.delenv("ALERT_WEBHOOK_URL")
    mounted = tmp_path / "slack-url"
    mounted.write_text("slack-canary.test/no-scheme\n")  # no scheme: not a URL
    monkeypatch.setenv("SLACK_WEBHOOK_URL_FILE", str(mounted))
    result = cli("alerts", "test")
    assert result.exit_code == 2
    assert result.stderr.endswith(
        "SLACK_WEBHOOK_URL_FILE: must be an http:// or https:// URL with a host\n"
    )
    assert "slack-canary" not in result.stderr
    monkeypatch.delenv("SLACK_WEBHOOK_URL_FILE")
    monkeypatch.setenv("ALERTMANAGER_URL", "http://alertmanager:port/")  # urlsplit takes it
    result = cli("alerts", "test")
    assert (result.exit_code, result.stderr) == (
        2,
        said.replace("ALERT_WEBHOOK_URL", "ALERTMANAGER_URL"),
    )


def test_serve_refuses_a_bad_rules_file_and_an_unreachable_redis(
    cli, tmp_path, monkeypatch
) -> None:
    """`alerter serve` with a bad rules file is exit 2 naming file:line; without Redis, exit 1."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD_RULES)
    result = cli("alerter", "serve", "--port", str(free_port()), "--rules", str(bad))
    assert result.exit_code == 2
    assert f"{bad}:6: rules.0.threshold" in result.stderr
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    result = cli("alerter", "serve", "--port", str(free_port()))
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: Redis (REDIS_URL) does not answer: ConnectionError"


def test_a_rule_window_past_the_retention_is_exit_2_with_file_line(cli, tmp_path: Path) -> None:
    """`rules --rules` with a 2h window and the default 1h retention: exit 2, FILE:LINE."""
    long = tmp_path / "long.yaml"
    long.write_text(BAD_RULES.replace('"5000"', "5000").replace("1m", "2h"))
    result = cli("alerts", "rules", "--rules", str(long))
    assert result.exit_code == 2
    assert f"error: {long}:7: rules.0.window: longer than the windows kept" in result.stderr


@pytest.mark.parametrize(
    "regex", ["(x+x+)+y", "(a|a)*b", "(a*)*", "a.*b.*c.*d.*e", "(a)\\1", "a(?=b)", "x" * 300]
)
def test_a_matcher_regex_that_can_backtrack_without_end_is_refused(cli, regex: str) -> None:
    """`silence add` refuses a regex outside the checked subset (nested or alternating
    repetition, over three repetitions, backreferences, lookarounds, too long): exit 2."""
    result = cli("alerts", "silence", "add", f'endpoint=~"{regex}"', "--duration", "1h")
    assert result.exit_code == 2, result.stdout
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "matcher:" in result.stderr
    assert cli("alerts", "silence", "list").stdout.strip() == "no silences"


@pytest.mark.parametrize(
    "end", [("--duration", "99999999999w"), ("--until", "9999-12-31T23:59:59-23:59")]
)
def test_a_silence_ending_past_year_9999_is_stored_bounded_and_listed(cli, end) -> None:
    """A silence whose end lies past what a date can show is kept until 9999-01-01 and both
    `add` and every later `list` print it."""
    result = cli("alerts", "silence", "add", "endpoint=ep1", *end)
    assert result.exit_code == 0, result.stderr
    assert "until 9999-01-01T00:00:00Z" in result.stdout
    listed = cli("alerts", "silence", "list")
    assert listed.exit_code == 0
    assert "until 9999-01-01T00:00:00Z" in listed.stdout


def test_silences_stored_by_an_older_alerter_are_listed_or_dropped(
    cli, redis_url: str, key_prefix: str
) -> None:
    """A silence stored unchecked (an end in year 10^9, a freezing regex) does not break
    `list`: the first shows bounded, the second is dropped from Redis."""
    client = redis.Redis.from_url(redis_url)
    far = {"id": "far", "matchers": [{"name": "endpoint", "op": "=", "value": "ep1"}],
           "starts_at": 1.0, "ends_at": 6e16}  # fmt: skip
    freezing = {"id": "freezing", "starts_at": 1.0, "ends_at": 6e16,
                "matchers": [{"name": "endpoint", "op": "=~", "value": "(x+x+)+y"}]}  # fmt: skip
    client.hset(f"{key_prefix}silences", mapping={"far": json.dumps(far),
                                              "freezing": json.dumps(freezing)})  # fmt: skip
    listed = cli("alerts", "silence", "list")
    assert listed.exit_code == 0
    rows = [line.split() for line in listed.stdout.splitlines() if not line.startswith("20")]
    assert [row[:3] for row in rows] == [["far", "until", "9999-01-01T00:00:00Z"]]
    assert "silence.dropped_unreadable" in listed.stdout  # the log line, said once
    assert client.hkeys(f"{key_prefix}silences") == [b"far"]
