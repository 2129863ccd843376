"""What both tiers import: wire types, config, cache keys, the Redis keyspace and the queue protocol."""
