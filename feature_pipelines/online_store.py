"""The online store: the latest feature values per entity, in Redis.

Each entity of a feature set version is one string key, `fs:<name>:v<version>:<keys>`,
whose value is a fixed-width `ts` in microseconds, a separator, and the features as JSON.
A Lua script compares the stored and new `ts` and writes only when the new one is greater
or equal, so "newer wins" holds atomically inside Redis however publishes interleave.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any

import pyarrow as pa
import redis

from feature_pipelines.errors import OnlineStoreError
from feature_pipelines.spec import FeatureSet

_TS_WIDTH = 20
_KEY_SEPARATOR = "\x1f"
_CHUNK = 500

_NEWER_WINS = """
local written = 0
for i, key in ipairs(KEYS) do
  local new = ARGV[i]
  local current = redis.call('GET', key)
  if (not current) or string.sub(current, 1, %d) <= string.sub(new, 1, %d) then
    redis.call('SET', key, new)
    written = written + 1
  end
end
return written
""" % (_TS_WIDTH, _TS_WIDTH)


@dataclass(frozen=True)
class PublishResult:
    rows: int
    written: int

    @property
    def kept_newer(self) -> int:
        """Rows not written because Redis already held a newer (or equal-time newer) value."""
        return self.rows - self.written


@dataclass(frozen=True)
class OnlineValue:
    ts: datetime
    features: dict[str, Any]


class RedisOnlineStore:
    """Publish and read the latest feature values of feature set versions."""

    def __init__(self, client: redis.Redis, url: str = ""):
        self._client = client
        self._url = url
        self._script = client.register_script(_NEWER_WINS)

    @property
    def client(self) -> redis.Redis:
        return self._client

    def key(self, feature_set: FeatureSet, entity: Sequence[Any]) -> str:
        return f"fs:{feature_set.name}:v{feature_set.version}:" + _KEY_SEPARATOR.join(str(v) for v in entity)

    def publish(self, feature_set: FeatureSet, batches: Iterable[pa.RecordBatch]) -> PublishResult:
        """Write each row (keys, ts, features) unless Redis holds a newer value for its entity."""
        keys_cols, ts_col, features = feature_set.entity_names, feature_set.timestamp, feature_set.feature_names
        rows = written = 0
        keys: list[str] = []
        values: list[str] = []
        for batch in batches:
            for record in batch.to_pylist():
                keys.append(self.key(feature_set, [record[k] for k in keys_cols]))
                values.append(_encode(record[ts_col], {f: record[f] for f in features}))
                if len(keys) >= _CHUNK:
                    written += self._write(feature_set, keys, values)
                    rows += len(keys)
                    keys, values = [], []
        if keys:
            written += self._write(feature_set, keys, values)
            rows += len(keys)
        return PublishResult(rows=rows, written=written)

    def _write(self, feature_set: FeatureSet, keys: list[str], values: list[str]) -> int:
        try:
            return int(self._script(keys=keys, args=values))
        except redis.RedisError as exc:
            raise OnlineStoreError(
                f"feature set {feature_set.key}: publishing to Redis {self._url or ''} failed: {exc}. "
                "The offline store is written; re-run the window to publish it once Redis is reachable."
            ) from exc

    def read(self, feature_set: FeatureSet, entities: Sequence[Sequence[Any]]) -> list[OnlineValue | None]:
        """The stored value of each entity, in order; None where nothing is stored."""
        try:
            raw = self._client.mget([self.key(feature_set, e) for e in entities]) if entities else []
        except redis.RedisError as exc:
            raise OnlineStoreError(f"feature set {feature_set.key}: reading Redis {self._url} failed: {exc}.") from exc
        return [None if value is None else _decode(value) for value in raw]

    def read_many(
        self, requests: Sequence[tuple[FeatureSet, Sequence[Sequence[Any]]]]
    ) -> list[list[OnlineValue | None]]:
        """Several feature sets' values in one round trip (one pipelined MGET per set)."""
        pipeline = self._client.pipeline(transaction=False)
        for feature_set, entities in requests:
            if entities:
                pipeline.mget([self.key(feature_set, e) for e in entities])
            else:
                pipeline.echo("")  # keeps replies aligned with requests
        try:
            replies = pipeline.execute()
        except redis.RedisError as exc:
            raise OnlineStoreError(f"reading Redis {self._url} failed: {exc}. Check that Redis is up (REDIS_URL).") from exc
        return [
            [None if value is None else _decode(value) for value in (reply if entities else [])]
            for (_, entities), reply in zip(requests, replies)
        ]

    def count(self, feature_set: FeatureSet) -> int:
        """How many entities hold a value (scans the namespace: for tests and summaries)."""
        pattern = f"fs:{feature_set.name}:v{feature_set.version}:*"
        return sum(1 for _ in self._client.scan_iter(match=pattern, count=1000))


def _encode(ts: datetime, features: dict[str, Any]) -> str:
    micros = int((ts - datetime(1970, 1, 1, tzinfo=timezone.utc)).total_seconds() * 1_000_000) if ts.tzinfo else None
    if micros is None or micros < 0:
        raise OnlineStoreError(f"timestamp {ts!r} cannot be published: it must be UTC-aware and after 1970.")
    return f"{micros:0{_TS_WIDTH}d}|" + json.dumps({k: _jsonable(v) for k, v in features.items()}, separators=(",", ":"))


def _decode(raw: bytes | str) -> OnlineValue:
    text = raw.decode() if isinstance(raw, bytes) else raw
    micros = int(text[:_TS_WIDTH])
    ts = datetime.fromtimestamp(micros // 1_000_000, tz=timezone.utc).replace(microsecond=micros % 1_000_000)
    return OnlineValue(ts=ts, features=json.loads(text[_TS_WIDTH + 1 :]))


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return value
