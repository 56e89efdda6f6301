"""Request-time features on a retrieval result: the columns `RequestFeatures.apply` computes,
appended after the fetched features. Both join engines call it (the Spark engine on each
executor's batches too), so training and inference sets use the same evaluation as online lookups."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

from feature_pipelines.spec.dtypes import arrow_type
from feature_pipelines.spec.request_features import RequestFeatures


def append_request_features(frame: pd.DataFrame, request: RequestFeatures) -> pd.DataFrame:
    """`frame` (observation columns, request fields among them, and the fetched features) with the
    request features' columns appended, row for row; nulls as pandas holds them in feature columns."""
    if not request:
        return frame
    computed = request.apply({column: frame[column].tolist() for column in request.inputs})
    outputs = request.outputs
    # Positional arrays, not Series: the frame keeps its own index.
    return frame.assign(**{name: pa.array(values, arrow_type(outputs[name])).to_pandas().to_numpy()
                           for name, values in computed.items()})
