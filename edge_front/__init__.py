"""The HTTP tier: validates, authenticates, serves cache hits, and queues misses."""
