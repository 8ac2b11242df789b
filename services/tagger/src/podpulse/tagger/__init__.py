"""podpulse.tagger — release gate, git tags and deployment records (to come)."""
