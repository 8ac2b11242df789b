"""``python -m podpulse.prober worker|beat [celery options]``: the prober's worker and beat.

The settings are built once, here, from the environment (a bad variable exits 2 naming it,
never printing its value); the app is built from them and given to Celery's own command line,
so every ``celery worker`` / ``celery beat`` option works as usual, e.g.::

    python -m podpulse.prober worker -Q prober -c 2 -l INFO
    python -m podpulse.prober beat
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from pydantic import ValidationError

from podpulse.common.settings import CommonSettings, TelemetrySettings, describe_settings_error

from ._target import EmbeddedTwin
from .app import connect_process_signals, create_app
from .settings import ProberSettings

__all__ = ["main"]

_EXIT_USAGE = 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run Celery's command line (*argv*, default ``sys.argv[1:]``) on the prober's app."""
    problems = []
    try:
        common = CommonSettings()
    except ValidationError as exc:
        problems.append(describe_settings_error(exc))
    try:
        prober = ProberSettings()
    except ValidationError as exc:
        problems.append(describe_settings_error(exc))
    try:
        telemetry = TelemetrySettings()
    except ValidationError as exc:
        problems.append(describe_settings_error(exc))
    twin = None
    if not problems and prober.target == "twin":
        try:
            twin = EmbeddedTwin.from_env()
        except ValidationError as exc:
            problems.append(describe_settings_error(exc))
    if problems:
        sys.stderr.write(f"invalid settings in the environment: {'; '.join(problems)}\n")
        return _EXIT_USAGE
    app = create_app(common, prober, twin)
    connect_process_signals(app, common, telemetry)
    args = list(sys.argv[1:] if argv is None else argv)
    return int(app.start(argv=args) or 0)


if __name__ == "__main__":
    sys.exit(main())
