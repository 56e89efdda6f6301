"""Serving layer: the feature server, online features over HTTP (`featurestore serve`).

Thin over the layers below: request parsing, authentication and responses live here; the
lookups are the online store's (`stores/online/lookup.py`), the same code that answers
`FeatureStore.get_online_features` in process.

May import: `spec`, `stores` (the online store only), `streaming` (pushed events), and the top-level modules. Never Dagster,
Spark, `compute` or the offline store: the server needs none of them, so it starts in a second or two.
"""
