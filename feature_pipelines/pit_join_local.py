"""The local point-in-time join engine: sort-based, vectorized with NumPy, no Python loops per row.

For each observation (keys, t) and feature set F it finds the F row with the same keys and the
greatest `ts` such that `t - temporal_join_lookback <= ts <= t - source_delay`.
"""

from __future__ import annotations

from datetime import timedelta

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
    obs_t: np.ndarray,
    row_codes: np.ndarray,
    row_ts: np.ndarray,
    delay: timedelta,
    lookback: timedelta | None,
) -> np.ndarray:
    """For each observation, the index of the matching stored row, or -1.

    Times are int64 microseconds since the epoch. One sort of observations and rows together
    by (entity, time, rows-before-observations) puts every observation right after the rows it
    may see; a running maximum of row positions then gives the latest one.
    """
    n = len(obs_codes)
    result = np.full(n, -1, dtype=np.int64)
    keep = row_codes >= 0
    row_index = np.flatnonzero(keep)
    if n == 0 or len(row_index) == 0:
        return result
    rows_c, rows_t = row_codes[keep], row_ts[keep]
    cutoff = obs_t - _micros(delay)
    m = len(row_index)
    codes = np.concatenate([rows_c, obs_codes])
    # time * 2 + kind: rows (0) sort before observations (1) at the same instant, because
    # `ts <= t - delay` is inclusive.
    times = np.concatenate([rows_t * 2, cutoff * 2 + 1])
    order = np.lexsort((times, codes))
    is_row = order < m
    positions = np.where(is_row, np.arange(len(order)), -1)
    latest = np.maximum.accumulate(positions)
    obs_sorted = np.flatnonzero(~is_row)
    candidate = latest[obs_sorted]
    found = candidate >= 0
    obs_ids = order[obs_sorted] - m
    row_ids = np.where(found, order[np.maximum(candidate, 0)], 0)
    found &= rows_c[row_ids] == obs_codes[obs_ids]
    found &= obs_codes[obs_ids] >= 0
    if lookback is not None:
        found &= rows_t[row_ids] >= obs_t[obs_ids] - _micros(lookback)
    result[obs_ids[found]] = row_index[row_ids[found]]
    return result


def take_features(table: pa.Table, features: list[str], indices: np.ndarray) -> dict[str, pa.ChunkedArray]:
    """The feature columns of `table` at `indices`, with nulls where the index is -1."""
    taker = pa.array(indices, mask=indices < 0, type=pa.int64())
    return {name: table.column(name).take(taker) for name in features}


def _micros(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
