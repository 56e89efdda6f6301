"""Delta upkeep: the delta_maintenance job compacts a version's table and window log, keeps
every value, and records what it did on the feature set's asset."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pytest
from dagster import AssetKey, DagsterEventType, instance_for_test
from deltalake import DeltaTable

from feature_pipelines.spec.catalog import Catalog, CatalogEntry
from feature_pipelines.orchestration.code_location import build_definitions
from feature_pipelines.orchestration.maintenance_job import MAINTENANCE_JOB
from feature_pipelines.stores.offline.delta_store import DeltaOfflineStore
from feature_pipelines.settings import Settings
from tests.factories import feature_set

pytestmark = pytest.mark.integration

SPEC = feature_set("small")


def write_windows(store: DeltaOfflineStore, days: int) -> None:
    for day in range(days):
        start = datetime(2024, 1, 1, tzinfo=timezone.utc) + timedelta(days=day)
        key = start.strftime("%Y-%m-%d")
        for attempt in range(2):  # each window written, then rewritten with late data
            batch = pa.record_batch({
                "user_id": ["a", "b", "c"], "ts": pa.array([start] * 3, pa.timestamp("us", tz="UTC")),
                "x": [float(day), float(day) + 0.5, float(attempt)], "window_key": [key] * 3,
                "created": pa.array([start] * 3, pa.timestamp("us", tz="UTC")),
            })
            store.open(SPEC).replace_windows([batch], [key], rows_per_window={key: 3})


def test_maintenance_job_compacts_and_keeps_every_value(settings: Settings, tmp_path: Path) -> None:
    store = DeltaOfflineStore(settings.offline_uri)
    write_windows(store, 12)
    before = store.open(SPEC).read().sort_by([("window_key", "ascending"), ("user_id", "ascending")])
    log_before = store.materialized_windows(SPEC)
    assert len(DeltaTable(store.window_log_uri(SPEC)).file_uris()) == 24

    settings = replace(settings, feature_defs_dir=tmp_path / "defs")  # no retrieval specs
    defs = build_definitions(settings, Catalog([CatalogEntry(SPEC, Path("test"))]))
    job = defs.resolve_job_def(MAINTENANCE_JOB)
    assert [n.definition.pool for n in job.nodes] == ["feature_set_small"]  # serialized with writers
    assert defs.resolve_schedule_def(f"{MAINTENANCE_JOB}_schedule").cron_schedule == "30 3 * * *"
    with instance_for_test() as instance:
        result = job.execute_in_process(
            instance=instance, run_config={"ops": {"maintain_small_v1": {"config": {"retention_hours": 0}}}})
        assert result.success
        observations = [e.dagster_event.event_specific_data.asset_observation
                        for e in instance.all_logs(result.run_id, of_type=DagsterEventType.ASSET_OBSERVATION)]
    assert {o.asset_key for o in observations} == {AssetKey(["small_v1"])}
    metadata = {k: v.value for o in observations for k, v in o.metadata.items()}
    # 24 appends, and the mark row saying the log has read upkeep's own commits (they name no window).
    assert metadata["maintenance/window_log/files_before"] == 25 and metadata["maintenance/window_log/files_after"] == 1
    assert metadata["maintenance/table/files_after"] == 12 and metadata["maintenance/table/vacuumed_files"] == 12

    after = store.open(SPEC).read().sort_by([("window_key", "ascending"), ("user_id", "ascending")])
    assert after.equals(before) and store.materialized_windows(SPEC) == log_before
    assert len(DeltaTable(store.window_log_uri(SPEC)).file_uris()) == 1
    # Files replaced by the rewrites are gone from disk, only the live ones remain.
    on_disk = [p for p in Path(store.table_uri(SPEC)).rglob("*.parquet") if "_delta_log" not in p.parts]
    assert len(on_disk) == 12
