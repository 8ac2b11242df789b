"""podpulse.stack: ``podpulse up``, the whole stack as supervised local processes, no Docker.

The stack is a table of services (podpulse.stack._services) run by a small supervisor
(podpulse.stack._supervisor): started in dependency order, each ready by a TCP, HTTP or
log-line check, restarted with back-off when it crashes, and stopped with its whole process
tree on Ctrl-C.
"""

from ._spec import HttpProbe, LogLine, Readiness, Restart, ServiceSpec, TcpProbe
from ._supervisor import ServiceStatus, State, Supervisor, SupervisorTimings

__all__ = [
    "HttpProbe",
    "LogLine",
    "Readiness",
    "Restart",
    "ServiceSpec",
    "ServiceStatus",
    "State",
    "Supervisor",
    "SupervisorTimings",
    "TcpProbe",
]
