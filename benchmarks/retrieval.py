"""Retrieval performance: offline as-of joins (local and Spark engines) and online lookups.

    .venv/bin/python benchmarks/retrieval.py --spark              # everything, 1M and 5M observations
    .venv/bin/python benchmarks/retrieval.py --observations --spark --skew 0.8 --skip-online
                                                                  # Spark only, Zipf-skewed entities
    .venv/bin/python benchmarks/retrieval.py --observations        # online lookups only
    .venv/bin/python benchmarks/retrieval.py --observations --online-baseline DIR
                                    # online, beside an older checkout's feature_pipelines/ in DIR

Synthetic data: 3 feature sets x 10 float features, 100,000 entities, 90 daily windows,
written as real offline Delta tables: 1,000,000 rows per set for the local engine, 9,000,000
(one per entity per window) for the Spark comparison. References run in the same process on
the same data: pandas `merge_asof` done by hand, DuckDB `ASOF JOIN`, a naive Spark range join
+ row_number, and a bare redis-py MGET of the same keys (online, against a redis-server of its own).
"""

from __future__ import annotations

import argparse
import importlib
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import redis

from feature_pipelines import Entity, Feature, FeatureSet, Partitions, Source
from feature_pipelines.spec.catalog import Catalog, CatalogEntry
from feature_pipelines.stores.offline.delta_store import DeltaOfflineStore, offline_schema
from feature_pipelines.stores.online.redis_store import RedisOnlineStore
from feature_pipelines.retrieval.feature_store import FeatureStore
from feature_pipelines.planning.windows import windows_between

START = datetime(2024, 1, 1, tzinfo=timezone.utc)
DAYS = 90
ENTITIES = 100_000
NOW = START + timedelta(days=DAYS + 1)


def feature_set(name: str, features: int, ttl: str | None, delay: str) -> FeatureSet:
    columns = {"entity_id": "string", **{f"{name}_f{i}": "float64" for i in range(features)}}
    return FeatureSet(
        name=name, version=1, entities=[Entity("entity_id")],
        source=Source(name=name, path=name, timestamp="event_time", columns=columns),
        features=[Feature(f"{name}_f{i}", "float64") for i in range(features)],
        partitions=Partitions("daily", start="2024-01-01"), temporal_join_lookback=ttl, source_delay=delay,
    )


SETS = [feature_set("alpha", 10, "30d", "0"), feature_set("beta", 10, None, "1h"), feature_set("gamma", 10, "7d", "0")]
WIDE = feature_set("wide", 50, "30d", "0")


def entity_ids(rng: np.random.Generator, n: int, skew: float = 0.0) -> np.ndarray:
    """n entity ids out of ENTITIES: uniform, or Zipf-like with weight 1/rank**skew."""
    if skew:
        weights = 1.0 / np.arange(1, ENTITIES + 1) ** skew
        ids = rng.choice(ENTITIES, n, p=weights / weights.sum())
    else:
        ids = rng.integers(0, ENTITIES, n)
    return np.char.add("e", ids.astype(str))


def write_feature_rows(
    store: DeltaOfflineStore, fs: FeatureSet, rows: int, rng: np.random.Generator, skew: float = 0.0
) -> pa.Table:
    micros = np.int64(START.timestamp() * 1e6) + rng.integers(0, DAYS * 86_400, rows).astype(np.int64) * 1_000_000
    frame = pd.DataFrame({"entity_id": entity_ids(rng, rows, skew), "ts": pd.to_datetime(micros, unit="us", utc=True)})
    frame = frame.drop_duplicates(["entity_id", "ts"])
    for name in fs.feature_names:
        frame[name] = rng.random(len(frame))
    frame["window_key"] = frame["ts"].dt.strftime("%Y-%m-%d")
    frame["created"] = pd.Timestamp(NOW)
    table = pa.Table.from_pandas(frame, preserve_index=False).cast(offline_schema(fs))
    keys = [w.key for w in windows_between(fs, "2024-01-01", (START + timedelta(days=DAYS - 1)).strftime("%Y-%m-%d"))]
    store.open(fs).replace_windows(table.to_batches(max_chunksize=200_000), keys)
    return table


def observations(n: int, rng: np.random.Generator, skew: float = 0.0) -> pd.DataFrame:
    micros = np.int64(START.timestamp() * 1e6) + rng.integers(0, DAYS * 86_400_000_000, n)
    return pd.DataFrame({
        "entity_id": entity_ids(rng, n, skew),
        "event_timestamp": pd.to_datetime(micros, unit="us", utc=True),
        "label": rng.integers(0, 2, n),
    })


def timed(fn):
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def pandas_reference(store: DeltaOfflineStore, obs: pd.DataFrame) -> pd.DataFrame:
    """merge_asof by hand, one feature set at a time, with the delay and lookback applied."""
    out = obs.reset_index().rename(columns={"index": "__row"})
    for fs in SETS:
        rows = store.open(fs).read().select(["entity_id", "ts", *fs.feature_names]).to_pandas()
        rows["ts"] = rows["ts"].astype("datetime64[ns, UTC]")
        left = out.assign(__cut=out["event_timestamp"] - fs.delay).sort_values("__cut")
        merged = pd.merge_asof(left, rows.sort_values("ts"), left_on="__cut", right_on="ts", by="entity_id",
                               direction="backward")
        if fs.ttl is not None:
            stale = merged["ts"] < merged["event_timestamp"] - fs.ttl
            merged.loc[stale, fs.feature_names] = np.nan
        out = merged.drop(columns=["__cut", "ts"]).sort_values("__row")
    return out.drop(columns="__row").reset_index(drop=True)


def duckdb_reference(store: DeltaOfflineStore, obs: pd.DataFrame) -> pd.DataFrame:
    con = duckdb.connect()
    con.register("obs", pa.Table.from_pandas(obs.reset_index(drop=True).assign(__row=np.arange(len(obs)))))
    current = "obs"
    for i, fs in enumerate(SETS):
        con.register(f"f{i}", store.open(fs).read().select(["entity_id", "ts", *fs.feature_names]))
        delay = f"INTERVAL {int(fs.delay.total_seconds())} SECOND"
        keep = (f"f.ts >= o.event_timestamp - INTERVAL {int(fs.ttl.total_seconds())} SECOND" if fs.ttl else "TRUE")
        cols = ", ".join(f"CASE WHEN {keep} THEN f.{n} END AS {n}" for n in fs.feature_names)
        con.execute(f"""CREATE TEMP TABLE j{i} AS SELECT o.*, {cols} FROM {current} o
                        ASOF LEFT JOIN f{i} f ON o.entity_id = f.entity_id AND o.event_timestamp - {delay} >= f.ts""")
        current = f"j{i}"
    return con.execute(f"SELECT * EXCLUDE (__row) FROM {current} ORDER BY __row").df()


def naive_spark(spark, store: DeltaOfflineStore, result):
    """The plan to beat: range join every observation to all older rows of its entity, then row_number.

    `result` is the observations as a Spark DataFrame with a unique __row column."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    for fs in SETS:
        rows = spark.read.parquet(store.table_uri(fs)).select(
            F.col("entity_id").alias("__e"), F.col("ts").alias("__ts"), *fs.feature_names
        )
        cond = (F.col("entity_id") == F.col("__e")) & (
            F.col("__ts") <= F.col("event_timestamp") - F.expr(f"INTERVAL {int(fs.delay.total_seconds())} SECONDS")
        )
        if fs.ttl:
            cond = cond & (F.col("__ts") >= F.col("event_timestamp") - F.expr(f"INTERVAL {int(fs.ttl.total_seconds())} SECONDS"))
        rank = F.row_number().over(Window.partitionBy("__row").orderBy(F.col("__ts").desc_nulls_last()))
        result = result.join(rows, cond, "left").withColumn("__rank", rank).where("__rank = 1").drop("__rank", "__ts", "__e")
    return result


def start_redis(workdir: Path) -> tuple[subprocess.Popen, redis.Redis]:
    """A bare redis-server of our own on a free loopback port, no persistence (stopped by its pid)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--bind", "127.0.0.1", "--port", str(port),
                                "--save", "", "--appendonly", "no", "--dir", str(workdir)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(host="127.0.0.1", port=port)
    deadline = time.monotonic() + 15
    while True:
        try:
            client.ping()
            return process, client
        except redis.ConnectionError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise
            time.sleep(0.05)


def straightforward_decode(reply: list[bytes | None], moment_us: int, ttl_us: int) -> np.ndarray:
    """The reference decode of an MGET reply of WIDE, one struct.unpack per row: (rows, features)
    float64, NaN where a value is null, nothing is stored or the stored row has expired."""
    width = len(WIDE.features)
    nulls = (width + 7) // 8
    out = np.full((len(reply), width), np.nan)
    for row, value in enumerate(reply):
        if value is None or moment_us - int(value[:20]) > ttl_us:
            continue
        bits = int.from_bytes(value[21:21 + nulls], "little")
        numbers = struct.unpack(f"<{width}d", value[21 + nulls:21 + nulls + 8 * width])
        out[row] = [np.nan if bits >> j & 1 else v for j, v in enumerate(numbers)]
    return out


def baseline_api(checkout: Path, workdir: Path, client: redis.Redis):
    """`FeatureStore` of an older checkout's `feature_pipelines` (say `git archive <commit>
    feature_pipelines | tar -x -C <dir>`), imported beside ours as `feature_pipelines_baseline`
    (its imports renamed), reading the same Redis: before and after timed in one loop."""
    target = workdir / "baseline" / "feature_pipelines_baseline"
    shutil.copytree(checkout / "feature_pipelines", target, ignore=shutil.ignore_patterns("__pycache__"))
    for path in target.rglob("*.py"):
        path.write_text(re.sub(r"\bfeature_pipelines\b", "feature_pipelines_baseline", path.read_text()))
    sys.path.insert(0, str(target.parent))
    old = importlib.import_module("feature_pipelines_baseline")
    wide = old.FeatureSet(
        name=WIDE.name, version=WIDE.version, entities=[old.Entity("entity_id")],
        source=old.Source(name=WIDE.source.name, path=WIDE.source.path, timestamp=WIDE.source.timestamp,
                          columns=dict(WIDE.source.columns)),
        features=[old.Feature(f.name, f.dtype) for f in WIDE.features], partitions=old.Partitions("daily", start="2024-01-01"),
        temporal_join_lookback=WIDE.temporal_join_lookback)
    catalog = importlib.import_module("feature_pipelines_baseline.spec.catalog")
    stores = importlib.import_module("feature_pipelines_baseline.stores.offline.delta_store")
    online = importlib.import_module("feature_pipelines_baseline.stores.online.redis_store")
    return old.FeatureStore(catalog.Catalog([catalog.CatalogEntry(wide, Path("bench"))]),
                            stores.DeltaOfflineStore(str(workdir / "unused")), online.RedisOnlineStore(client, "redis://127.0.0.1"))


def online_benchmark(workdir: Path, rng: np.random.Generator, calls: int, runs: int, sizes: list[int],
                     baseline: Path | None = None) -> list[dict]:
    """get_online_features (DataFrame and as_frame=False) and a bare redis-py MGET of the same
    keys (and the baseline checkout's get_online_features, if given), interleaved call by call in
    a shuffled order; p50/p99 per run, after a warm-up of the same calls."""
    process, client = start_redis(workdir)
    try:
        online = RedisOnlineStore(client, "redis://127.0.0.1")
        ts = [NOW - (timedelta(days=40) if i % 50 == 0 else timedelta(hours=1)) for i in range(ENTITIES)]  # 2% expired
        values = {n: pa.array(np.where(rng.random(ENTITIES) < 0.01, np.nan, rng.random(ENTITIES)), from_pandas=True)
                  for n in WIDE.feature_names}  # 1% nulls
        batch = pa.table({"entity_id": [f"e{i}" for i in range(ENTITIES)],
                          "ts": pa.array(ts, pa.timestamp("us", tz="UTC")), **values})
        online.publish(WIDE, batch.to_batches(max_chunksize=10_000))
        api = FeatureStore(Catalog([CatalogEntry(WIDE, Path("bench"))]), DeltaOfflineStore(str(workdir / "unused")), online)
        spec = [f"wide:1:{n}" for n in WIDE.feature_names]
        moment_us, ttl_us = int(NOW.timestamp() * 1e6), int(WIDE.ttl.total_seconds() * 1e6)
        old = baseline_api(baseline, workdir, client) if baseline else None
        ways = ["frame", "lists", "mget"] + (["old frame", "old lists"] if old else [])
        results = []
        for size in sizes:
            for run in range(runs):
                times: dict[str, list[float]] = {way: [] for way in ways}
                warmup = 200
                for call in range(warmup + calls):
                    ids = [f"e{i}" for i in rng.integers(0, ENTITIES, size)]
                    rows = [{"entity_id": e} for e in ids]
                    keys = [f"fs:wide:v1:{{{e}}}" for e in ids]
                    out = {}
                    for way in rng.permutation(ways).tolist():
                        by = old if way.startswith("old") else api
                        started = time.perf_counter()
                        if way == "mget":
                            out[way] = client.mget(keys)
                        else:
                            out[way] = by.get_online_features(spec, rows, now=NOW, as_frame=way.endswith("frame"))
                        times[way].append(time.perf_counter() - started)
                    if old:
                        pd.testing.assert_frame_equal(out["frame"], out["old frame"], check_exact=True)
                        assert out["lists"] == out["old lists"]
                    expected = straightforward_decode(out["mget"], moment_us, ttl_us)
                    frame, lists = out["frame"], out["lists"]
                    assert frame["entity_id"].tolist() == lists["entity_id"] == ids
                    got_frame = frame[WIDE.feature_names].to_numpy(dtype=float)
                    got_lists = np.array([[np.nan if v is None else v for v in lists[n]] for n in WIDE.feature_names],
                                         dtype=float).T
                    for got in (got_frame, got_lists):
                        assert np.array_equal(got, expected, equal_nan=True), "values differ from the bare MGET's"
                ms = {way: np.array(t[warmup:]) * 1000 for way, t in times.items()}
                results.append({"entities": size, "run": run, "load": Path("/proc/loadavg").read_text().split()[0],
                                **{f"{way} p{q}": float(np.percentile(v, q)) for way, v in ms.items() for q in (50, 99)}})
        return results
    finally:
        client.close()
        process.terminate()
        process.wait(timeout=15)


def print_online(results: list[dict]) -> None:
    ways = [("frame", "DataFrame"), ("lists", "as_frame=False"), ("mget", "bare MGET")]
    if "old frame p50" in results[0]:
        ways += [("old frame", "old DataFrame"), ("old lists", "old as_frame=False")]
    print(f"{'entities':>9}{'run':>4}{'load':>6}" + "".join(f"{label + ' p50':>23}{'p99':>7}" for _, label in ways))
    for r in results:
        print(f"{r['entities']:>9}{r['run']:>4}{r['load']:>6}" + "".join(f"{r[w + ' p50']:>23.3f}{r[w + ' p99']:>7.3f}" for w, _ in ways))
    print("median of the runs:")
    for size in sorted({r["entities"] for r in results}):
        mine = [r for r in results if r["entities"] == size]
        print(f"{size:>9}{'':>10}" + "".join(
            f"{np.median([r[w + ' p50'] for r in mine]):>23.3f}{np.median([r[w + ' p99'] for r in mine]):>7.3f}" for w, _ in ways))


def fingerprint(frame, columns: list[str]) -> tuple[int, int, int]:
    """Every column of every row computed into an order-free fingerprint (rows, xor and sum of row
    hashes): the same sink for every plan, and a check of their results by value, not by count."""
    from pyspark.sql import functions as F

    h = F.xxhash64(*[F.col(c) for c in columns])
    row = frame.agg(F.count(F.lit(1)), F.bit_xor(h), F.sum(F.pmod(h, F.lit(2_147_483_647)))).first()
    return tuple(int(v or 0) for v in row)


def spark_benchmark(catalog: Catalog, spec: list[str], workdir: Path, args, rng: np.random.Generator) -> None:
    """Our Spark engine against the naive plan, both reading the observations from Parquet; each
    plan warmed up alike, timed `--spark-repeat` times (median), results compared by fingerprint
    over every row and column, and on a sample against the local engine."""
    import os
    import sys
    import threading

    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    from feature_pipelines.retrieval.observations import open_observation_files
    from feature_pipelines.retrieval.spans import feature_spans
    from feature_pipelines.retrieval.spark_engine import SparkJoin
    from feature_pipelines.retrieval.spark_observations import from_files

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    spark = (SparkSession.builder.master("local[2]").config("spark.driver.memory", "12g")
             .config("spark.sql.shuffle.partitions", "8").config("spark.ui.enabled", "false")
             .config("spark.ui.showConsoleProgress", "false")
             .config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
             .config("spark.sql.session.timeZone", "UTC").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    spark_store = DeltaOfflineStore(str(workdir / "offline_spark"))
    for fs in SETS:
        write_feature_rows(spark_store, fs, args.spark_rows_per_set, rng, args.skew)
    api = FeatureStore(catalog, spark_store, spark=spark)
    selections = api.resolve(spec)
    features = [n for fs in SETS for n in fs.feature_names]
    columns = ["entity_id", "event_timestamp", "label", *features]

    def write_observations(obs: pd.DataFrame, name: str) -> Path:
        path = workdir / f"{name}.parquet"
        obs.to_parquet(path, index=False, coerce_timestamps="us")
        return path

    def ours(path: Path):
        stored = open_observation_files(path)
        t = pd.read_parquet(path, columns=["event_timestamp"])["event_timestamp"]
        span = (t.min().to_pydatetime(), t.max().to_pydatetime())
        joined = SparkJoin(spark).asof_join(from_files(spark, stored, "event_timestamp"),
                                            feature_spans(spark_store, selections, span), broadcast_matches=True)
        return fingerprint(joined, columns)

    def naive(path: Path):
        return fingerprint(naive_spark(spark, spark_store, spark.read.parquet(str(path))
                                       .withColumn("__row", F.monotonically_increasing_id())), columns)

    def limited(run, limit: float):
        """(seconds, result), or (limit, None) when cancelled at the limit (the naive plan can run for hours)."""
        spark.sparkContext.setJobGroup("limited", "limited run", interruptOnCancel=True)
        timer = threading.Timer(limit, lambda: spark.sparkContext.cancelJobGroup("limited"))
        timer.start()
        try:
            return timed(run)
        except Exception:  # cancelled at the limit
            return float(limit), None
        finally:
            timer.cancel()
            spark.sparkContext.setJobGroup("bench", "bench")

    paths = {"ours (match on keys, then fetch values)": ours, "naive range join + row_number": naive}
    warm = write_observations(observations(1000, rng, args.skew), "warm-up")
    for run in paths.values():  # the same warm-up for every plan: one run on 1,000 observations
        run(warm)
    for n in args.spark_observations:
        obs = observations(n, rng, args.skew)
        path = write_observations(obs, f"obs-{n}")
        load = [Path("/proc/loadavg").read_text().split()[:3]]
        times: dict[str, list[float]] = {name: [] for name in paths}
        prints: dict[str, set] = {name: set() for name in paths}
        for repeat in range(args.spark_repeat):
            order = list(paths) if repeat % 2 == 0 else list(reversed(paths))
            for name in order:
                if name.startswith("naive") and repeat >= args.naive_repeat:
                    continue
                seconds, result = limited(lambda: paths[name](path), args.naive_limit)
                times[name].append(seconds)
                if result is not None:
                    prints[name].add(result)
                print(f"  [{n:,} obs, run {repeat + 1}] {name}: {seconds:.2f} s "
                      f"{'' if result is not None else '(cancelled at the limit)'}", flush=True)
        load.append(Path("/proc/loadavg").read_text().split()[:3])
        finished = {name: p for name, p in prints.items() if p}
        assert all(len(p) == 1 for p in finished.values()), f"a plan's result changed between runs: {finished}"
        assert len({next(iter(p)) for p in finished.values()}) == 1, f"results differ by value: {finished}"
        # Equal to the local engine (and the naive plan) on a sample, value by value.
        sample = obs.sample(2000, random_state=1)
        by_spark = api.get_offline_features(sample, spec, engine="spark", now=NOW)
        by_local = api.get_offline_features(sample, spec, engine="local", now=NOW)
        naive_sample = spark.createDataFrame(sample.assign(__row=np.arange(len(sample))))
        by_naive = naive_spark(spark, spark_store, naive_sample).orderBy("__row").toPandas()
        for other in (by_local, by_naive):
            assert np.array_equal(by_spark[features].to_numpy(dtype=float), other[features].to_numpy(dtype=float),
                                  equal_nan=True)
        print(f"\nSpark engine, {n:,} observations (Parquet) x {args.spark_rows_per_set:,} rows per feature set, "
              f"entity skew {args.skew}; every column of every row computed into a fingerprint, equal by value "
              f"across the plans ({len(finished)} finished); equal to the local engine on a 2,000-row sample. "
              f"/proc/loadavg before {' '.join(load[0])}, after {' '.join(load[1])}")
        naive_name = "naive range join + row_number"
        for name, seconds in times.items():
            median = float(np.median(seconds))
            done = name in finished
            ratio = float(np.median(times[naive_name])) / median
            runs = " / ".join(f"{s:.2f}" for s in seconds)
            print(f"  {name:<42}{'' if done else '> '}{median:8.2f} s  median of {len(seconds)} ({runs})"
                  + ("" if name == naive_name else f"   naive / this: {'' if naive_name in finished else '> '}{ratio:.1f}x"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--observations", type=int, nargs="*", default=[1_000_000, 5_000_000],
                        help="observation counts for the local engine comparison (none: skip it)")
    parser.add_argument("--rows-per-set", type=int, default=1_000_000)
    parser.add_argument("--spark", action="store_true", help="also time the Spark engine and the naive Spark plan")
    parser.add_argument("--spark-observations", type=int, nargs="+", default=[1_000_000, 5_000_000])
    parser.add_argument("--spark-repeat", type=int, default=3, help="timed runs of each Spark plan (median)")
    parser.add_argument("--naive-repeat", type=int, default=3, help="of which the naive plan runs this many")
    parser.add_argument("--skew", type=float, default=0.0,
                        help="Zipf exponent of entity popularity for the Spark comparison (0 = uniform)")
    parser.add_argument("--naive-limit", type=float, default=1200.0, help="seconds before the naive plan is cancelled")
    parser.add_argument("--spark-rows-per-set", type=int, default=ENTITIES * DAYS,
                        help="feature rows per set for the Spark comparison (default: one per entity per window)")
    parser.add_argument("--skip-online", action="store_true")
    parser.add_argument("--online-calls", type=int, default=2000, help="timed online calls per run and size")
    parser.add_argument("--online-runs", type=int, default=3)
    parser.add_argument("--online-sizes", type=int, nargs="+", default=[1, 100, 1000], help="entities per online call")
    parser.add_argument("--online-baseline", type=Path, help="a folder holding an older checkout's feature_pipelines/ "
                        "to time in the same loop (its frames are checked equal to ours)")
    args = parser.parse_args()

    rng = np.random.default_rng(42)
    workdir = Path(tempfile.mkdtemp(prefix="fs-retrieval-bench-"))
    store = DeltaOfflineStore(str(workdir / "offline"))
    catalog = Catalog([CatalogEntry(fs, Path("bench")) for fs in SETS])
    spec = [f"{fs.name}:1:*" for fs in SETS]
    if args.observations:  # the offline tables are for the local engine only
        for fs in SETS:
            write_feature_rows(store, fs, args.rows_per_set, rng)
        print(f"{len(SETS)} feature sets x 10 features, {args.rows_per_set:,} rows each, {ENTITIES:,} entities, {DAYS} windows")

    for n in args.observations:
        obs = observations(n, rng)
        api = FeatureStore(catalog, store)
        ours_s, ours = timed(lambda: api.get_offline_features(obs, spec, engine="local", now=NOW))
        pandas_s, by_pandas = timed(lambda: pandas_reference(store, obs))
        duck_s, by_duck = timed(lambda: duckdb_reference(store, obs))
        features = [n for fs in SETS for n in fs.feature_names]
        for name, other in (("pandas", by_pandas), ("duckdb", by_duck)):
            a, b = ours[features].to_numpy(dtype=float), other[features].to_numpy(dtype=float)
            assert np.array_equal(np.isnan(a), np.isnan(b)) and np.allclose(np.nan_to_num(a), np.nan_to_num(b)), name
        print(f"\n{n:,} observations (results identical across all three)")
        print(f"{'engine':<34}{'seconds':>9}{'obs rows/s':>14}{'vs DuckDB':>11}")
        for label, seconds in (("local engine (get_offline_features)", ours_s), ("pandas merge_asof by hand", pandas_s),
                               ("DuckDB ASOF JOIN (reference)", duck_s)):
            print(f"{label:<34}{seconds:>9.2f}{n / seconds:>14,.0f}{seconds / duck_s:>10.2f}x")

    if args.spark:
        spark_benchmark(catalog, spec, workdir, args, rng)

    if not args.skip_online:
        print(f"\nonline lookups, {WIDE.key}: 50 float features, {ENTITIES:,} entities in Redis (1% null values, "
              f"2% of entities expired), {args.online_calls} calls per run after 200 warm-up calls, ms; "
              "values checked equal to a straightforward decode of the MGET reply on every call"
              + (", and to the baseline's (frames equal, types included)" if args.online_baseline else ""))
        print_online(online_benchmark(workdir, rng, args.online_calls, args.online_runs, args.online_sizes,
                                      args.online_baseline))
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
