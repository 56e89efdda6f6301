"""Account profile: precomputed attributes copied from the profile snapshots as they change."""

from feature_pipelines import Entity, Feature, FeatureSet, Partitions, Quality, Source

accounts = FeatureSet(
    name="accounts",
    version=1,
    description="Latest known profile of each account.",
    entities=[Entity("account_id", "string", "Bank account")],
    source=Source(
        name="accounts",
        path="accounts",
        timestamp="updated_at",
        columns={
            "account_id": "string",
            "updated_at": "timestamp",
            "credit_limit": "float64",
            "segment": "string",
            "country": "string",
            "is_premium": "bool",
        },
        description="Account profile snapshots, one row per change.",
    ),
    features=[
        Feature("credit_limit", "float64", "Credit limit in EUR"),
        Feature("segment", "string", "Customer segment"),
        Feature("country", "string", "Country of residence (ISO 3166)"),
        Feature("is_premium", "bool", "Premium customer flag"),
    ],
    partitions=Partitions("daily", start="2024-01-01"),
    # Profile changes arrive in bursts (a full snapshot on day one, a handful of updates later), so
    # a day's row count says little about its health: no row-count band.
    quality=Quality(row_count_band=None),
    owners=["team:crm"],
    tags={"domain": "customers"},
)
