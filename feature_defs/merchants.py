"""Merchant activity per day, with a custom Spark transform.

A day's summary is only known once the day is over, so each row is stamped at the start
of its day and declared available one day later (`source_delay="1d"`): a training row at
time t never sees a day that had not finished by t.
"""

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from feature_pipelines import Entity, Feature, FeatureSet, Partitions, WindowContext

from feature_defs.transactions import transactions_source


def daily_merchant_activity(events: DataFrame, window: WindowContext) -> DataFrame:
    return (
        events.groupBy("merchant_id", F.date_trunc("day", "event_time").alias("ts"))
        .agg(
            F.count(F.lit(1)).alias("txn_count_1d"),
            F.sum("amount").alias("amount_sum_1d"),
            F.countDistinct("account_id").alias("distinct_accounts_1d"),
            F.avg(F.when(F.col("channel") == "online", 1.0).otherwise(0.0)).alias("online_share_1d"),
        )
        .where((F.col("ts") >= F.lit(window.start)) & (F.col("ts") < F.lit(window.end)))
    )


merchants = FeatureSet(
    name="merchants",
    version=1,
    description="Daily activity of each merchant: volume, distinct customers, online share.",
    entities=[Entity("merchant_id", "string", "Merchant")],
    source=transactions_source,
    transform=daily_merchant_activity,
    features=[
        # derived_from: the source columns behind each feature (column lineage in the UI).
        Feature("txn_count_1d", "int64", "Transactions on the day", derived_from=["transaction_id"]),
        Feature("amount_sum_1d", "float64", "Amount spent on the day, EUR", derived_from=["amount"]),
        Feature("distinct_accounts_1d", "int64", "Distinct paying accounts on the day", derived_from=["account_id"]),
        Feature("online_share_1d", "float64", "Share of online transactions", derived_from=["channel"]),
    ],
    partitions=Partitions("daily", start="2024-01-01"),
    source_delay="1d",
    temporal_join_lookback="7d",
    owners=["team:merchant-risk"],
    tags={"domain": "payments"},
)
