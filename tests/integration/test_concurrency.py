"""Readers during writes always see one committed Delta version, never a mix or a partial write.
(Concurrent writers of one feature set are serialized by its Dagster pool: see the overlapping
backfills in test_backfill_daemon.py.)"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pyarrow as pa
from deltalake import DeltaTable

from feature_pipelines.stores.offline.delta_files import read_delta
from feature_pipelines.stores.offline.delta_store import DeltaOfflineStore
from feature_pipelines.settings import Settings
from tests.factories import feature_set

SPEC = feature_set("busy")
USERS = [f"u{i}" for i in range(300)]


def batch(day: int, value: float) -> tuple[str, pa.RecordBatch]:
    start = datetime(2024, 1, 1, tzinfo=timezone.utc) + timedelta(days=day)
    key = start.strftime("%Y-%m-%d")
    return key, pa.record_batch({
        "user_id": USERS, "ts": pa.array([start] * len(USERS), pa.timestamp("us", tz="UTC")),
        "x": [value] * len(USERS), "window_key": [key] * len(USERS),
        "created": pa.array([start] * len(USERS), pa.timestamp("us", tz="UTC")),
    })


def content(table: pa.Table) -> tuple:
    """A version's content, independent of row order."""
    rows = table.select(["window_key", "user_id", "x"]).to_pylist()
    return tuple(sorted((r["window_key"], r["user_id"], r["x"]) for r in rows))


def test_readers_see_whole_versions_while_windows_are_rewritten(settings: Settings) -> None:
    store = DeltaOfflineStore(settings.offline_uri)
    key, first = batch(0, 0.0)
    store.open(SPEC).replace_windows([first], [key])
    seen: list[tuple] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        try:
            while not stop.is_set():
                seen.append(content(store.open(SPEC).read()))
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread below
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for thread in threads:
        thread.start()
    # Rewrite window 0 and add windows, each commit changing many rows at once.
    for step in range(1, 13):
        key, rows = batch(step % 4, float(step))
        store.open(SPEC).replace_windows([rows], [key])
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    uri = store.table_uri(SPEC)
    latest = DeltaTable(uri).version()
    versions = {content(read_delta(DeltaTable(uri, version=v))) for v in range(latest + 1)}
    assert len(seen) > 10
    assert all(snapshot in versions for snapshot in seen), "a reader saw rows of no single committed version"
