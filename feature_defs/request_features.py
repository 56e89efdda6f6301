"""Request-time features: computed when a model asks, from the request's fields and the fetched features.

A retrieval spec lists those it uses under `request_features:`. Each runs row by row, the same
function for training sets, batch inference, `get_online_features` and the feature server.
"""

from feature_pipelines import request_feature


@request_feature(request={"amount": "float64"}, features=["amount_mean_30d"], output="float64")
def amount_to_mean_30d(amount: float | None, amount_mean_30d: float | None) -> float | None:
    """The transaction's amount relative to the account's mean transaction over the last 30 days."""
    if amount is None or not amount_mean_30d:
        return None  # no amount given, or no mean: the account is unknown or its value is past its lookback
    return amount / amount_mean_30d
