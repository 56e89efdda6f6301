"""Read times of a feature set version with many small windows, before and after Delta upkeep.

Writes N daily windows one run at a time (each window then rewritten once more, as late data
does), the way a daily schedule builds a table over years, then times what every command and
asset does: open the table, read its window log, read one window, read everything. Then runs
`maintain_feature_set` (the delta_maintenance job's work) and times the same reads again.

    .venv/bin/python benchmarks/maintenance.py [--windows 1000] [--rows 20]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
from deltalake import DeltaTable

from feature_pipelines import Entity, Feature, FeatureSet, Partitions, Source
from feature_pipelines.stores.offline.upkeep import maintain_feature_set
from feature_pipelines.stores.offline.delta_store import DeltaOfflineStore

SPEC = FeatureSet(
    name="bench", version=1, entities=[Entity("user_id")],
    source=Source(name="events", path="events", timestamp="event_time",
                  columns={"user_id": "string", "x": "float64", "event_time": "timestamp"}),
    features=[Feature("x", "float64")], partitions=Partitions("daily", start="2021-01-01"),
)


def window(day: int, rows: int, rng: np.random.Generator) -> tuple[str, pa.RecordBatch]:
    start = datetime(2021, 1, 1, tzinfo=timezone.utc) + timedelta(days=day)
    key = start.strftime("%Y-%m-%d")
    batch = pa.record_batch({
        "user_id": [f"u{i}" for i in range(rows)],
        "ts": pa.array([start + timedelta(minutes=i) for i in range(rows)], pa.timestamp("us", tz="UTC")),
        "x": rng.random(rows),
        "window_key": [key] * rows,
        "created": pa.array([start] * rows, pa.timestamp("us", tz="UTC")),
    })
    return key, batch


def timed(fn, repeats: int = 5) -> float:
    runs = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - started)
    return statistics.median(runs)


def measure(store: DeltaOfflineStore, last_key: str) -> dict[str, float]:
    uri = store.table_uri(SPEC)
    return {
        "open table": timed(lambda: DeltaTable(uri)),
        "window log": timed(lambda: store.materialized_windows(SPEC)),
        "one window": timed(lambda: store.open(SPEC).read([last_key])),
        "all rows": timed(lambda: store.open(SPEC).read()),
    }


def files(path: str) -> tuple[int, int]:
    table = DeltaTable(path)
    return len(table.file_uris()), table.version()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--windows", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=20, help="rows per window")
    parser.add_argument("--checkpoints", type=int, nargs="*", default=[100, 250, 500])
    args = parser.parse_args()
    rng = np.random.default_rng(7)
    root = tempfile.mkdtemp(prefix="maintenance-bench-")
    store = DeltaOfflineStore(root)
    print(f"{args.windows} daily windows x {args.rows} rows, each written by its own run and rewritten once; {root}")
    started = time.perf_counter()
    marks: dict[int, dict[str, float]] = {}
    for day in range(args.windows):
        key, batch = window(day, args.rows, rng)
        for _ in range(2):  # the scheduled run, then a re-run for late data
            store.open(SPEC).replace_windows([batch], [key], rows_per_window={key: args.rows})
        if day + 1 in args.checkpoints:
            marks[day + 1] = measure(store, key)
    print(f"written in {time.perf_counter() - started:.1f}s")
    before = measure(store, key)
    data_files, data_version = files(store.table_uri(SPEC))
    log_files, log_version = files(store.window_log_uri(SPEC))
    started = time.perf_counter()
    upkeep = maintain_feature_set(SPEC, store, retention_hours=0)
    maintenance_s = time.perf_counter() - started
    after = measure(store, key)
    print(f"before upkeep: table {data_files} files (version {data_version}), window log {log_files} files "
          f"(version {log_version})")
    for done in upkeep:
        print(f"upkeep {done.uri.rsplit('/', 3)[-3:]}: {done.files_before} -> {done.files_after} files, "
              f"{done.vacuumed_files} vacuumed")
    print(f"maintenance took {maintenance_s:.1f}s")
    header = "".join(f"{f'{n} windows':>14}" for n in marks) + f"{f'{args.windows} before':>16}{f'{args.windows} after':>15}{'after/before':>14}"
    print(f"{'read (median of 5)':<20}{header}")
    for name in before:
        cells = "".join(f"{marks[n][name] * 1000:>12.1f}ms" for n in marks)
        print(f"{name:<20}{cells}{before[name] * 1000:>14.1f}ms{after[name] * 1000:>13.1f}ms"
              f"{after[name] / before[name]:>13.2f}x")


if __name__ == "__main__":
    main()
