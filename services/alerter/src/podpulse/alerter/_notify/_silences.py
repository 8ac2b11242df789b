"""Silences (matchers and an end time, kept in Redis) and inhibition, as Alertmanager means them.

A silence mutes every alert all of its matchers match, from ``starts_at`` until ``ends_at``.
Matchers are Alertmanager's: ``=``, ``!=``, ``=~`` and ``!~``, regexes anchored at both ends;
a label an alert lacks has the empty value. An inhibit rule mutes a target alert while a
*firing* source alert exists whose ``equal`` labels have the same values (both lacking a
label counts as equal), and never lets an alert inhibit itself.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping
from typing import Literal

import redis
from pydantic import BaseModel, ConfigDict, Field, field_validator

from .._rules._alert import Alert
from .._rules._model import InhibitRule

__all__ = ["Matcher", "Silence", "SilenceStore", "inhibited", "parse_matcher"]

MatchOp = Literal["=", "!=", "=~", "!~"]
_MATCHER = re.compile(r'^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"?(.*?)"?\s*$')


class Matcher(BaseModel):
    """One label matcher, e.g. ``endpoint=~"prod-.*"``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    op: MatchOp
    value: str

    @field_validator("value")
    @classmethod
    def _regex(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        return value

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
        silences = [Silence.model_validate_json(value) for value in raw.values()]
        ended = [s.id for s in silences if s.ends_at <= now]
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
