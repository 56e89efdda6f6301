"""Account-level spending: rolling sums, counts and means of card transactions."""

from feature_pipelines import Aggregate, Entity, Expectation, FeatureSet, Materialization, Partitions, Quality, Source

transactions_source = Source(
    name="transactions",
    path="transactions",
    timestamp="event_time",
    columns={
        "transaction_id": "string",
        "account_id": "string",
        "merchant_id": "string",
        "amount": "float64",
        "channel": "string",
        "event_time": "timestamp",
    },
    description="Card transactions, one row per authorization.",
    event_id="transaction_id",  # pushed and streamed events are applied once per id
)

transactions = FeatureSet(
    name="transactions",
    version=1,
    description="Spending per account over trailing 1, 7 and 30 days.",
    entities=[Entity("account_id", "string", "Bank account")],
    source=transactions_source,
    aggregates=[
        Aggregate("sum", "amount", windows=["1d", "7d", "30d"]),
        Aggregate("count", None, windows=["1d", "7d", "30d"], name="txn_count_{window}"),
        Aggregate("mean", "amount", windows=["7d", "30d"]),
        Aggregate("max", "amount", windows=["7d"]),
    ],
    partitions=Partitions("daily", start="2024-01-01"),
    source_lookback="30d",
    temporal_join_lookback="45d",
    # stream=True: pushed events reach the online values at once (README, "Real-time features").
    materialization=Materialization(offline=True, online=True, delay="1h", stream=True),
    # Blocking checks: a window breaking these is not published online.
    quality=Quality(expectations={
        "amount_sum_1d": Expectation(max_null_rate=0.0, min=0),
        "txn_count_30d": Expectation(max_null_rate=0.0, min=0),
    }),
    owners=["team:risk"],
    tags={"domain": "payments", "pii": "false"},
)
