"""Store layer: the offline store (Delta Lake) and the online store (Redis), publishing windows
from one to the other, and retiring a version from both.

May import: `spec`, `planning`, and the top-level `errors`, `settings` and `faults`.
"""
