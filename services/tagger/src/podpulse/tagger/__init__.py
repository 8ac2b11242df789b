"""podpulse.tagger — the release gate, annotated git tags and DEPLOYMENT.md records.

``podpulse release`` / ``podpulse releases`` (docs/releases.md) and the ``tagger`` queue's
auto-release task; the modules are private, the commands and the task are the surface.
"""
