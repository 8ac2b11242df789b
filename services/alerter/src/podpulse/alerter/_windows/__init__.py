"""Windows: statistics per series over the last seconds, where ingest and the rules meet.

``_contract`` is all the two sides share (observations in, one statistic of one metric over
one window out); ``_memory`` keeps a process's buckets, and ``_redis`` merges every
process's buckets through Redis, so every process behind one address gives one verdict.
"""
