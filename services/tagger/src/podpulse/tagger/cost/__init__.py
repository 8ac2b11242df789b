"""Cost: what the endpoint costs a month, and the cheapest configuration meeting the SLO.

``cli`` holds ``podpulse cost`` and ``podpulse advise`` (docs/cost.md). Inside: ``_month``
(the one model both answer from: a configuration's month at a rate, billed), ``_scaler_model``
(the endpoint simulated under load), ``_prices`` (RunPod's GPU rates, overridable),
``_estimate`` (a run's measurements, and cost's report), ``_advise`` (the candidates, judged
and priced).
"""
