"""podpulse.common — settings, logging, telemetry, bus, RunPod clients and the CLI root."""
