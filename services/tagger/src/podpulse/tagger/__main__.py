"""``python -m podpulse.tagger worker [celery options]``: the tagger's worker.

The settings are built once, here (a bad variable exits 2 naming it, never its value), e.g.::

    TAGGER_RELEASE_AUTO=true TAGGER_RELEASE_REPO=/srv/app python -m podpulse.tagger worker
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from pydantic import ValidationError

from podpulse.common.logging import configure_logging
from podpulse.common.settings import CommonSettings, describe_settings_error

from .app import create_app
from .settings import ReleaseSettings

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run Celery's command line (*argv*, default ``sys.argv[1:]``) on the tagger's app."""
    try:
        common, release = CommonSettings(), ReleaseSettings()
    except ValidationError as exc:
        sys.stderr.write(f"invalid settings in the environment: {describe_settings_error(exc)}\n")
        return 2
    configure_logging(common)
    app = create_app(common, release)
    return int(app.start(argv=list(sys.argv[1:] if argv is None else argv)) or 0)


if __name__ == "__main__":
    sys.exit(main())
