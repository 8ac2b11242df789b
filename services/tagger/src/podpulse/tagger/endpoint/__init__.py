"""The endpoint: its live workers and scaling, the history of changes, its API key.

``cli`` holds ``podpulse endpoint`` and ``podpulse keys`` (docs/endpoint.md). Inside:
``_change`` (diff, checks and the change itself, published and recorded), ``_history`` (the
JSON-lines history of applied changes), ``_keys`` (verify and swap the RunPod API key file).
"""
