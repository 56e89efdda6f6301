"""Streaming: pushed events, checked against their source's schema, the durable event log they
go to (Redis Streams), and the stream processor (`featurestore stream`) that applies them online
and appends them to their Delta sources (through `stores/offline`, never importing Delta itself).

Beside the layers, like `serving/`: the feature server pushes through it, so the modules it uses
import no pandas or pyarrow at module level (a DataFrame given to `FeatureStore.push` is
converted on first use).

May import: `spec`, `stores`, and the top-level `errors`, `clock`, `settings` and `faults`. Never Dagster,
Spark or Delta.
"""
