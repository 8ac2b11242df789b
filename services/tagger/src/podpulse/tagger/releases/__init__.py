"""Releases: the soak gate, annotated git tags, DEPLOYMENT.md records, auto-release.

``cli`` holds ``podpulse release`` and ``podpulse releases`` (docs/releases.md); the tagger's
Celery task (podpulse.tagger.tasks) hands soak-completed events to ``_auto``. Inside:
``_release`` (the one release core), ``_gate`` (the soak evidence), ``_git`` (real git),
``_records`` (DEPLOYMENT.md), ``_publish`` (the release_recorded event, bounded).
"""
