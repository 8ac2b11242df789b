"""podpulse.common — settings, logging, telemetry, bus, events, RunPod clients, the CLI root,
and what services share about probe runs: run summaries, histograms, retries."""
