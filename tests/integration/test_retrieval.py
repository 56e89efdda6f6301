"""Retrieval end to end on materialized example feature sets: consistency, leakage, bad input."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import redis

from feature_pipelines.spec.catalog import load_catalog
from feature_pipelines.stores.offline.delta_files import read_delta
from feature_pipelines.errors import RetrievalError
from feature_pipelines.compute.materialize import Stores
from feature_pipelines.stores.publish import publish_windows
from feature_pipelines.stores.online.redis_store import RedisOnlineStore
from feature_pipelines.retrieval.feature_store import FeatureStore
from feature_pipelines.spec.retrieval_spec import RetrievalSpec
from feature_pipelines.settings import Settings
from feature_pipelines.planning.windows import windows_between
from tests.helpers import MATERIALIZED_AT, PROJECT_DIR

pytestmark = pytest.mark.integration
UTC = timezone.utc
CATALOG = load_catalog(PROJECT_DIR / "feature_defs")
SPEC = RetrievalSpec.of(
    ["transactions:1:amount_sum_7d", "transactions:1:txn_count_30d", "transactions:1:amount_max_7d",
     "accounts:1:*", "merchants:1:txn_count_1d", "merchants:1:online_share_1d"],
    name="fraud",
)


@pytest.fixture(scope="module")
def store(materialized_store: FeatureStore) -> FeatureStore:
    """The session's example sets, materialized through T (shared with the feature server's tests)."""
    return materialized_store


T = MATERIALIZED_AT  # the last instant of 2024-02-19: every row with ts <= T - source_delay is materialized


def test_online_equals_inference_at_T(store: FeatureStore) -> None:
    accounts = store.offline.open(CATALOG.get("accounts")).read().column("account_id").unique().to_pylist()
    merchants = store.offline.open(CATALOG.get("merchants")).read().column("merchant_id").unique().to_pylist()
    rng = np.random.default_rng(3)
    entities = pd.DataFrame({
        "account_id": accounts + ["a999999"] * 3,
        "merchant_id": list(rng.choice(merchants, len(accounts))) + ["m99999", merchants[0], merchants[1]],
    })
    offline = store.get_inference_features(entities, SPEC, as_of=T)
    online = store.get_online_features(SPEC, entities, now=T)
    pd.testing.assert_frame_equal(_objects(online), _objects(offline))
    # The cases that matter are all present: values, entities never seen, values past the lookback.
    assert offline["amount_sum_7d"].notna().sum() > 50
    assert offline.loc[offline.account_id == "a999999", "credit_limit"].isna().all()
    # Merchant rows are at most 7 days old to be used (temporal_join_lookback); sample data ends
    # 2024-02-09, so at T every merchant value is past its lookback, online and offline alike.
    assert offline["txn_count_1d"].isna().all()
    # ... but a week earlier they are there, in both.
    earlier = T - timedelta(days=9)
    assert store.get_inference_features(entities, SPEC, as_of=earlier)["txn_count_1d"].notna().sum() > 10


def _objects(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.reset_index(drop=True).astype(object)
    return out.where(pd.notna(out), None)


MERCHANTS = ["merchants:1:*"]  # source_delay 1d, temporal_join_lookback 7d


def _merchant_entities(store: FeatureStore) -> pd.DataFrame:
    ids = store.offline.open(CATALOG.get("merchants")).read().column("merchant_id").unique().to_pylist()
    return pd.DataFrame({"merchant_id": sorted(ids) + ["m99999"]})


@pytest.fixture()
def online_db2(redis_server) -> Iterator[RedisOnlineStore]:
    """An empty online store of its own (Redis database 2), for a moment other than T."""
    client = redis.Redis.from_url(redis_server.url.rsplit("/", 1)[0] + "/2")
    client.flushdb()
    yield RedisOnlineStore(client)
    client.close()


def test_online_equals_inference_for_a_delayed_set(store: FeatureStore, online_db2: RedisOnlineStore) -> None:
    """At T = 2024-02-06 00:00 production has published merchants through window 2024-02-05: its
    row (ts 2024-02-05 00:00) became available exactly at T (ts + source_delay == T, usable).
    Online at T equals the as-of join at T, with values, and both are that row."""
    merchants = CATALOG.get("merchants")
    publish_windows(merchants, [w.key for w in windows_between(merchants, "2024-01-01", "2024-02-05")],
                    store.offline, online_db2, repair=False)
    at = FeatureStore(CATALOG, store.offline, online_db2)
    entities = _merchant_entities(store)
    moment = datetime(2024, 2, 6, tzinfo=UTC)
    offline = at.get_inference_features(entities, MERCHANTS, as_of=moment)
    pd.testing.assert_frame_equal(_objects(at.get_online_features(MERCHANTS, entities, now=moment)), _objects(offline))
    rows = store.offline.open(merchants).read().to_pandas()
    day = rows[rows.ts == pd.Timestamp("2024-02-05", tz="UTC")].set_index("merchant_id")
    on_day = entities.merchant_id.isin(day.index).to_numpy()
    assert on_day.sum() > 10 and offline["amount_sum_1d"].notna().sum() > on_day.sum()
    np.testing.assert_array_equal(offline.loc[on_day, "amount_sum_1d"].to_numpy(dtype=float),
                                  day.loc[entities.merchant_id[on_day], "amount_sum_1d"].to_numpy())


def test_online_expiry_boundary_equals_the_join(store: FeatureStore) -> None:
    """A value whose age is exactly temporal_join_lookback is present, online and offline; one
    microsecond later it is missing in both."""
    merchants = CATALOG.get("merchants")
    entities = _merchant_entities(store)
    last = store.offline.open(merchants).read().to_pandas().groupby("merchant_id").ts.max()
    edge = (last.max() + pd.Timedelta(merchants.ttl)).to_pydatetime()  # the newest rows' age is exactly 7d
    newest = sorted(last[last == last.max()].index)
    for moment, present in ((edge, newest), (edge + timedelta(microseconds=1), [])):
        online = store.get_online_features(MERCHANTS, entities, now=moment)
        pd.testing.assert_frame_equal(_objects(online), _objects(store.get_inference_features(entities, MERCHANTS, as_of=moment)))
        assert sorted(online.merchant_id[online.txn_count_1d.notna()]) == present
    assert newest


def test_training_join_never_leaks_future_values(store: FeatureStore) -> None:
    """Observed one microsecond before a row's ts, the row is in the future and must not be used."""
    rows = store.offline.open(CATALOG.get("transactions")).read().to_pandas()
    rows["ts"] = rows["ts"].astype("datetime64[ns, UTC]")
    sample = rows.sample(300, random_state=1).reset_index(drop=True)
    before = sample[["account_id"]].assign(event_timestamp=sample["ts"] - pd.Timedelta(microseconds=1))
    at = sample[["account_id"]].assign(event_timestamp=sample["ts"])
    # The row each observation may use: the latest one strictly before the sampled row.
    previous = pd.merge_asof(
        before.reset_index().sort_values("event_timestamp"),
        rows.sort_values("ts")[["account_id", "ts", "amount_sum_30d"]],
        left_on="event_timestamp", right_on="ts", by="account_id", direction="backward",
    ).sort_values("index")["amount_sum_30d"].to_numpy()
    for engine in ("local", "spark"):
        got_at = store.get_offline_features(at, ["transactions:1:amount_sum_30d"], engine=engine)
        got_before = store.get_offline_features(before, ["transactions:1:amount_sum_30d"], engine=engine)
        np.testing.assert_array_equal(got_at["amount_sum_30d"].to_numpy(dtype=float), sample["amount_sum_30d"].to_numpy())
        np.testing.assert_array_equal(got_before["amount_sum_30d"].to_numpy(dtype=float), previous.astype(float))
        assert (got_before["amount_sum_30d"].to_numpy(dtype=float) != sample["amount_sum_30d"].to_numpy()).any()


def test_training_dataset_keeps_rows_order_and_columns(store: FeatureStore, tmp_path: Path) -> None:
    obs = pd.DataFrame({
        "account_id": ["a000003", "a000001", "a000003", "nobody", "a000001"],
        "event_timestamp": pd.to_datetime(["2024-02-01", "2024-01-15", "2024-02-01", "2024-01-20", "2024-01-02"], utc=True),
        "label": [1, 0, 1, 0, 1],
    }, index=[10, 11, 12, 13, 14])
    out = store.get_offline_features(obs, ["transactions:1:txn_count_7d", "accounts:1:segment"], full_names=True)
    assert list(out.columns) == ["account_id", "event_timestamp", "label", "transactions__txn_count_7d", "accounts__segment"]
    assert list(out.index) == [10, 11, 12, 13, 14] and out.loc[13].isna()[["transactions__txn_count_7d", "accounts__segment"]].all()
    assert out.loc[10].equals(out.loc[12])
    path = store.get_offline_features(obs, ["accounts:1:segment"], output=tmp_path / "train.parquet")
    assert pd.read_parquet(path)["segment"].tolist() == out["accounts__segment"].tolist()


def _stored_observations(store: FeatureStore, n: int = 400) -> pd.DataFrame:
    """Observations of real accounts at nanosecond-precision times (pandas writes them as ns), with
    amounts (the request field of amount_to_mean_30d; nulls too)."""
    accounts = store.offline.open(CATALOG.get("transactions")).read().column("account_id").unique().to_pylist()
    merchants = store.offline.open(CATALOG.get("merchants")).read().column("merchant_id").unique().to_pylist()
    rng = np.random.default_rng(7)
    start = pd.Timestamp("2024-01-01", tz="UTC").value
    nanos = start + rng.integers(0, 50 * 86_400 * 10**9, n)
    return pd.DataFrame({
        "account_id": rng.choice(accounts + ["nobody"], n),
        "merchant_id": rng.choice(merchants + ["nowhere"], n),
        "event_timestamp": pd.to_datetime(nanos, utc=True),
        "label": rng.integers(0, 2, n),
        "amount": np.where(rng.random(n) < 0.2, np.nan, np.round(rng.lognormal(3.2, 1.0, n), 2)),
    })


# With the example request feature: on stored observations the Spark executors compute it.
FRAUD_FULL = RetrievalSpec.of([*map(str, SPEC.features), "transactions:1:amount_mean_30d"], name="fraud_full",
                              full_names=True, request_features=["amount_to_mean_30d"])


def test_spark_engine_reads_stored_observations_in_order(store: FeatureStore, tmp_path: Path) -> None:
    """A Parquet folder of several files stays in Spark, keeps file-then-row order, and joins
    sub-microsecond observation times exactly like the local engine; the executors compute the
    request features like the local engine (returned, and written as Delta)."""
    obs = _stored_observations(store)
    folder = tmp_path / "obs"
    folder.mkdir()
    for i, part in enumerate(np.array_split(np.arange(len(obs)), 3)):
        obs.iloc[part].to_parquet(folder / f"part-{i}.parquet", index=False)  # nanosecond timestamps
    expected = store.get_offline_features(obs, FRAUD_FULL, engine="local", now=T)
    got = store.get_offline_features(folder, FRAUD_FULL, engine="spark", now=T)
    assert list(got.columns)[-1] == "amount_to_mean_30d"  # after the fetched features
    ratio = expected["amount_to_mean_30d"]
    assert ratio.notna().sum() > 100 and ratio.isna().sum() > 50  # values, and nulls (no amount, no mean)
    # Spark keeps timestamps in microseconds; the join itself used the full nanoseconds.
    expected["event_timestamp"] = expected["event_timestamp"].dt.floor("us")
    pd.testing.assert_frame_equal(got.reset_index(drop=True), expected.reset_index(drop=True), check_dtype=False)
    np.testing.assert_array_equal(got["amount_to_mean_30d"].to_numpy(float), ratio.to_numpy(float))  # bit for bit

    delta_obs = tmp_path / "obs_delta"
    from deltalake import write_deltalake
    write_deltalake(str(delta_obs), obs)
    written = store.get_offline_features(delta_obs, FRAUD_FULL, engine="spark", output=tmp_path / "out", output_format="delta", now=T)
    from deltalake import DeltaTable
    back = read_delta(DeltaTable(written)).to_pandas()
    assert len(back) == len(obs)
    # Delta files carry no order of their own beyond the file; compare as sets of rows.
    key = ["account_id", "merchant_id", "event_timestamp", "label"]
    pd.testing.assert_frame_equal(
        back.sort_values(key).reset_index(drop=True), expected.sort_values(key).reset_index(drop=True), check_dtype=False,
    )
    np.testing.assert_array_equal(back.sort_values(key)["amount_to_mean_30d"].to_numpy(float),
                                  expected.sort_values(key)["amount_to_mean_30d"].to_numpy(float))


def test_spark_engine_rejects_null_observation_times_before_writing(store: FeatureStore, tmp_path: Path) -> None:
    obs = _stored_observations(store, 20)
    obs.loc[[3, 7], "event_timestamp"] = pd.NaT
    path = tmp_path / "obs.parquet"
    obs.to_parquet(path, index=False)
    output = tmp_path / "out"
    with pytest.raises(RetrievalError, match="'event_timestamp' has 2 null timestamps"):
        store.get_offline_features(path, FRAUD_FULL, engine="spark", output=output, now=T)
    assert not output.exists()


@pytest.mark.parametrize(
    ("observations", "spec", "message"),
    [
        (pd.DataFrame({"account_id": ["a1"], "event_timestamp": pd.to_datetime(["2024-02-01"])}),
         ["accounts:1:segment"], "'event_timestamp' holds naive timestamps"),
        (pd.DataFrame({"customer": ["a1"], "event_timestamp": pd.to_datetime(["2024-02-01"], utc=True)}),
         ["accounts:1:segment"], r"lack entity key column\(s\) \['account_id'\] of feature set accounts_v1"),
        (pd.DataFrame({"account_id": ["a1"], "event_timestamp": pd.to_datetime(["2024-02-01"], utc=True)}),
         ["accounts:1:favourite_colour"], "accounts_v1 has no feature 'favourite_colour'"),
        (pd.DataFrame({"account_id": ["a1"], "event_timestamp": pd.to_datetime(["2024-02-01"], utc=True)}),
         ["accounts:2:segment"], "feature set 'accounts' has no version 2"),
        (pd.DataFrame({"account_id": ["a1"], "event_timestamp": pd.to_datetime(["2024-03-05"], utc=True)}),
         ["accounts:1:segment"], "accounts_v1 is missing 15 window\\(s\\) that these observations need: 2024-02-20..2024-03-05"),
        (pd.DataFrame({"account_id": ["a1"], "event_timestamp": pd.to_datetime(["2024-02-01"], utc=True)}),
         ["transactions:1:txn_count_1d", "merchants:1:txn_count_1d"], "set full_names: true"),
    ],
)
def test_bad_retrieval_input_is_rejected_and_nothing_written(store: FeatureStore, tmp_path: Path, observations, spec, message) -> None:
    output = tmp_path / "never.parquet"
    with pytest.raises(RetrievalError, match=message):
        store.get_offline_features(observations, spec, output=output, now=datetime(2024, 3, 10, tzinfo=UTC))
    assert not output.exists()


NAIVE_OBSERVATIONS = pd.DataFrame({"account_id": ["a000001"], "event_timestamp": pd.to_datetime(["2024-02-01 12:00"])})
LATER = datetime(2024, 3, 10, tzinfo=UTC)


@pytest.mark.parametrize("engine", ["local", "spark"])
@pytest.mark.parametrize("form", ["frame", "parquet", "delta"])
def test_naive_observation_times_are_rejected_and_nothing_written(store: FeatureStore, tmp_path: Path, form, engine) -> None:
    observations = NAIVE_OBSERVATIONS
    if form == "parquet":
        observations = tmp_path / "obs.parquet"
        NAIVE_OBSERVATIONS.to_parquet(observations, index=False)
    elif form == "delta":
        from deltalake import write_deltalake
        observations = tmp_path / "obs_delta"
        write_deltalake(str(observations), NAIVE_OBSERVATIONS)  # a timestamp_ntz column
    output = tmp_path / "never"
    with pytest.raises(RetrievalError, match=r"column 'event_timestamp' holds naive timestamps \(no time zone\); make them UTC-aware"):
        store.get_offline_features(observations, ["accounts:1:segment"], engine=engine, output=output, now=LATER)
    assert not output.exists()


ENTITY = NAIVE_OBSERVATIONS[["account_id"]]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda store, out: store.get_offline_features(
            NAIVE_OBSERVATIONS.assign(event_timestamp=T), ["accounts:1:segment"], output=out, now=datetime(2024, 3, 10)),
         "now 2024-03-10T00:00:00 is a naive datetime; give it a time zone"),
        (lambda store, out: store.get_inference_features(ENTITY, ["accounts:1:segment"], as_of=datetime(2024, 2, 1), output=out),
         "as_of 2024-02-01T00:00:00 is a naive datetime; give it a time zone"),
        (lambda store, out: store.get_inference_features(
            ENTITY, ["accounts:1:segment"], as_of=T, now=datetime(2024, 3, 10), output=out),
         "now 2024-03-10T00:00:00 is a naive datetime; give it a time zone"),
        (lambda store, out: store.get_online_features(["accounts:1:segment"], ENTITY, now=datetime(2024, 2, 1)),
         "now 2024-02-01T00:00:00 is a naive datetime; give it a time zone"),
    ],
    ids=["offline-now", "inference-as_of", "inference-now", "online-now"],
)
def test_naive_as_of_and_now_are_rejected(store: FeatureStore, tmp_path: Path, call, message) -> None:
    output = tmp_path / "never.parquet"
    with pytest.raises(RetrievalError, match=message):
        call(store, output)
    assert not output.exists()


def test_never_materialized_version_names_the_windows(spark, stores: Stores, sample_sources: str) -> None:
    obs = pd.DataFrame({"account_id": ["a1"], "event_timestamp": pd.to_datetime(["2024-01-03 12:00"], utc=True)})
    # Whether or not the store knows the sources: the source has data for these windows.
    for source_root in (None, sample_sources):
        store = FeatureStore(CATALOG, stores.offline, stores.online, spark=spark, source_root=source_root)
        with pytest.raises(RetrievalError, match="accounts_v1 was never materialized .*: 2024-01-01..2024-01-03"):
            store.get_offline_features(obs, ["accounts:1:segment"])


def test_windows_without_source_data_need_not_be_materialized(store: FeatureStore, sample_sources: str) -> None:
    """The sample's events end on 2024-02-09 and the windows are materialized through 2024-02-19:
    observations on 2024-03-05 draw on windows up to 2024-03-05, which only a store that knows the
    source can tell are empty. Its answer is the one at T, when no row has come since."""
    later = pd.DataFrame({"account_id": ["a000001", "a000002", "a000003"], "merchant_id": ["m00001", "m00002", "m00000"],
                          "event_timestamp": pd.to_datetime(["2024-03-05 10:00"] * 3, utc=True)})
    now = datetime(2024, 3, 10, tzinfo=UTC)
    with pytest.raises(RetrievalError, match=r"transactions_v1 is missing 15 window\(s\) .*: 2024-02-20..2024-03-05"):
        store.get_offline_features(later, SPEC, now=now, engine="local")
    knowing = FeatureStore(CATALOG, store.offline, store.online, source_root=sample_sources)
    got = knowing.get_offline_features(later, SPEC, now=now, engine="local")
    at_t = knowing.get_offline_features(later.assign(event_timestamp=T), SPEC, now=now, engine="local")
    assert got["amount_sum_7d"].notna().all() and got["segment"].notna().all()
    pd.testing.assert_frame_equal(got.drop(columns="event_timestamp"), at_t.drop(columns="event_timestamp"))


def _settings_for(store: FeatureStore, tmp_path: Path, redis_url: str) -> Settings:
    return Settings(
        feature_defs_dir=PROJECT_DIR / "feature_defs", data_dir=tmp_path / "data", source_root=str(tmp_path / "none"),
        offline_uri=store.offline.root, redis_url=redis_url, spark_master="local[2]",
    )


def test_training_dataset_job_records_a_versioned_materialization(store: FeatureStore, tmp_path: Path, redis_server) -> None:
    from dagster import AssetKey, instance_for_test

    from feature_pipelines.orchestration.code_location import build_definitions
    from feature_pipelines.orchestration.runs import run_job

    observations = tmp_path / "obs.parquet"
    pd.DataFrame({
        "account_id": ["a000001", "a000002", "nobody"],
        "merchant_id": ["m00001", "m00002", "m00003"],
        "event_timestamp": pd.to_datetime(["2024-01-20", "2024-02-05", "2024-02-05"], utc=True),
        "is_fraud": [True, False, False],
        "amount": [12.5, None, 3.0],  # fraud_model's request field
    }).to_parquet(observations)
    defs = build_definitions(_settings_for(store, tmp_path, redis_server.url))
    with instance_for_test() as instance:
        config = {"ops": {"datasets__fraud_model__training": {"config": {"observations": str(observations)}}}}
        by_asset, run_id = run_job(defs, instance, "training_dataset_fraud_model", config)
        metadata = by_asset["datasets/fraud_model/training"]
        assert instance.get_latest_materialization_event(AssetKey(["datasets", "fraud_model", "training"])).run_id == run_id
    assert metadata["dagster/row_count"] == 3
    assert metadata["match_rate/accounts_v1"] == pytest.approx(2 / 3, abs=1e-4)
    assert metadata["observation_time_range"].startswith("2024-01-20")
    assert "| transactions_v1 |" in metadata["feature_coverage"] and "a000001" in metadata["preview"]
    written = pd.read_parquet(metadata["output"])
    assert run_id in metadata["output"] and list(written["is_fraud"]) == [True, False, False]
    assert "accounts__segment" in written.columns  # the spec asks for full names
    assert written.columns[-1] == "amount_to_mean_30d" and written["amount_to_mean_30d"].notna().tolist() == [True, False,
                                                                                                           False]


def test_training_dataset_job_runs_from_dagster_cli(store: FeatureStore, tmp_path: Path, redis_server) -> None:
    import os
    import subprocess
    import sys

    observations = tmp_path / "obs.parquet"
    pd.DataFrame({"account_id": ["a000001"], "merchant_id": ["m00001"], "amount": [12.5],
                  "event_timestamp": pd.to_datetime(["2024-01-20"], utc=True)}).to_parquet(observations)
    (tmp_path / "run.yaml").write_text(
        "ops:\n  datasets__fraud_model__training:\n    config:\n"
        f"      observations: {observations}\n      output: {tmp_path / 'train.parquet'}\n"
    )
    home = tmp_path / "home"
    home.mkdir()
    env = dict(os.environ, DAGSTER_HOME=str(home), FEATURESTORE_OFFLINE_URI=store.offline.root,
               FEATURESTORE_DATA_DIR=str(tmp_path / "data"), REDIS_URL=redis_server.url)
    dagster = str(Path(sys.executable).parent / "dagster")
    run = subprocess.run(
        [dagster, "job", "execute", "-m", "feature_pipelines.definitions", "-j", "training_dataset_fraud_model",
         "-c", str(tmp_path / "run.yaml")],
        cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert pd.read_parquet(tmp_path / "train.parquet")["transactions__txn_count_7d"].notna().all()


def test_inference_dataset_job_equals_the_api(store: FeatureStore, tmp_path: Path, redis_server) -> None:
    from dagster import instance_for_test

    from feature_pipelines.orchestration.code_location import build_definitions
    from feature_pipelines.orchestration.runs import run_job

    entities = pd.DataFrame({"account_id": ["a000001", "a000005"], "merchant_id": ["m00001", "m00002"],
                             "amount": [12.5, None]})
    entities.to_parquet(tmp_path / "entities.parquet")
    defs = build_definitions(_settings_for(store, tmp_path, redis_server.url))
    config = {"entities": str(tmp_path / "entities.parquet"), "as_of": "2024-02-01T12:00:00+00:00"}
    with instance_for_test() as instance:
        by_asset, _ = run_job(defs, instance, "inference_dataset_fraud_model",
                              {"ops": {"datasets__fraud_model__inference": {"config": config}}})
    metadata = by_asset["datasets/fraud_model/inference"]
    expected = store.get_inference_features(entities, PROJECT_DIR / "feature_defs/retrieval_specs/fraud_model.yaml",
                                            as_of=datetime(2024, 2, 1, 12, tzinfo=UTC))
    pd.testing.assert_frame_equal(pd.read_parquet(metadata["output"]), expected, check_dtype=False)
    assert metadata["as_of"] == "2024-02-01T12:00:00+00:00"
