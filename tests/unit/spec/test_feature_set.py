"""The spec layer: validation errors name the problem and how to fix it (no Spark needed)."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import timedelta

import pytest

from feature_pipelines import Aggregate, Entity, Feature, FeatureSet, Materialization, Partitions, Quality, Source
from feature_pipelines.errors import SpecError
from tests.factories import feature_set, source

SOURCE = source(columns={"user_id": "string", "amount": "float64", "kind": "string"})
STREAMED = source(columns={"user_id": "string", "amount": "float64", "kind": "string", "event": "string"})
STREAMED = Source(**{**vars(STREAMED), "event_id": "event"})
SPEND = feature_set("spend", features={}, source_=SOURCE, aggregates=[Aggregate("sum", "amount", windows=["1d", "7d"])],
                    source_lookback="7d")


def make(**overrides) -> FeatureSet:
    """SPEND with `overrides`, validated again; its features are derived again unless given."""
    return replace(SPEND, **{"features": (), **overrides})


def test_aggregates_derive_typed_features() -> None:
    spec = make(aggregates=[Aggregate("sum", "amount", ["1d"]), Aggregate("count", None, ["7d"], name="n_{window}")])
    assert [(f.name, f.dtype) for f in spec.features] == [("amount_sum_1d", "float64"), ("n_7d", "int64")]
    assert spec.lookback == timedelta(days=7)
    assert spec.key == "spend_v1"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"aggregates": [Aggregate("sum", "amount_eur", ["1d"])]}, "unknown column 'amount_eur'"),
        ({"aggregates": [Aggregate("sum", "kind", ["1d"])]}, "needs a numeric column"),
        ({"source_lookback": "3d"}, "source_lookback 3d is shorter than the longest rolling window 7d; set "
                                    "source_lookback to at least '7d'."),
        ({"entities": [Entity("account")]}, "entity 'account' is not a column of source 'events'"),
        ({"entities": []}, "declare at least one entity"),
        ({"version": 0}, "version 0 must be a whole number >= 1"),
        ({"source_delay": "soon"}, "cannot read duration 'soon'"),
        ({"owners": ["risk team"]}, "owner 'risk team' must be an email address"),
        ({"name": "spend-v2"}, "'spend-v2' is not a valid name"),
        ({"timestamp": "window_key"}, "reserved by the offline store"),
        ({"temporal_join_lookback": "0"}, "temporal_join_lookback must be positive"),
        ({"temporal_join_lookback": "24h", "source_delay": "2d"},
         "feature set 'spend': temporal_join_lookback 24h is shorter than source_delay 2d, so no join or online "
         "lookup can ever use a value"),
        ({"transform": lambda df, w: df}, "either aggregates or transform"),
        ({"quality": Quality(freshness="1d")}, "quality.freshness 1d must be positive and shorter than one daily window"),
        ({"quality": Quality(freshness="30m")}, "quality.freshness 30m is not longer than materialization.delay 1h"),
        ({"quality": Quality(freshness="120m"), "materialization": Materialization(delay="180m")},
         "quality.freshness 120m is not longer than materialization.delay 180m"),
        ({"quality": Quality(freshness="90s")}, "quality.freshness 90s must be whole minutes"),
        ({"aggregates": (), "transform": lambda df, w: df, "features": [Feature("n", "int64", derived_from=["amout"])]},
         "feature 'n' is derived_from unknown column(s) ['amout']"),
        ({"materialization": Materialization(stream=True)},
         "feature set 'spend': materialization.stream=True needs the source 'events' to name its event id column "
         "(Source(event_id=...)), so a redelivered event is applied once."),
        ({"materialization": Materialization(stream=True, online=False), "source": STREAMED},
         "feature set 'spend': materialization.stream=True needs online=True: streamed values are written to the "
         "online store; set online=True, or drop stream=True."),
        ({"materialization": Materialization(stream=True), "source": STREAMED, "aggregates": (),
          "transform": lambda df, w: df, "features": [Feature("n", "int64")]},
         "feature set 'spend': a custom Spark transform cannot stream (it runs on whole windows in Spark); stream "
         "declarative aggregates or copied columns instead, or drop stream=True."),
        ({"materialization": Materialization(stream=True), "source": STREAMED, "source_delay": "90m"},
         "feature set 'spend': materialization.stream=True needs source_delay 0, not 90m: a streamed value is "
         "available as soon as it is applied; drop the delay, or drop stream=True."),
    ],
)
def test_invalid_specs_are_rejected_with_a_clear_message(overrides: dict, message: str) -> None:
    """The message names the problem with the user's own durations ('7d' stays '7d') and ends
    with exactly one period."""
    with pytest.raises(SpecError, match=re.escape(message)) as refused:
        make(**overrides)
    assert str(refused.value).endswith(".") and not str(refused.value).endswith("..")


def test_lookback_equal_to_delay_is_allowed() -> None:
    """The join takes `t - temporal_join_lookback <= ts <= t - source_delay`: equal bounds still
    match a value exactly source_delay old; only a shorter lookback can never match."""
    spec = make(temporal_join_lookback="2d", source_delay="48h")
    assert spec.ttl == spec.delay == timedelta(days=2)


def test_freshness_deadline_defaults_to_delay_plus_a_quarter_window() -> None:
    assert make().freshness_deadline == timedelta(hours=7)
    hourly = make(partitions=Partitions("hourly"), materialization=Materialization(delay="50m"))
    assert hourly.freshness_deadline == timedelta(minutes=59)  # capped below one window
    assert make(quality=Quality(freshness="3h")).freshness_deadline == timedelta(hours=3)


def test_column_lineage_is_known_for_aggregates_and_declared_for_transforms() -> None:
    spec = make(aggregates=[Aggregate("sum", "amount", ["1d"]), Aggregate("count", None, ["7d"], name="n_{window}")])
    assert spec.column_lineage() == {"user_id": ("user_id",), "ts": ("event_time",),
                                     "amount_sum_1d": ("amount",), "n_7d": ("event_time",)}
    custom = make(aggregates=(), transform=lambda df, w: df,
                  features=[Feature("share", "float64", derived_from=["kind", "amount"]), Feature("other", "int64")])
    assert custom.column_lineage() == {"user_id": ("user_id",), "share": ("kind", "amount")}


def test_duplicate_feature_name_is_rejected() -> None:
    with pytest.raises(SpecError, match="duplicate name 'amount'"):
        FeatureSet(
            name="raw",
            version=1,
            entities=[Entity("user_id")],
            source=SOURCE,
            features=[Feature("amount", "float64"), Feature("amount", "float64")],
        )


@pytest.mark.parametrize("window", ["7 days", "-1d", "0", "1y"])
def test_bad_aggregate_window_is_rejected(window: str) -> None:
    with pytest.raises(SpecError, match="window"):
        Aggregate("sum", "amount", windows=[window])


def test_unknown_type_and_cadence() -> None:
    with pytest.raises(SpecError, match="unknown type 'decimal'"):
        Feature("x", "decimal")
    with pytest.raises(SpecError, match="cadence 'weekly' is not supported"):
        Partitions("weekly")
    with pytest.raises(SpecError, match="not a date"):
        Partitions("daily", start="first of january")


def test_passthrough_feature_must_be_a_source_column() -> None:
    with pytest.raises(SpecError, match="feature 'score' is not a column of source 'events'"):
        feature_set("raw", features={"score": "float64"}, source_=SOURCE)


def test_naive_timestamp_declared_with_other_type_is_rejected() -> None:
    with pytest.raises(SpecError, match="declare it as 'timestamp'"):
        Source(name="s", path="s", timestamp="t", columns={"t": "string"})


def test_aggregates_and_copied_columns_may_stream() -> None:
    """Both kinds the stream processor computes event by event are accepted (with an event id and no delay)."""
    assert make(source=STREAMED, materialization=Materialization(stream=True)).materialization.stream
    copied = feature_set("raw", features={"amount": "float64"}, source_=STREAMED, materialization=Materialization(stream=True))
    assert copied.describe()["stream"] and not make().describe()["stream"]


@pytest.mark.parametrize(("event_id", "message"), [
    ("txn_id", "source 'events': event_id 'txn_id' is not one of its columns ['amount', 'event', 'event_time', 'kind', "
               "'user_id']; declare it in columns= or name another column."),
    ("amount", "source 'events': event_id 'amount' is 'float64'; an event id must be a string, int64 or int32 column."),
    ("event id", "source 'events' event_id column 'event id' is not a valid name"),
])
def test_bad_event_id_is_rejected(event_id: str, message: str) -> None:
    with pytest.raises(SpecError, match=re.escape(message)) as refused:
        Source(**{**vars(STREAMED), "event_id": event_id})
    assert str(refused.value).endswith(".") and not str(refused.value).endswith("..")
