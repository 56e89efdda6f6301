"""The local point-in-time join engine: sort-based, vectorized with NumPy, no Python loops per row.

For each observation (keys, t) and feature set F it finds the F row with the same keys and the
greatest `ts` such that `t - temporal_join_lookback <= ts <= t - source_delay`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa


def entity_codes(observed: pd.DataFrame, stored: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes for entity keys (same columns in both frames), shared by both sides.

    Observed rows with a null key get -1, and so do stored rows whose key no observation has:
    neither can take part in a match.
    """
    both = pd.concat([observed, stored], ignore_index=True)
    codes = both.groupby(list(both.columns), sort=False, dropna=False).ngroup().to_numpy(dtype=np.int64)
    obs_codes, stored_codes = codes[: len(observed)], codes[len(observed) :]
    obs_codes = np.where(observed.isna().any(axis=1).to_numpy(), -1, obs_codes)
    seen = np.zeros(int(codes.max(initial=-1)) + 2, dtype=bool)
    seen[obs_codes[obs_codes >= 0]] = True
    stored_codes = np.where(seen[stored_codes], stored_codes, -1)
    return obs_codes, stored_codes


def asof_indices(
    obs_codes: np.ndarray,
    cutoff: np.ndarray,
    oldest: np.ndarray | None,
    row_codes: np.ndarray,
    row_ts: np.ndarray,
) -> np.ndarray:
    """For each observation, the index of the stored row with its code and the greatest
    `ts <= cutoff` (and `ts >= oldest`, when given), or -1.

    Times are int64 microseconds. One sort of observations and rows together by (entity, time,
    rows before observations) puts each observation right after the rows it may see; a running
    maximum of row positions then names the latest of them.
    """
    n = len(obs_codes)
    result = np.full(n, -1, dtype=np.int64)
    keep = row_codes >= 0
    row_index = np.flatnonzero(keep)
    if n == 0 or len(row_index) == 0:
        return result
    rows_c, rows_t = row_codes[keep], row_ts[keep]
    m = len(row_index)
    codes = np.concatenate([rows_c, obs_codes])
    # time * 2 + kind: at the same instant rows (0) sort before observations (1): `ts <= cutoff`.
    times = np.concatenate([rows_t * 2, cutoff * 2 + 1])
    order = np.lexsort((times, codes))
    is_row = order < m
    latest = np.maximum.accumulate(np.where(is_row, np.arange(len(order)), -1))
    obs_sorted = np.flatnonzero(~is_row)
    candidate = latest[obs_sorted]
    obs_ids = order[obs_sorted] - m
    row_ids = order[np.maximum(candidate, 0)]
    found = (candidate >= 0) & (obs_codes[obs_ids] >= 0)
    found &= rows_c[np.where(found, row_ids, 0)] == obs_codes[obs_ids]
    if oldest is not None:
        found &= rows_t[np.where(found, row_ids, 0)] >= oldest[obs_ids]
    result[obs_ids[found]] = row_index[row_ids[found]]
    return result


def take_features(table: pa.Table, features: list[str], indices: np.ndarray) -> dict[str, pa.ChunkedArray]:
    """The feature columns of `table` at `indices`, with nulls where the index is -1."""
    taker = pa.array(indices, mask=indices < 0, type=pa.int64())
    return {name: table.column(name).take(taker) for name in features}
