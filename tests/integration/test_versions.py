"""Immutable versions: a materialized version's definition is pinned; a changed definition is
refused until it is declared as a new version, which lives side by side; `featurestore retire`
deletes an old version from both stores after confirmation."""

from __future__ import annotations

import textwrap
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from dagster import AssetKey, AssetMaterialization, DagsterInstance

from feature_pipelines import Aggregate
from feature_pipelines.cli.commands import main as featurestore
from feature_pipelines.errors import VersionConflictError
from feature_pipelines.spec.fingerprint import fingerprint
from feature_pipelines.compute.materialize import Stores, materialize_windows
from feature_pipelines.stores.publish import publish_windows
from feature_pipelines.settings import Settings
from tests.factories import feature_set, source
from tests.helpers import dagster_env, offline_frame, write_source

pytestmark = pytest.mark.integration

SPEND = feature_set("spend", features={}, source_=source(columns={"user_id": "string", "amount": "float64"}),
                    aggregates=[Aggregate("sum", "amount", windows=["1d", "2d"])], source_lookback="2d",
                    start="2024-03-01", description="Spend")
DAYS = ["2024-03-01", "2024-03-02", "2024-03-03"]


def events() -> pd.DataFrame:
    times = pd.date_range("2024-03-01 01:00", periods=72, freq="h", tz="UTC")
    return pd.DataFrame({"user_id": [f"u{i % 4}" for i in range(72)], "amount": [float(i) for i in range(72)],
                         "event_time": times})


def test_changed_definition_is_refused_and_a_new_version_lives_side_by_side(spark, stores: Stores) -> None:
    write_source(stores.source_root, "events", events())
    materialize_windows(spark, SPEND, DAYS, stores)
    table_version = stores.offline.open(SPEND).delta.version()
    before = stores.offline.open(SPEND).read().to_pandas()

    # Descriptions, owners and tags are not part of the definition.
    cosmetic = replace(SPEND, description="Spend per user", owners=("team:risk",), tags={"a": "b"})
    assert fingerprint(cosmetic) == fingerprint(SPEND)
    materialize_windows(spark, cosmetic, DAYS[:1], stores)

    changed = replace(SPEND, aggregates=(Aggregate("sum", "amount", windows=["1d", "3d"]),), features=(),
                      source_lookback="3d")
    with pytest.raises(VersionConflictError) as refused:
        materialize_windows(spark, changed, DAYS[:1], stores)
    message = str(refused.value)
    assert "feature set spend_v1 was materialized with another definition" in message
    assert "changed: aggregates, features, source_lookback" in message
    assert "declare the change as version 2" in message and "featurestore retire spend --version 1" in message
    # Reading it under the changed definition is refused too; the stored data is untouched.
    with pytest.raises(VersionConflictError):
        stores.offline.open(changed).read()
    assert stores.offline.open(SPEND).delta.version() == table_version + 1  # only the cosmetic re-run committed
    pd.testing.assert_frame_equal(offline_frame(stores.offline, SPEND), _sorted(before))

    # As version 2: its own table and online namespace; version 1 stays as it was.
    v2 = replace(changed, version=2)
    materialize_windows(spark, v2, DAYS, stores)
    publish_windows(SPEND, DAYS, stores.offline, stores.online)
    publish_windows(v2, DAYS, stores.offline, stores.online)
    assert stores.offline.table_uri(v2).endswith("spend/v2") and stores.offline.table_uri(SPEND).endswith("spend/v1")
    assert set(stores.offline.open(v2).read().column_names) >= {"amount_sum_3d"}
    assert "amount_sum_2d" in stores.offline.open(SPEND).read().column_names
    [old], [new] = stores.online.read(SPEND, [["u0"]]), stores.online.read(v2, [["u0"]])
    assert set(old.features) == {"amount_sum_1d", "amount_sum_2d"} and set(new.features) == {"amount_sum_1d", "amount_sum_3d"}


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns="created").sort_values(["user_id", "ts"]).reset_index(drop=True)


def test_retire_refuses_declared_versions_asks_and_deletes_both_stores(spark, stores: Stores, settings: Settings,
                                                                      tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    write_source(stores.source_root, "events", events())
    v2 = replace(SPEND, version=2)
    for spec in (SPEND, v2):
        materialize_windows(spark, spec, DAYS, stores)
        publish_windows(spec, DAYS, stores.offline, stores.online)
    # Their materializations in the Dagster instance: what the UI lists as assets, with or without a declaration.
    home = dagster_env(settings, tmp_path / "home")["DAGSTER_HOME"]
    monkeypatch.setenv("DAGSTER_HOME", home)
    keys = [AssetKey([f"spend_v{v}{suffix}"]) for v in (1, 2) for suffix in ("", "_online")]
    with DagsterInstance.get() as instance:
        for key in keys:
            instance.report_runless_asset_event(AssetMaterialization(key, partition=DAYS[0]))
    defs = tmp_path / "defs"
    defs.mkdir()
    declared = textwrap.dedent("""
        from feature_pipelines import Aggregate, Entity, FeatureSet, Partitions, Source
        SOURCE = Source(name="events", path="events", timestamp="event_time",
                        columns={"user_id": "string", "amount": "float64", "event_time": "timestamp"})
        def spend(version):
            return FeatureSet(name="spend", version=version, entities=[Entity("user_id")], source=SOURCE,
                              aggregates=[Aggregate("sum", "amount", windows=["1d", "2d"])], source_lookback="2d",
                              partitions=Partitions("daily", start="2024-03-01"))
        """)
    (defs / "spend.py").write_text(declared + "v1, v2 = spend(1), spend(2)\n")
    env = {"FEATURE_DEFS_DIR": str(defs), "FEATURESTORE_OFFLINE_URI": stores.offline.root,
           "FEATURESTORE_DATA_DIR": str(tmp_path / "data"), "REDIS_URL": stores.online.url, "DAGSTER_HOME": home}
    runner = CliRunner()

    refused = runner.invoke(featurestore, ["retire", "spend", "--version", "1"], env=env)
    assert refused.exit_code == 1 and "spend v1 is still declared in" in refused.output and "spend.py" in refused.output
    both = runner.invoke(featurestore, ["list"], env=env)
    assert both.exit_code == 0 and "stored, but declared in no file" not in both.output, both.output

    # The declaration removed (a new folder: this process has imported the first one).
    defs = tmp_path / "after" / "defs"
    defs.mkdir(parents=True)
    (defs / "spend.py").write_text(declared + "v2 = spend(2)\n")
    env["FEATURE_DEFS_DIR"] = str(defs)
    # `list` shows the version left behind, with the command that deletes it.
    rows = sum(int(w["rows"]) for w in stores.offline.materialized_windows(SPEND).values())
    listed = runner.invoke(featurestore, ["list"], env=env)
    assert listed.exit_code == 0, listed.output
    assert listed.output.splitlines()[-2:] == [
        f"stored, but declared in no file of {defs.resolve()}:",
        f"  spend_v1: 3 window(s), {rows} rows; delete it with `featurestore retire spend --version 1`"]
    declined = runner.invoke(featurestore, ["retire", "spend", "--version", "1"], env=env, input="n\n")
    assert declined.exit_code == 1 and "nothing deleted" in declined.output
    assert "(3 window(s), " in declined.output and "4 online value(s) (fs:spend:v1:*)" in declined.output
    assert "the Dagster asset history of spend_v1, spend_v1_online" in declined.output
    assert stores.online.count(SPEND) == 4 and stores.offline.exists(SPEND)

    done = runner.invoke(featurestore, ["retire", "spend", "--version", "1"], env=env, input="y\n")
    assert done.exit_code == 0, done.output
    assert ("retired spend v1: 4 online value(s), the asset history of spend_v1, spend_v1_online and the offline "
            "table deleted") in done.output
    assert not stores.offline.exists(SPEND) and stores.offline.materialized_windows(SPEND) == {}
    assert not Path(stores.offline.table_uri(SPEND)).exists() and stores.online.count(SPEND) == 0
    with DagsterInstance.get() as instance:
        assert set(keys) - set(instance.all_asset_keys()) == set(keys[:2])  # the UI no longer lists v1's assets
        assert instance.get_latest_materialization_event(keys[0]) is None
        # Version 2 is untouched.
        assert instance.get_latest_materialization_event(keys[2]) is not None
    assert stores.online.count(v2) == 4 and len(stores.offline.materialized_windows(v2)) == 3
    after = runner.invoke(featurestore, ["list"], env=env)
    assert after.exit_code == 0 and "stored, but declared in no file" not in after.output, after.output

    again = runner.invoke(featurestore, ["retire", "spend", "--version", "1", "--yes"], env=env)
    assert again.exit_code == 1 and "nothing is stored for spend v1" in again.output
    # Assets left in the instance with nothing stored (their data deleted by hand) are retired too.
    with DagsterInstance.get() as instance:
        instance.report_runless_asset_event(AssetMaterialization(keys[0], partition=DAYS[0]))
    ghost = runner.invoke(featurestore, ["retire", "spend", "--version", "1", "--yes"], env=env)
    assert ghost.exit_code == 0 and "the asset history of spend_v1 and" in ghost.output, ghost.output
    with DagsterInstance.get() as instance:
        assert keys[0] not in instance.all_asset_keys()
