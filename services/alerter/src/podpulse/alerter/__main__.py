"""``python -m podpulse.alerter worker|beat [celery options]``: the split alerter.

Settings and rules are built once, here (a bad variable or rules file exits 2 naming it); the
app is handed to Celery's own command line, so every ``celery worker`` / ``beat`` option works::

    python -m podpulse.alerter worker -Q alerter,notify -l INFO
    python -m podpulse.alerter beat -l INFO
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from celery.signals import setup_logging
from pydantic import ValidationError

from podpulse.common.logging import configure_logging
from podpulse.common.settings import CommonSettings, describe_settings_error

from ._pipeline import receiver_url_problems
from ._rules._yaml import RulesError, default_rules, load_rules
from .app import create_app
from .settings import AlerterSettings

__all__ = ["main"]

_EXIT_USAGE = 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run Celery's command line (*argv*, default ``sys.argv[1:]``) on the alerter's app."""
    try:
        common = CommonSettings()
        settings = AlerterSettings()
    except ValidationError as exc:
        sys.stderr.write(f"invalid settings in the environment: {describe_settings_error(exc)}\n")
        return _EXIT_USAGE
    problems = receiver_url_problems()
    if problems:
        sys.stderr.write(f"invalid settings in the environment: {'; '.join(problems)}\n")
        return _EXIT_USAGE
    try:
        path = settings.rules_file
        limit = settings.retention_s
        if path is None:
            config = default_rules(max_window_s=limit)
        else:
            config = load_rules(path, max_window_s=limit)
    except RulesError as exc:
        sys.stderr.write(f"{exc}\n")
        return _EXIT_USAGE
    # A handler of setup_logging stops Celery configuring logging itself: every line goes
    # through podpulse's redacting pipeline (as the prober's worker does).
    setup_logging.connect(lambda **_: configure_logging(common), weak=False)
    app = create_app(common, settings, config)
    args = list(sys.argv[1:] if argv is None else argv)
    return int(app.start(argv=args) or 0)


if __name__ == "__main__":
    sys.exit(main())
