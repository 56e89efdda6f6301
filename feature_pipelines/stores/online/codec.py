"""The byte layout of one online value, chosen for fast bulk decoding.

    <ts: 20 ASCII digits, microseconds since the epoch> "|" <null bitmap> <numbers> <JSON of the rest>

Numbers (ints and bools as int64, floats as float64) are fixed-width little-endian, so a whole
MGET reply decodes in one NumPy call. Strings, dates and timestamps follow as a JSON array. The
ts prefix is plain digits so the Lua script can compare it as a string.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any

import numpy as np

from feature_pipelines.errors import OnlineStoreError
from feature_pipelines.spec.feature_set import FeatureSet

TS_WIDTH = 20
_HEADER = TS_WIDTH + 1
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_INTEGER = {"int64", "int32", "bool"}
_FLOAT = {"float64", "float32"}


@dataclass
class DecodedValues:
    """Values of many entities of one feature set: ts in microseconds (-1 where nothing is stored)."""

    ts_micros: np.ndarray
    columns: dict[str, list]


class RowCodec:
    """Encodes and decodes the online values of one feature set version."""

    def __init__(self, feature_set: FeatureSet):
        self.numeric = [f for f in feature_set.features if f.dtype in _INTEGER | _FLOAT]
        self.other = [f for f in feature_set.features if f.dtype not in _INTEGER | _FLOAT]
        self._bools = {f.name for f in self.numeric if f.dtype == "bool"}
        self._null_bytes = (len(self.numeric) + 7) // 8
        codes = "".join("q" if f.dtype in _INTEGER else "d" for f in self.numeric)
        self._struct = struct.Struct("<" + codes)
        self._dtype = np.dtype(
            [("__nulls", "u1", (self._null_bytes,))]
            + [(f.name, "<i8" if f.dtype in _INTEGER else "<f8") for f in self.numeric]
        )

    def encode(self, ts: datetime, record: dict[str, Any]) -> bytes:
        if ts.tzinfo is None:
            raise OnlineStoreError(f"timestamp {ts!r} cannot be published: it must be UTC-aware.")
        delta = ts - _EPOCH
        micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
        if micros < 0:
            raise OnlineStoreError(f"timestamp {ts.isoformat()} cannot be published: it is before 1970.")
        nulls = 0
        numbers = []
        for i, feature in enumerate(self.numeric):
            value = record.get(feature.name)
            if value is None or (isinstance(value, float) and math.isnan(value)):
                nulls |= 1 << i
                numbers.append(0)
            else:
                numbers.append(int(value) if feature.dtype in _INTEGER else float(value))
        head = f"{micros:0{TS_WIDTH}d}|".encode() + nulls.to_bytes(self._null_bytes, "little")
        body = self._struct.pack(*numbers)
        if not self.other:
            return head + body
        rest = [_jsonable(record.get(f.name)) for f in self.other]
        return head + body + json.dumps(rest, separators=(",", ":")).encode()

    def decode_many(self, raw: list[bytes | None]) -> DecodedValues:
        present = [i for i, value in enumerate(raw) if value is not None]
        ts = np.full(len(raw), -1, dtype=np.int64)
        columns: dict[str, list] = {}
        if present:
            values = [raw[i] for i in present]
            ts[present] = [int(v[:TS_WIDTH]) for v in values]
        size = self._dtype.itemsize
        if self.numeric:
            if present:
                block = np.frombuffer(b"".join(v[_HEADER : _HEADER + size] for v in values), dtype=self._dtype)
                nulls = np.unpackbits(block["__nulls"], axis=1, bitorder="little", count=len(self.numeric)).astype(bool)
            everyone = len(present) == len(raw)
            any_missing = nulls.any(axis=0).tolist() if present else []
            for j, feature in enumerate(self.numeric):
                if not present:
                    columns[feature.name] = [None] * len(raw)
                    continue
                data = block[feature.name]
                if feature.name in self._bools:
                    data = data.astype(bool)
                missing = nulls[:, j]
                if everyone and not any_missing[j]:
                    columns[feature.name] = data.tolist()  # the common case: one C-level conversion
                    continue
                column: list = [None] * len(raw)
                for k, value in zip(np.flatnonzero(~missing).tolist(), data[~missing].tolist()):
                    column[present[k]] = value
                columns[feature.name] = column
        if self.other:
            rest = [[None] * len(self.other) for _ in raw]
            for i in present:
                rest[i] = json.loads(raw[i][_HEADER + size :])
            for j, feature in enumerate(self.other):
                columns[feature.name] = [row[j] for row in rest]
        return DecodedValues(ts, columns)


def micros_to_datetime(micros: int) -> datetime:
    return datetime.fromtimestamp(micros // 1_000_000, tz=timezone.utc).replace(microsecond=micros % 1_000_000)


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return value
