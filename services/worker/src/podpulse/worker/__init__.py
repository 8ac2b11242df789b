"""podpulse.worker — the RunPod serverless handler and the local RunPod twin."""
