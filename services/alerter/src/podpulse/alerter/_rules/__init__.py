"""Rules: the rules file, and its evaluation over the windows into alerts.

``_model`` is the file's model (rules, route, inhibition) and ``_yaml`` reads it (each error
with its line; ``default_rules.yaml`` ships beside it); ``_templates`` fills annotations;
``_state`` is Prometheus's state machine per (rule, series), its store in Redis and
``ALERTS``; ``_evaluator`` runs every rule on every series and makes the ``_alert`` objects
the notify stage takes.
"""
