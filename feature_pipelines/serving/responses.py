"""Response bodies of the feature server: one row per entity, in the request's order.

    {"request_id": "...", "retrieval_spec": "fraud_model", "at": "2024-02-19T23:59:59+00:00",
     "features": ["transactions__amount_sum_7d", ...],
     "rows": [{"entity": {"account_id": "a000001", "merchant_id": "m00001"},
               "values": {"transactions__amount_sum_7d": 412.5, ...},
               "feature_sets": {"transactions_v1": {"status": "present", "ts": "2024-02-09T13:02:11+00:00"},
                                "merchants_v1": {"status": "expired", "ts": "2024-02-08T00:00:00+00:00"}}}]}

Each feature set's values of an entity come from one stored row: its `ts` is the `ts` of each
of them. `status` is `present`, `not_found` (nothing stored for the entity) or `expired` (older
than the set's temporal_join_lookback at `at`); the values of the last two are null, as
`FeatureStore.get_online_features` returns them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from feature_pipelines.serving.requests import KeyColumn
from feature_pipelines.stores.online.codec import micros_to_datetime
from feature_pipelines.stores.online.lookup import NOT_FOUND, SetValues


def feature_rows(keys: Sequence[KeyColumn], entities: dict[str, list], found: Sequence[SetValues]) -> list[dict]:
    """One row per entity: its keys, its values by output column, and per feature set its status and ts."""
    names = [k.name for k in keys]
    count = len(entities[names[0]]) if names else 0
    per_set = []
    for values in found:
        statuses = values.statuses()
        times = [None if status == NOT_FOUND else micros_to_datetime(ts).isoformat()
                 for status, ts in zip(statuses, values.ts_micros.tolist())]
        per_set.append((values.selection.feature_set.key, statuses, times))
    columns = [(name, column) for values in found for name, column in values.columns.items()]
    return [
        {
            "entity": {name: entities[name][i] for name in names},
            "values": {name: column[i] for name, column in columns},
            "feature_sets": {key: {"status": statuses[i], "ts": times[i]} for key, statuses, times in per_set},
        }
        for i in range(count)
    ]


def body(request_id: str, spec: str | None, at: datetime, columns: Sequence[str], rows: list[dict]) -> bytes:
    payload: dict[str, Any] = {"request_id": request_id}
    if spec is not None:
        payload["retrieval_spec"] = spec
    payload.update(at=at.isoformat(), features=list(columns), rows=rows)
    return dump(payload)


def error_body(request_id: str, status: int, message: str, field: str | None = None) -> bytes:
    return dump({"error": {"status": status, "message": message, "field": field}, "request_id": request_id})


def dump(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
