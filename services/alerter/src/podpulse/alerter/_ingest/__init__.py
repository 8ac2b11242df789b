"""Ingest: spans in over OTLP/HTTP, each read into one observation in the windows.

``_http`` is the Starlette app (``POST /v1/traces``, ``GET /metrics``, ``GET /-/healthy``),
``_otlp`` decodes protobuf and JSON bodies into one plain span form, ``_reader`` judges each
span (an observation, a rejection with its reason, or not one of ours), and ``_metrics`` holds
the ingest counters and the window statistics ``/metrics`` renders.
"""
