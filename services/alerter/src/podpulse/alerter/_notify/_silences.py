"""Silences (matchers and an end time, kept in Redis) and inhibition, as Alertmanager means them.

A silence mutes every alert all of its matchers match, from ``starts_at`` until ``ends_at``.
Matchers are Alertmanager's: ``=``, ``!=``, ``=~`` and ``!~``, regexes anchored at both ends;
a label an alert lacks has the empty value. An inhibit rule mutes a target alert while a
*firing* source alert exists whose ``equal`` labels have the same values (both lacking a
label counts as equal), and never lets an alert inhibit itself.
"""

from __future__ import annotations

import math
import re
import re._constants as sre  # type: ignore[import-not-found]  # private to re, typeshed has no stubs
import re._parser as sre_parse  # type: ignore[import-not-found]  # private to re, typeshed has no stubs
import uuid
from collections.abc import Iterable, Mapping
from typing import Any, Literal, Self

import redis
import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .._rules._alert import Alert
from .._rules._model import InhibitRule

__all__ = ["Matcher", "Silence", "SilenceStore", "inhibited", "parse_matcher"]

log = structlog.get_logger("podpulse.alerter")

MatchOp = Literal["=", "!=", "=~", "!~"]
_MATCHER = re.compile(r'^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"?(.*?)"?\s*$')

# Python's re backtracks, and a silence is matched against every alert at every evaluation:
# `(x+x+)+y` froze the alerter until the silence expired. Alertmanager matches with Go's RE2,
# which cannot backtrack; rather than add an RE2 binding, a matcher regex must stay in a
# checked subset whose worst case is a low polynomial in the label's length (labels are
# short: an endpoint id is at most 128 characters): no repetition inside a repetition (the
# exponential case), no alternation inside a repetition (`(a|a)*b` is exponential too), at
# most three repetitions in all (each free one multiplies the work by the label's length),
# no backreferences, lookarounds or conditionals (RE2 has none either), and a bounded length.
# The pattern is read by re's own parser (re._parser, sre_parse before 3.11: private, and
# without stubs), so what is checked is exactly what re will run; the CLI tests pin which
# patterns it refuses and keeps.
_REGEX_MAX_CHARS = 256
_REGEX_MAX_REPEATS = 3
_REPEATS = frozenset({sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT})
_REFUSED = {
    sre.GROUPREF: "a backreference",
    sre.GROUPREF_EXISTS: "a conditional group",
    sre.ASSERT: "a lookaround",
    sre.ASSERT_NOT: "a lookaround",
}


def _check_regex(value: str) -> None:
    """ValueError when *value* is not a regex, or falls outside the subset that cannot
    backtrack catastrophically (see the comment above)."""
    if len(value) > _REGEX_MAX_CHARS:
        raise ValueError(f"regex longer than {_REGEX_MAX_CHARS} characters")
    try:
        parsed = sre_parse.parse(value)
    except re.error as exc:
        raise ValueError(f"not a regular expression: {exc}") from None
    repeats = 0
    # (items, inside a repetition): an explicit stack, so nesting depth costs no recursion.
    stack: list[tuple[Any, bool]] = [(parsed, False)]
    while stack:
        items, repeated = stack.pop()
        for op, arg in items:
            inner, repeats_here = _inside(op, arg, repeated)
            repeats += repeats_here
            stack.extend(inner)
    if repeats > _REGEX_MAX_REPEATS:
        raise ValueError(f"more than {_REGEX_MAX_REPEATS} repetitions (*, +, {{n,m}})")


def _inside(op: Any, arg: Any, repeated: bool) -> tuple[list[tuple[Any, bool]], int]:
    """The sub-patterns of one parsed item (and whether they repeat), and its repetitions."""
    if op in _REFUSED:
        raise ValueError(f"{_REFUSED[op]} is not allowed in a matcher regex")
    if op in _REPEATS:
        _, most, body = arg
        if most <= 1:  # x? or x{0,1}: an option, not a repetition
            return [(body, repeated)], 0
        if repeated:
            raise ValueError(
                "a repetition inside a repetition (e.g. (x+)+) can take exponential time"
            )
        return [(body, True)], 1
    if op is sre.BRANCH:
        if repeated:
            raise ValueError(
                "an alternation inside a repetition (e.g. (a|b)+) can take exponential time"
            )
        return [(branch, repeated) for branch in arg[1]], 0
    if op is sre.SUBPATTERN:
        return [(arg[3], repeated)], 0
    if op is sre.ATOMIC_GROUP:
        return [(arg, repeated)], 0
    return [], 0


# The latest time a silence may end: past datetime's year 9999 no date can be printed.
_LATEST = 253_370_764_800.0  # 9999-01-01T00:00:00Z


class Matcher(BaseModel):
    """One label matcher, e.g. ``endpoint=~"prod-.*"``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    op: MatchOp
    value: str

    @model_validator(mode="after")
    def _regex(self) -> Self:
        # Only =~ and !~ take a regex; = and != compare the text as it is.
        if self.op in ("=~", "!~"):
            _check_regex(self.value)
        return self

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether the alert's *labels* satisfy this matcher."""
        actual = labels.get(self.name, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        found = re.fullmatch(self.value, actual) is not None
        return found if self.op == "=~" else not found

    def __str__(self) -> str:
        return f'{self.name}{self.op}"{self.value}"'


def parse_matcher(text: str) -> Matcher:
    """``name=value``, ``name!="v"``, ``name=~"re"`` or ``name!~re``; ValueError otherwise."""
    match = _MATCHER.match(text)
    if match is None:
        raise ValueError(f"not a matcher: {text!r} (use name=value, !=, =~ or !~)")
    name, op, value = match.groups()
    return Matcher.model_validate({"name": name, "op": op, "value": value})


class Silence(BaseModel):
    """Mutes what all its matchers match, from ``starts_at`` to ``ends_at`` (Unix seconds)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    matchers: tuple[Matcher, ...] = Field(min_length=1)
    starts_at: float
    ends_at: float
    created_by: str = ""
    comment: str = ""

    @field_validator("starts_at", "ends_at")
    @classmethod
    def _bounded(cls, value: float) -> float:
        # Bounded where read, so a silence stored with any end (--duration 99999999999w, or
        # by an older podpulse) can still be listed and printed.
        if math.isnan(value):
            raise ValueError("must be a number")
        return min(max(value, 0.0), _LATEST)

    def active(self, now: float) -> bool:
        """Whether the silence is in force at *now*."""
        return self.starts_at <= now < self.ends_at

    def mutes(self, alert: Alert, now: float) -> bool:
        """Whether this silence mutes *alert* at *now*."""
        return self.active(now) and all(m.matches(alert.labels) for m in self.matchers)


class SilenceStore:
    """Silences under ``<prefix>silences``; expired ones are removed as they are read."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self._client = client
        self._hash = f"{prefix}silences"

    def add(self, silence: Silence) -> Silence:
        """Keep *silence*; returns it (with its id)."""
        self._client.hset(self._hash, silence.id, silence.model_dump_json())
        return silence

    def expire(self, silence_id: str) -> bool:
        """Remove a silence by id; whether there was one."""
        return bool(self._client.hdel(self._hash, silence_id))

    def current(self, now: float) -> list[Silence]:
        """The silences that have not ended at *now* (active or yet to start)."""
        raw: Mapping[bytes, bytes] = self._client.hgetall(self._hash)  # type: ignore[assignment]  # decode_responses off: bytes
        silences: list[Silence] = []
        ended: list[bytes | str] = []
        for key, value in raw.items():
            try:
                silences.append(Silence.model_validate_json(value))
            except ValidationError as exc:
                # Stored before its matchers were checked (a regex that can freeze the
                # process): it can never be applied safely, so it goes, said once.
                log.warning(
                    "silence.dropped_unreadable",
                    id=key.decode(errors="replace"),
                    error=str(exc.errors(include_url=False)[0]["msg"]),
                )
                ended.append(key)
        ended.extend(s.id for s in silences if s.ends_at <= now)
        if ended:
            self._client.hdel(self._hash, *ended)
        return sorted((s for s in silences if s.ends_at > now), key=lambda s: s.starts_at)


def inhibited(
    target: Alert, alerts: Iterable[Alert], rules: Iterable[InhibitRule], now: float
) -> bool:
    """Whether a firing alert among *alerts* inhibits *target* under one of *rules*."""
    sources = [a for a in alerts if not a.resolved(now)]
    for rule in rules:
        if target.labels.get("severity") != rule.target_severity:
            continue
        for source in sources:
            if source.fingerprint == target.fingerprint:
                continue
            if source.labels.get("severity") != rule.source_severity:
                continue
            if all(source.labels.get(n, "") == target.labels.get(n, "") for n in rule.equal):
                return True
    return False
