"""The DataFrame of an online lookup, assembled from typed column blocks.

`pd.DataFrame(dict_of_lists)` infers a type for every column, then stacks columns of one type
into a block: for 100 entities x 50 features that took several times the Redis round trip. The
values come out of the decoder as typed 2-D arrays already (`DecodedValues.blocks`), so the frame
is made of those blocks directly, through pandas' pseudo-public block API
(`pandas.core.internals.api.make_block`, which pyarrow's `to_pandas` uses too; pandas 3 calls it
`pandas.api.internals.create_dataframe_from_blocks`). The frame equals
`pd.DataFrame(get_online_features(..., as_frame=False))` column for column, types included, except
that columns of an entity DataFrame keep their own types (tests/unit/retrieval/test_online_frame.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from pandas.api.extensions import ExtensionArray
from pandas.core.internals import api as blocks_api
from pandas.core.internals.managers import BlockManager

from feature_pipelines.spec.retrieval_spec import FeatureSelection
from feature_pipelines.stores.online.lookup import SetValues, ValueColumns

ArrayLike = np.ndarray | ExtensionArray


class OnlineFrameLayout:
    """Where each column of a lookup's frame goes: the entity rows' columns first, then each
    selection's columns, a later column of the same name replacing an earlier one in its place
    (as a dict update does). Built once per spec and entity columns."""

    def __init__(self, given: Sequence[str], selections: Sequence[FeatureSelection]):
        sources: dict[str, tuple[int, int]] = {name: (-1, i) for i, name in enumerate(given)}
        for s, selection in enumerate(selections):
            for f, column in enumerate(selection.columns):
                sources[column] = (s, f)
        self.columns = pd.Index(list(sources))
        position = {source: p for p, source in enumerate(sources.values())}
        self.given = [(name, position[(-1, i)]) for i, name in enumerate(given) if (-1, i) in position]
        # Per selection, the frame position of each of its columns; -1 where a later one replaced it.
        self.positions = [np.array([position.get((s, f), -1) for f in range(len(selection.columns))], dtype=np.intp)
                          for s, selection in enumerate(selections)]

    def frame(self, given: Mapping[str, ArrayLike], found: Sequence[SetValues], index: pd.Index) -> pd.DataFrame:
        """The frame of `given` (the entity rows' columns as `column_of`/`list_column` give them,
        aligned with `index`) and the values found."""
        made = [_column_block(given[name], position) for name, position in self.given]
        for positions, values in zip(self.positions, found):
            assert isinstance(values.columns, ValueColumns)  # what lookup returns
            for rows, block in values.columns.blocks():
                placement = positions[rows]
                if (placement < 0).any():
                    block, placement = block[placement >= 0], placement[placement >= 0]
                if len(placement):
                    made.append(blocks_api.make_block(block, placement=placement, ndim=2))
        manager = BlockManager(made, [self.columns, index])  # checks every column is placed once, at full length
        return pd.DataFrame._from_mgr(manager, manager.axes)


def column_of(series: pd.Series) -> ArrayLike:
    """A column of an entity DataFrame, its type kept; a copy, so the frame returned shares no
    memory with the caller's."""
    return series.to_numpy(copy=True) if isinstance(series.dtype, np.dtype) else series.array.copy()


def list_column(values: list) -> ArrayLike:
    """A column of entity rows given as dicts, typed as `pd.DataFrame` types a list; strings (the
    usual keys) directly, since pandas' inference costs more than the rest of a one-entity lookup."""
    if values and all(type(v) is str for v in values) and not pd.get_option("future.infer_string"):
        return np.array(values, dtype=object)
    return column_of(pd.Series(values))


def _column_block(array: ArrayLike, position: int):
    if isinstance(array, np.ndarray):
        return blocks_api.make_block(array.reshape(1, -1), placement=[position], ndim=2)
    return blocks_api.make_block(array, placement=[position], ndim=2)  # extension types: 1-D blocks
