"""Materialization throughput: one window, a 30-window range in one run, and 30 single-window runs.

    .venv/bin/python benchmarks/materialize.py --scale 1000000

Prints rows/s (source rows read and feature rows written) and the ratio of one range run
to 30 single-window runs, all in one process on one Spark session. The figures measure
Spark and Delta; online publishing is a separate step (`online_publish.py`).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable
from pyspark.sql import SparkSession

from feature_pipelines.stores.offline.delta_files import read_delta
from feature_pipelines.spec.catalog import load_catalog
from feature_pipelines.compute.materialize import Stores, materialize_windows
from feature_pipelines.compute.spark_session import LOCAL_SPARK_NETWORK, SESSION_SETTINGS
from feature_pipelines.stores.offline.delta_store import DeltaOfflineStore
from feature_pipelines.cli.sample_data import SampleSize, generate_sample_data
from feature_pipelines.settings import resolve_path
from feature_pipelines.planning.windows import windows_between

PROJECT = Path(__file__).resolve().parents[1]


def source_rows(source_root: str, feature_set, first, last) -> int:
    """Source rows a run over windows first..last reads (its windows plus the lookback)."""
    table = DeltaTable(resolve_path(source_root, feature_set.source.path))
    column = read_delta(table, columns=[feature_set.source.timestamp]).column(0)
    low, high = first.start - feature_set.lookback, last.end
    return int(pc.sum(pc.and_(pc.greater_equal(column, pa.scalar(low)), pc.less(column, pa.scalar(high)))).as_py())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=1_000_000, help="transactions in the source")
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--end", type=date.fromisoformat, default=date(2024, 2, 29),
                        help="last day of the sample (fixed, so runs are comparable)")
    parser.add_argument("--feature-set", default="transactions")
    parser.add_argument("--windows", type=int, default=30)
    parser.add_argument("--workdir", default=None, help="keep data here (default: a temporary folder)")
    args = parser.parse_args()

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="fs-bench-"))
    sources = str(workdir / "sources")
    started = time.perf_counter()
    sample = SampleSize.for_scale(args.scale, end=args.end, days=args.days)
    counts = generate_sample_data(sources, sample)
    print(f"generated {counts} in {time.perf_counter() - started:.1f}s")

    builder = SparkSession.builder.master("local[2]").appName("bench").config("spark.driver.memory", "8g")
    builder = builder.config("spark.sql.shuffle.partitions", "8").config("spark.ui.enabled", "false")
    for key, value in {**SESSION_SETTINGS, **LOCAL_SPARK_NETWORK}.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")

    spec = load_catalog(PROJECT / "feature_defs").get(args.feature_set)
    # The last `windows` days, so every window has its full 30-day lookback of data.
    last_day = sample.end
    first_day = last_day - timedelta(days=args.windows - 1)
    windows = windows_between(spec, first_day.strftime("%Y-%m-%d"), last_day.strftime("%Y-%m-%d"))

    def stores(name: str) -> Stores:
        return Stores(sources, DeltaOfflineStore(str(workdir / name)), None)

    # Warm-up: JIT and Spark planning caches should not count against the first figure.
    materialize_windows(spark, spec, [windows[0].key], stores("warmup"))

    one = materialize_windows(spark, spec, [windows[-1].key], stores("one"))
    one_src = source_rows(sources, spec, windows[-1], windows[-1])

    ranged = materialize_windows(spark, spec, [w.key for w in windows], stores("range"))
    range_src = source_rows(sources, spec, windows[0], windows[-1])

    single_s, single_rows = 0.0, 0
    for window in windows:
        result = materialize_windows(spark, spec, [window.key], stores("singles"))
        single_s += result.duration_s
        single_rows += result.rows
    singles_src = sum(source_rows(sources, spec, w, w) for w in windows)

    assert single_rows == ranged.rows, (single_rows, ranged.rows)
    print(f"\nfeature set {spec.key}, source {counts['transactions']} transactions, windows {windows[0].key}..{windows[-1].key}")
    print(f"{'run':<28}{'seconds':>9}{'source rows':>13}{'src rows/s':>12}{'feature rows':>14}{'feat rows/s':>13}")
    for label, seconds, src, rows in [
        ("1 window", one.duration_s, one_src, one.rows),
        (f"{len(windows)} windows, one run", ranged.duration_s, range_src, ranged.rows),
        (f"{len(windows)} single-window runs", single_s, singles_src, single_rows),
    ]:
        print(f"{label:<28}{seconds:>9.2f}{src:>13,}{src / seconds:>12,.0f}{rows:>14,}{rows / seconds:>13,.0f}")
    print(f"\nrange run / {len(windows)} single runs: {ranged.duration_s / single_s:.3f} "
          f"(the range run takes {100 * ranged.duration_s / single_s:.1f}% of the time; "
          f"{single_s / ranged.duration_s:.1f}x faster)")
    print("range run phases: " + ", ".join(f"{k}={v:.2f}s" for k, v in ranged.timings.items()))
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
