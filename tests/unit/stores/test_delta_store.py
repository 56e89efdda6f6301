"""The offline store's definition pin, on a real Delta table written by delta-rs (no Spark)."""

from __future__ import annotations

from pathlib import Path

import pytest
from deltalake import DeltaTable, write_deltalake

from feature_pipelines import Aggregate
from feature_pipelines.errors import OfflineStoreError
from feature_pipelines.spec.fingerprint import FINGERPRINT_PROPERTY
from feature_pipelines.stores.offline.delta_store import DeltaOfflineStore, offline_schema
from tests.factories import feature_set, source

SPEND = feature_set("spend", features={}, source_=source(columns={"user_id": "string", "amount": "float64"}),
                    aggregates=[Aggregate("sum", "amount", windows=["1d", "2d"])], source_lookback="2d",
                    start="2024-03-01")


def test_unpinned_table_with_other_columns_is_refused_and_not_pinned(tmp_path: Path) -> None:
    """A table written before versions were pinned is adopted only if its columns match."""
    store = DeltaOfflineStore(str(tmp_path / "offline"))
    legacy = offline_schema(SPEND).remove(offline_schema(SPEND).get_field_index("amount_sum_2d"))
    write_deltalake(store.table_uri(SPEND), legacy.empty_table(), partition_by=["window_key"])
    with pytest.raises(OfflineStoreError, match="declare the change as version 2"):
        store.open(SPEND).replace_windows([], ["2024-03-01"])
    assert FINGERPRINT_PROPERTY not in DeltaTable(store.table_uri(SPEND)).metadata().configuration
