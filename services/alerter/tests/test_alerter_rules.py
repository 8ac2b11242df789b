"""Rules files: the shipped defaults, and errors that name the key and the line."""

from __future__ import annotations

import pytest

from podpulse.alerter._rules._alert import fingerprint, label_set_string
from podpulse.alerter._rules._yaml import (
    RulesError,
    default_rules,
    default_rules_text,
    parse_rules,
    render_rules,
)

RULE = """\
rules:
  - name: ExecP95High
    metric: exec_ms
    stat: p95
    op: ">"
    threshold: 5000
    window: 5m
    severity: critical
"""


def test_defaults_are_the_documented_thresholds() -> None:
    """The packaged defaults hold exactly the five alerts of the design and the two streaming
    ones (time to first token, time per output token), with their severities."""
    config = default_rules()
    got = {(r.name, r.metric, r.stat, r.op, r.threshold, r.severity) for r in config.rules}
    assert got == {
        ("ExecP95High", "exec_ms", "p95", ">", 5000, "critical"),
        ("DelayP50High", "delay_ms", "p50", ">", 2000, "warning"),
        ("TotalP95High", "total_ms", "p95", ">", 8000, "critical"),
        ("FailRateHigh", "fail_rate", "rate", ">", 0.01, "critical"),
        ("ThroughputLow", "tokens_per_s", "mean", "<", 30, "warning"),
        ("TtftP95High", "ttft_ms", "p95", ">", 2000, "warning"),
        ("TpotP95High", "tpot_ms", "p95", ">", 50, "warning"),
    }
    assert all(r.for_ > 0 and r.min_samples > 1 for r in config.rules)


def test_rendered_rules_read_back_equal() -> None:
    """render_rules writes a file parse_rules reads back to the same config."""
    config = default_rules()
    assert parse_rules(render_rules(config)) == config
    assert "ExecP95High" in default_rules_text()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (RULE + "    bogus: 1\n", "f.yaml:9: rules.0.bogus: unknown key"),
        (RULE.replace("5000", '"5000"'), "f.yaml:6: rules.0.threshold: Input should be a valid"),
        (RULE.replace("5m", "5"), "f.yaml:7: rules.0.window: must be a duration string"),
        (RULE.replace("5m", "5x"), "f.yaml:7: rules.0.window: '5x' is not a duration"),
        (RULE + "route: {group_wait: 1s, grup_by: [a]}\n", "f.yaml:9: route.grup_by: unknown key"),
        (
            RULE + '    annotations: {summary: "{{ vale }}"}\n',
            "f.yaml:9: rules.0.annotations.summary: unknown template name {{ vale }}",
        ),
        (
            RULE + '    annotations: {summary: "{{ labels.team }}"}\n',
            "f.yaml:2: rules.0: annotation 'summary': no label team",
        ),
        (RULE.replace("stat: p95", "stat: p95\n    stat: p50"), "f.yaml:5: stat: duplicate key"),
        (RULE.replace("exec_ms", "fail_rate"), "f.yaml:2: rules.0: fail_rate takes stat 'rate'"),
        (RULE + "    labels: {severity: x}\n", "f.yaml:9: rules.0.labels: set by the alerter"),
        ("rules: [\n", "f.yaml:2: not valid YAML"),
        (RULE.replace("severity: critical", ""), "f.yaml:2: rules.0.severity: Field required"),
    ],
)
def test_errors_name_the_line_and_the_key(text: str, expected: str) -> None:
    """Every invalid file is refused with file:line: key path: why."""
    with pytest.raises(RulesError) as info:
        parse_rules(text, source="f.yaml")
    assert expected in str(info.value), str(info.value)


def test_templates_render_value_threshold_endpoint_and_labels() -> None:
    """Annotations substitute value, threshold, endpoint and labels.NAME, nothing else."""
    config = parse_rules(
        RULE + '    labels: {team: ml}\n    annotations: {s: "{{value}}>{{ threshold }} '
        '{{ endpoint }} {{ labels.team }} {x}"}\n'
    )
    template = config.rules[0].annotations["s"]
    text = template.render(value=5234.5, threshold=5000, labels={"endpoint": "ep", "team": "ml"})
    assert text == "5234.5>5000 ep ml {x}"


def test_fingerprint_and_group_key_follow_prometheus() -> None:
    """An empty label set hashes to FNV-1a's offset basis; label sets print as Go writes them."""
    assert fingerprint({}) == "cbf29ce484222325"
    assert fingerprint({"a": "1", "b": "2"}) == fingerprint({"b": "2", "a": "1"})
    assert fingerprint({"a": "1"}) != fingerprint({"a": "2"})
    assert label_set_string({"endpoint": "ep", "alertname": "X"}) == (
        '{alertname="X", endpoint="ep"}'
    )


def test_a_window_longer_than_the_retention_is_refused_with_its_line() -> None:
    """With the retention as the limit, a rule window of 2h (or 10^20 weeks) is refused with
    file:line; one within it reads."""
    for window in ("2h", "99999999999999999999w"):
        with pytest.raises(RulesError) as info:
            parse_rules(RULE.replace("5m", window), source="f.yaml", max_window_s=3600)
        assert "f.yaml:7: rules.0.window: longer than the windows kept" in str(info.value)
    assert parse_rules(RULE.replace("5m", "1h"), max_window_s=3600).rules[0].window == 3600


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: &a [*a]\n", "f.yaml:1: a YAML alias makes this value contain itself"),
        ("x: 1\nb: &b {k: *b}\n", "f.yaml:2: a YAML alias makes this value contain itself"),
        (
            "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n"
            + "".join(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 9))
            + "rules: *a8\n",
            "expands to more than 100000 values (YAML aliases)",
        ),
        ("rules: " + "[" * 100 + "]" * 100 + "\n", "f.yaml:1: nested more than 64 levels"),
        ("rules: " + "[" * 5000 + "]" * 5000 + "\n", "f.yaml:1: nested more than 64 levels"),
        (
            "a0: &a0 [[[[[[[[[[x]]]]]]]]]]\n"
            + "".join(f"a{i}: &a{i} [[[[[[[[[[*a{i - 1}]]]]]]]]]]\n" for i in range(1, 8))
            + "rules: *a7\n",
            "nested more than 64 levels deep",
        ),
    ],
)
def test_yaml_aliases_that_loop_or_explode_are_refused_with_the_line(
    text: str, expected: str
) -> None:
    """A value containing itself through an alias, a billion laughs (nine levels of ten
    aliases), or nesting past the limit is a RulesError naming the file and line."""
    with pytest.raises(RulesError) as info:
        parse_rules(text, source="f.yaml")
    assert expected in str(info.value), str(info.value)
