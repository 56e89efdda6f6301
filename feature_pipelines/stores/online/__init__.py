"""The online store: the latest values per entity in Redis (server, Cluster or Sentinel), their
byte layout, and the embedded local `redis-server`.

May import: `spec` and the top-level `errors` and `faults`.
"""
