"""podpulse.tagger — see DESIGN.md; this member is built out by its own issue."""
