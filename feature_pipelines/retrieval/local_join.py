"""The local point-in-time join engine: sort-based, vectorized with NumPy, no Python loops per row.

For each observation (keys, t) and feature set F it finds the F row with the same keys and the
greatest `ts` such that `t - temporal_join_lookback <= ts <= t - source_delay`.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def entity_codes(observed: list[pa.Array], stored: list[pa.Array]) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes for entity keys (one array per key column, same columns on both sides),
    shared by both sides.

    Observed rows with a null key get -1, and so do stored rows whose key no observation has:
    neither can take part in a match.
    """
    n = len(observed[0]) if observed else 0
    codes: np.ndarray | None = None
    null = np.zeros(n + (len(stored[0]) if stored else 0), dtype=bool)
    for obs_column, stored_column in zip(observed, stored):
        both = pa.concat_arrays([obs_column, stored_column.cast(obs_column.type)])
        encoded = pc.dictionary_encode(both)
        null |= np.asarray(encoded.is_null())
        column_codes = encoded.indices.fill_null(0).to_numpy().astype(np.int64)
        if codes is None:
            codes = column_codes
        else:
            # Pair up with the previous columns' codes, then renumber densely so it cannot overflow.
            paired = codes * len(encoded.dictionary) + column_codes
            codes = np.unique(paired, return_inverse=True)[1].astype(np.int64)
    assert codes is not None, "entity_codes needs at least one key column"
    codes = np.where(null, -1, codes)
    obs_codes, stored_codes = codes[:n], codes[n:]
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
    order = _order_by(codes, times)
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


def _order_by(codes: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Positions sorted by (code, time). One argsort of a packed int64 key when the code and time
    spans fit in 62 bits (the usual case, and faster than lexsort), else lexsort. Equal keys
    are interchangeable here (duplicate observations), so the sort need not be stable."""
    low = times.min()
    span = int(times.max()) - int(low)
    code_span = int(codes.max()) - int(codes.min()) + 1
    time_bits = max(span, 1).bit_length()
    if code_span.bit_length() + time_bits <= 62:
        key = ((codes - codes.min()) << time_bits) | (times - low)
        return np.argsort(key)
    return np.lexsort((times, codes))


def take_features(table: pa.Table, features: list[str], indices: np.ndarray) -> dict[str, pa.ChunkedArray]:
    """The feature columns of `table` at `indices`, with nulls where the index is -1."""
    taker = pa.array(indices, mask=indices < 0, type=pa.int64())
    return {name: table.column(name).take(taker) for name in features}
