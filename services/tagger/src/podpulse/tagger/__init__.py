"""podpulse.tagger — what a deployment is and what it costs: releases, endpoint, cost.

Three products, one subpackage each, each with its commands in a public ``cli.py`` and its
internals in private modules:

- ``releases``: the soak gate, annotated git tags, DEPLOYMENT.md records and auto-release on a
  passing soak (``podpulse release`` / ``releases``, docs/releases.md);
- ``endpoint``: the live endpoint's workers and scaling, the history of changes, and the API
  key's rotation (``podpulse endpoint`` / ``keys``, docs/endpoint.md);
- ``cost``: the monthly bill from observed traffic, RunPod's prices, the scaler model and the
  advisor (``podpulse cost`` / ``advise``, docs/cost.md).

They share only podpulse.toml's reader (``_deployment_file``) and the settings; releases and
cost never import each other. The Celery rooms (``app``, ``tasks``, ``settings``,
``__main__``) stay here: auto-release, on the ``tagger`` queue, is the one task.
"""
