"""podpulse.alerter — OTLP receiver, alert rules and notifications (to come)."""
