"""Readers during writes always see one committed Delta version, never a mix or a partial write:
while a write is held mid-way they see the version before it, and right after its commit they
see it. (Concurrent writers of one feature set are serialized by its Dagster pool: see the
overlapping backfills in test_backfill_daemon.py and the pool tests in test_writer_slot.py.)"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from feature_pipelines.faults import OFFLINE_MID_WRITE
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


def test_readers_see_whole_versions_while_windows_are_rewritten(
        settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = DeltaOfflineStore(settings.offline_uri)
    key, first = batch(0, 0.0)
    store.open(SPEC).replace_windows([first], [key])
    uri = store.table_uri(SPEC)
    committed = [content(read_delta(DeltaTable(uri)))]
    seen: list[list[tuple]] = [[], []]  # each reader's snapshots, in order
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader(snapshots: list[tuple]) -> None:
        try:
            while not stop.is_set():
                snapshots.append(content(store.open(SPEC).read()))
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread below
            errors.append(exc)

    def reads_from_now() -> list[tuple]:
        """Snapshots of reads that start after this call: one per reader, waited for."""
        marks = [len(snapshots) for snapshots in seen]
        deadline = time.monotonic() + 60
        while any(len(snapshots) < mark + 2 for snapshots, mark in zip(seen, marks)):
            assert not errors, errors
            assert time.monotonic() < deadline, "the readers stopped reading"
            time.sleep(0.01)
        return [snapshots[mark + 1] for snapshots, mark in zip(seen, marks)]

    threads = [threading.Thread(target=reader, args=(snapshots,)) for snapshots in seen]
    for thread in threads:
        thread.start()
    # Rewrite window 0 and add windows, each commit changing many rows at once. Each write is held
    # at its fault point (the writer holds a batch, nothing is committed) while both readers read.
    monkeypatch.setenv("FEATURESTORE_FAULT", OFFLINE_MID_WRITE)
    try:
        for step in range(1, 13):
            key, rows = batch(step % 4, float(step))
            marker = tmp_path / f"mid-write-{step}"
            monkeypatch.setenv("FEATURESTORE_FAULT_MARKER", str(marker))
            writer = threading.Thread(target=store.open(SPEC).replace_windows, args=([rows], [key]))
            writer.start()
            deadline = time.monotonic() + 60
            while not marker.exists():
                assert writer.is_alive() and time.monotonic() < deadline, "the write never reached its fault point"
                time.sleep(0.01)
            assert reads_from_now() == [committed[-1]] * 2, "a reader saw part of a write in progress"
            marker.unlink()
            writer.join(timeout=60)
            assert not writer.is_alive()
            committed.append(content(read_delta(DeltaTable(uri))))
            assert committed[-1] != committed[-2]
            assert reads_from_now() == [committed[-1]] * 2, "a reader did not see the version just committed"
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert not errors, errors
    latest = DeltaTable(uri).version()
    versions = {content(read_delta(DeltaTable(uri, version=v))) for v in range(latest + 1)}
    assert set(committed) <= versions and len(set(committed)) == 13
    assert all(snapshot in versions for snapshots in seen for snapshot in snapshots), \
        "a reader saw rows of no single committed version"
