"""Declarative rolling aggregates equal a brute-force computation, exactly at window boundaries."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from feature_pipelines import Aggregate, FeatureSet
from feature_pipelines.compute.materialize import Stores, materialize_windows
from feature_pipelines.planning.windows import windows_between
from tests.factories import feature_set, source
from tests.helpers import offline_frame, write_source

pytestmark = pytest.mark.integration
UTC = timezone.utc
START = datetime(2024, 3, 1, tzinfo=UTC)
WINDOWS = {"6h": timedelta(hours=6), "1d": timedelta(days=1), "2d": timedelta(days=2)}


def spend_spec() -> FeatureSet:
    return feature_set(
        "spend",
        features={},
        source_=source(columns={"user_id": "string", "amount": "float64", "qty": "int64"}),
        aggregates=[
            Aggregate("sum", "amount", windows=["6h", "1d", "2d"]),
            Aggregate("count", None, windows=["1d", "2d"], name="n_{window}"),
            Aggregate("count", "amount", windows=["1d"], name="n_amount_{window}"),
            Aggregate("mean", "amount", windows=["1d"]),
            Aggregate("min", "qty", windows=["2d"]),
            Aggregate("max", "qty", windows=["2d"]),
            Aggregate("sum", "qty", windows=["1d"]),
        ],
        start="2024-03-01",
        source_lookback="2d",
    )


def random_events(seed: int) -> pd.DataFrame:
    """Events on whole minutes, with ties and events placed exactly on window and day boundaries."""
    rng = np.random.default_rng(seed)
    n = 400
    minutes = rng.integers(0, 6 * 24 * 60, n)
    times = [START + timedelta(minutes=int(m)) for m in minutes]
    # Exact boundaries: midnights, and pairs exactly one aggregation window apart.
    times[:8] = [START + timedelta(days=d) for d in range(1, 5)] * 2
    times[8:12] = [START + timedelta(days=1, hours=3), START + timedelta(days=2, hours=3),
                   START + timedelta(days=2, hours=9), START + timedelta(days=3, hours=3)]
    users = rng.choice(["u1", "u2", "u3", "u4", "u5"], n)
    users[:12] = "u1"
    amount = np.round(rng.uniform(1, 100, n), 2)
    amount[rng.random(n) < 0.05] = np.nan  # some events carry no amount
    return pd.DataFrame(
        {"user_id": users, "amount": amount, "qty": rng.integers(1, 9, n), "event_time": pd.to_datetime(times, utc=True)}
    )


def brute_force(events: pd.DataFrame, first: datetime, last_end: datetime) -> pd.DataFrame:
    """Straight from the definition: rows at every event and window-expiry instant in range."""
    rows = []
    spec = spend_spec()
    offsets = [timedelta(0), *WINDOWS.values()]
    for user, group in events.groupby("user_id"):
        instants = sorted({t + o for t in group["event_time"] for o in offsets if first <= t + o < last_end})
        for ts in instants:
            row = {"user_id": user, "ts": ts}
            for aggregate in spec.aggregates:
                for window in aggregate.windows:
                    inside = group[(group["event_time"] > ts - WINDOWS[window]) & (group["event_time"] <= ts)]
                    name = aggregate.feature_name(window)
                    values = inside[aggregate.column] if aggregate.column else None
                    if aggregate.function == "count":
                        row[name] = len(inside) if values is None else int(values.notna().sum())
                    elif aggregate.function == "sum":
                        row[name] = values.sum()
                    elif aggregate.function == "mean":
                        row[name] = values.mean() if values.notna().any() else np.nan
                    else:
                        row[name] = getattr(values, aggregate.function)() if len(values) else np.nan
            rows.append(row)
    return pd.DataFrame(rows).sort_values(["user_id", "ts"]).reset_index(drop=True)


@pytest.mark.parametrize("seed", [1, 2])
def test_rolling_aggregates_match_brute_force(spark, stores: Stores, seed: int) -> None:
    events = random_events(seed)
    write_source(stores.source_root, "events", events)
    spec = spend_spec()
    # Windows 2..5: the first two days of events are only reachable through the lookback.
    keys = [w.key for w in windows_between(spec, "2024-03-03", "2024-03-06")]
    materialize_windows(spark, spec, keys, stores)

    actual = offline_frame(stores.offline, spec).drop(columns=["window_key"])
    expected = brute_force(events, datetime(2024, 3, 3, tzinfo=UTC), datetime(2024, 3, 7, tzinfo=UTC))
    assert len(actual) == len(expected) > 300
    pd.testing.assert_frame_equal(
        actual[expected.columns].astype(expected.dtypes.to_dict()), expected, check_exact=False, rtol=1e-9
    )
    # Events exactly at midnight open their own window, and count in it.
    u1 = actual[(actual.user_id == "u1") & (actual.ts == pd.Timestamp("2024-03-04", tz="UTC"))]
    assert len(u1) == 1 and u1.iloc[0]["n_1d"] >= 2
