"""What one supervised service is: a row of the stack's table, nothing more.

A service is declared, not coded: its command, what it adds to the environment, which secrets
it may see, how the supervisor knows it is ready, what it waits for, and whether it is
restarted. The supervisor (podpulse.stack._supervisor) runs any row the same way.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from podpulse.common.settings import Secret

__all__ = ["HttpProbe", "LogLine", "Readiness", "Restart", "ServiceSpec", "TcpProbe"]


@dataclass(frozen=True)
class TcpProbe:
    """Ready once a TCP connection to host:port succeeds."""

    host: str
    port: int


@dataclass(frozen=True)
class HttpProbe:
    """Ready once GET *url* answers 2xx; *headers* (a bearer key) are kept out of the repr."""

    url: str
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class LogLine:
    """Ready once the service's log has a line matching *pattern* since it started."""

    pattern: str

    def __post_init__(self) -> None:
        re.compile(self.pattern)  # a bad pattern is the table's bug: fail when it is declared


Readiness = TcpProbe | HttpProbe | LogLine


class Restart(StrEnum):
    """When an exited service is started again (while the stack runs)."""

    ALWAYS = "always"
    ON_FAILURE = "on-failure"  # not after exit status 0
    NEVER = "never"


@dataclass(frozen=True)
class ServiceSpec:
    """One service of the stack.

    ``secrets``: the only known secrets (podpulse.common.settings.KNOWN_SECRETS) its process
    sees; every other one is withheld from its environment. ``env``: variables set for it
    (these win over the inherited environment). ``after``: services that must be ready first.
    ``needs_command``: a ``podpulse.cli`` entry point that must be installed for this row to
    run at all, so a service that has not landed yet is a row that stays off.
    """

    name: str
    argv: tuple[str, ...]
    ready: Readiness
    # repr=False: a row may carry a key (the twin's, given to the prober as RUNPOD_API_KEY).
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), repr=False)
    secrets: tuple[Secret, ...] = ()
    after: tuple[str, ...] = ()
    restart: Restart = Restart.ALWAYS
    needs_command: str | None = None
    # Redis runs until the others have stopped, so their shutdown can still reach it.
    stop_last: bool = False
