"""Cost: what the endpoint costs a month, and the cheapest configuration meeting the SLO.

``cli`` holds ``podpulse cost`` and ``podpulse advise`` (docs/cost.md). Inside: ``_estimate``
(always-on against flex workers, replaying observed traffic), ``_prices`` (RunPod's GPU
rates, overridable), ``_scaler_model`` (the endpoint simulated under load), ``_advise`` (the
candidates, judged and priced).
"""
