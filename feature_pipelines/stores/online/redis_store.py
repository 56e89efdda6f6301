"""The online store: the latest feature values per entity, in Redis.

Each entity of a feature set version is one string key, `fs:<name>:v<version>:{<keys>}`,
whose value starts with a fixed-width `ts` in microseconds (layout: `codec.py`).
A Lua script compares the stored and new `ts` and writes only when the new one is greater
or equal, so "newer wins" holds atomically inside Redis however publishes interleave.

The entity part is a Redis Cluster hash tag: every feature set's value of one entity lives in
the same slot, so a lookup of one entity across feature sets touches one node. On a cluster,
writes run the script once per slot (pipelined per node) and reads use slot-split MGETs.

A streamed set also keeps each entity's rolling state (`stream_state.py`) at
`fsstate:<name>:v<version>:{<keys>}`, in the slot of its value; `write_stream` writes both in one
script call, the state only if its generation follows the stored one.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import redis

from feature_pipelines.errors import OnlineStoreError, inline
from feature_pipelines.stores.online.connection import connect, is_cluster, redacted
from feature_pipelines.faults import ONLINE_MID_PUBLISH, fault_point
from feature_pipelines.stores.online.codec import TS_WIDTH, DecodedValues, RowCodec, micros_to_datetime
from feature_pipelines.stores.online.stream_state import GENERATION_WIDTH, RollingState
from feature_pipelines.spec.feature_set import FeatureSet, Versioned

if TYPE_CHECKING:
    import pyarrow as pa  # publishing takes Arrow batches; reading (the feature server) needs no pyarrow

_KEY_SEPARATOR = "\x1f"
_CHUNK = 500

# The newer-wins rule, shared by both scripts: a value replaces the stored one if its ts is
# greater or equal. A value without valid_until (published from the offline store) that meets one
# with it (streamed) keeps a valid_until of max(that valid_until, its own ts): lookups after
# it evaluate the entity's rolling state again, so a publish never freezes streamed values.
_PUT = """
local W = %d
local function put(key, new)
  local current = redis.call('GET', key)
  local kept = current and string.sub(current, 1, W) > string.sub(new, 1, W)
  local winner, loser = new, current
  if kept then winner, loser = current, new end
  if loser and string.sub(winner, W + 1, W + 1) == '|' and string.sub(loser, W + 1, W + 1) == '+' then
    local ts, valid_until = string.sub(winner, 1, W), string.sub(loser, -W)
    if ts > valid_until then valid_until = ts end
    winner = ts .. '+' .. string.sub(winner, W + 2) .. valid_until
  end
  if winner ~= current then redis.call('SET', key, winner) end
  if kept then return 0 end
  return 1
end
""" % TS_WIDTH

# KEYS: values; ARGV: the new values. Returns how many were written.
_NEWER_WINS = _PUT + """
local written = 0
for i, key in ipairs(KEYS) do
  written = written + put(key, ARGV[i])
end
return written
"""

# KEYS: value, state, value, state, ...; ARGV: state, value, ... per entity ('' for none).
# Per entity: -1 when the state's generation does not follow the stored one (nothing written),
# else 1 or 0 as the value was written or not (a newer one kept, or none given); the state is
# written either way.
_WRITE_STREAM = _PUT + """
local results = {}
for i = 1, #KEYS, 2 do
  local state = ARGV[i]
  local result = 0
  if state ~= '' then
    local stored = redis.call('GET', KEYS[i + 1])
    local generation = 0
    if stored then generation = tonumber(string.sub(stored, 1, %d)) end
    if tonumber(string.sub(state, 1, %d)) ~= generation + 1 then result = -1 end
  end
  if result == 0 then
    if state ~= '' then redis.call('SET', KEYS[i + 1], state) end
    if ARGV[i + 1] ~= '' then result = put(KEYS[i], ARGV[i + 1]) end
  end
  results[#results + 1] = result
end
return results
""" % (GENERATION_WIDTH, GENERATION_WIDTH)


@dataclass(frozen=True)
class PublishResult:
    rows: int
    written: int
    repaired: tuple[str, ...] = ()  # windows published that the run did not ask for (see publish_windows)

    @property
    def kept_newer(self) -> int:
        """Rows not written because Redis already held a newer (or equal-time newer) value."""
        return self.rows - self.written


@dataclass(frozen=True)
class StreamWrite:
    """What `write_stream` did, per entity."""

    written: int  # values written (newer or equal ts)
    kept_newer: int  # states written, values not: Redis held a newer value, or none was given
    refused: tuple[int, ...]  # positions of entities whose state had moved on: read it again, merge, retry


@dataclass(frozen=True)
class OnlineValue:
    ts: datetime
    features: dict[str, Any]


def namespace(ref: Versioned) -> str:
    """The key prefix of a feature set version: its own online namespace."""
    return f"fs:{ref.name}:v{ref.version}:"


def state_namespace(ref: Versioned) -> str:
    """The key prefix of a version's rolling states (outside `namespace`: not values)."""
    return f"fsstate:{ref.name}:v{ref.version}:"


def published_key(ref: Versioned) -> str:
    """The set of window keys published for a version (outside its namespace: not a value)."""
    return f"fsmeta:{ref.name}:v{ref.version}:published-windows"


class RedisOnlineStore:
    """Publish and read the latest feature values of feature set versions."""

    def __init__(self, client: redis.Redis, url: str = ""):
        self._client = client
        self._url = url
        self._cluster = is_cluster(client)
        self._scripts = {} if self._cluster else {s: client.register_script(s) for s in (_NEWER_WINS, _WRITE_STREAM)}
        self._codecs: dict[str, RowCodec] = {}
        self._states: dict[str, RollingState] = {}

    @classmethod
    def from_url(cls, url: str, socket_timeout: float | None = None, retries: int | None = None) -> "RedisOnlineStore":
        """A store on a Redis server, Cluster or Sentinel master (URL forms and `retries`: `connection.connect`)."""
        return cls(connect(url, socket_timeout=socket_timeout, retries=retries), url)

    @property
    def client(self) -> redis.Redis:
        return self._client

    @property
    def url(self) -> str:
        return self._url

    @property
    def shown_url(self) -> str:
        """The URL as messages and logs show it: without its password."""
        return redacted(self._url)

    def key(self, feature_set: FeatureSet, entity: Sequence[Any]) -> str:
        return self.keys(feature_set, [entity])[0]

    def keys(self, feature_set: FeatureSet, entities: Sequence[Sequence[Any]]) -> list[str]:
        """The Redis keys of many entities (the hot path of online reads, hence no per-key calls)."""
        prefix = namespace(feature_set)
        if len(feature_set.entity_names) == 1:
            return [f"{prefix}{{{entity[0]}}}" for entity in entities]
        return [f"{prefix}{{{_KEY_SEPARATOR.join(map(str, entity))}}}" for entity in entities]

    def state_key(self, feature_set: FeatureSet, entity: Sequence[Any]) -> str:
        """The key of an entity's rolling state: the value's key in the state namespace (same slot)."""
        return self.state_keys(feature_set, [entity])[0]

    def state_keys(self, feature_set: FeatureSet, entities: Sequence[Sequence[Any]]) -> list[str]:
        cut, prefix = len(namespace(feature_set)), state_namespace(feature_set)
        return [prefix + key[cut:] for key in self.keys(feature_set, entities)]

    def rolling_state(self, feature_set: FeatureSet) -> RollingState:
        """The rolling-state kernel of a feature set with aggregates (built once per set)."""
        kernel = self._states.get(feature_set.key)
        if kernel is None:
            kernel = self._states[feature_set.key] = RollingState(feature_set)
        return kernel

    def read_states(self, feature_set: FeatureSet, entities: Sequence[Sequence[Any]]) -> list[bytes | None]:
        """The rolling state of each entity (None where none is stored), in one MGET."""
        if not entities:
            return []
        keys = self.state_keys(feature_set, entities)
        try:
            return list(self._client.mget_nonatomic(keys) if self._cluster else self._client.mget(keys))
        except redis.RedisError as exc:
            raise self._read_error(exc) from exc

    def write_stream(self, feature_set: FeatureSet, entities: Sequence[Sequence[Any]],
                     states: Sequence[bytes | None], values: Sequence[bytes | None]) -> StreamWrite:
        """Per entity, atomically: its state (None: none, a passthrough set), only if the state's
        generation is the stored one's plus one (`RollingState.merge` counts them), and then its
        value (None: none yet, all events are later) by the newer-wins rule. An entity whose state
        moved on meanwhile gets nothing written and is reported as refused."""
        keys = self.keys(feature_set, entities)
        items = [([key, state_key], [state or b"", value or b""])
                 for key, state_key, state, value in zip(keys, self.state_keys(feature_set, entities), states, values)]
        results = self._run(feature_set, _WRITE_STREAM, items)
        return StreamWrite(written=results.count(1), kept_newer=results.count(0),
                           refused=tuple(i for i, r in enumerate(results) if r < 0))

    def publish(self, feature_set: FeatureSet, batches: Iterable[pa.RecordBatch]) -> PublishResult:
        """Write each row (keys, ts, features) unless Redis holds a newer value for its entity."""
        keys_cols, ts_col = feature_set.entity_names, feature_set.timestamp
        codec = self.codec(feature_set)
        rows = written = 0
        keys: list[str] = []
        values: list[bytes] = []
        for batch in batches:
            for record in batch.to_pylist():
                keys.append(self.key(feature_set, [record[k] for k in keys_cols]))
                values.append(codec.encode(record[ts_col], record))
                if len(keys) >= _CHUNK:
                    written += self._write(feature_set, keys, values)
                    rows += len(keys)
                    keys, values = [], []
        if keys:
            written += self._write(feature_set, keys, values)
            rows += len(keys)
        return PublishResult(rows=rows, written=written)

    def published_windows(self, ref: Versioned) -> set[str]:
        """Windows recorded as published. Lost with the values if Redis loses its data, so a
        Redis that comes back empty gets every window again from the next publish."""
        try:
            members = self._client.smembers(published_key(ref))
        except redis.RedisError as exc:
            raise self._error(ref, exc) from exc
        return {m.decode() if isinstance(m, bytes) else m for m in members}

    def mark_published(self, ref: Versioned, window_keys: Sequence[str]) -> None:
        if not window_keys:
            return
        try:
            self._client.sadd(published_key(ref), *window_keys)
        except redis.RedisError as exc:
            raise self._error(ref, exc) from exc

    def _error(self, ref: Versioned, exc: Exception) -> OnlineStoreError:
        return OnlineStoreError(
            f"feature set {ref.key}: publishing to Redis {self.shown_url} failed: {inline(exc)}. "
            "The offline store is written; re-run the window to publish it once Redis is reachable."
        )

    def _read_error(self, exc: Exception) -> OnlineStoreError:
        return OnlineStoreError(f"reading Redis {self.shown_url} failed: {inline(exc)}. Check that Redis is up (REDIS_URL).")

    def codec(self, feature_set: FeatureSet) -> RowCodec:
        codec = self._codecs.get(feature_set.key)
        if codec is None:
            codec = self._codecs[feature_set.key] = RowCodec(feature_set)
        return codec

    def _write(self, feature_set: FeatureSet, keys: list[str], values: list[bytes]) -> int:
        fault_point(ONLINE_MID_PUBLISH)
        return sum(self._run(feature_set, _NEWER_WINS, [([k], [v]) for k, v in zip(keys, values)]))

    def _run(self, feature_set: FeatureSet, script: str, items: list[tuple[list[str], list[bytes]]]) -> list[int]:
        """Run `script` over items (each: keys of one slot and their arguments) in one call on a
        server; on a cluster, where a script may only touch keys of one slot, one call per slot,
        pipelined per node. Gives the results per item of a script returning one per item, else
        its counts (one per call)."""
        try:
            if not self._cluster:
                reply = self._scripts[script](keys=[k for keys, _ in items for k in keys],
                                              args=[a for _, args in items for a in args])
                return [int(r) for r in reply] if isinstance(reply, list) else [int(reply)]
            by_slot: dict[int, list[int]] = defaultdict(list)
            for i, (keys, _) in enumerate(items):
                by_slot[self._client.keyslot(keys[0])].append(i)
            pipeline = self._client.pipeline()
            for members in by_slot.values():
                keys = [k for i in members for k in items[i][0]]
                pipeline.execute_command("EVAL", script, len(keys), *keys, *(a for i in members for a in items[i][1]))
            replies = pipeline.execute()
            if not all(isinstance(reply, list) for reply in replies):
                return [int(reply) for reply in replies]
            results = [0] * len(items)
            for members, reply in zip(by_slot.values(), replies):
                for i, result in zip(members, reply):
                    results[i] = int(result)
            return results
        except redis.RedisError as exc:
            raise self._error(feature_set, exc) from exc

    def read(self, feature_set: FeatureSet, entities: Sequence[Sequence[Any]]) -> list[OnlineValue | None]:
        """The stored value of each entity, in order; None where nothing is stored."""
        decoded = self.read_many([(feature_set, entities)])[0]
        names = feature_set.feature_names
        columns = decoded.lists(names)
        return [
            None if ts < 0 else OnlineValue(micros_to_datetime(ts), {n: column[i] for n, column in zip(names, columns)})
            for i, ts in enumerate(decoded.ts_micros.tolist())
        ]

    def read_many(self, requests: Sequence[tuple[FeatureSet, Sequence[Sequence[Any]]]]) -> list[DecodedValues]:
        """Several feature sets' values in one round trip (one MGET per set, pipelined); on a
        cluster, one slot-split MGET per set."""
        if self._cluster:
            try:
                replies = [self._client.mget_nonatomic(self.keys(fs, entities)) if entities else []
                           for fs, entities in requests]
            except redis.RedisError as exc:
                raise self._read_error(exc) from exc
            return [self.codec(fs).decode_many(list(reply)) for (fs, _), reply in zip(requests, replies)]
        try:
            if len(requests) == 1:  # one set: a plain MGET, without a pipeline's bookkeeping
                feature_set, entities = requests[0]
                replies = [self._client.mget(self.keys(feature_set, entities)) if entities else []]
            else:
                pipeline = self._client.pipeline(transaction=False)
                for feature_set, entities in requests:
                    if entities:
                        pipeline.mget(self.keys(feature_set, entities))
                    else:
                        pipeline.echo("")  # keeps replies aligned with requests
                replies = pipeline.execute()
        except redis.RedisError as exc:
            raise self._read_error(exc) from exc
        return [
            self.codec(feature_set).decode_many(reply if entities else [])
            for (feature_set, entities), reply in zip(requests, replies)
        ]

    def count(self, ref: Versioned) -> int:
        """How many entities hold a value (scans the namespace: for tests and summaries)."""
        return sum(1 for _ in self._client.scan_iter(match=namespace(ref) + "*", count=1000))

    def delete_version(self, ref: Versioned) -> int:
        """Delete every value and rolling state of a feature set version; return how many keys were deleted."""
        deleted = 0
        batch: list[bytes] = []
        try:
            for prefix in (namespace(ref), state_namespace(ref)):
                for key in self._client.scan_iter(match=prefix + "*", count=1000):
                    batch.append(key)
                    if len(batch) >= 1000:
                        deleted += int(self._client.unlink(*batch))
                        batch = []
            if batch:
                deleted += int(self._client.unlink(*batch))
            self._client.unlink(published_key(ref))
        except redis.RedisError as exc:
            raise OnlineStoreError(f"deleting {ref.name} v{ref.version} from Redis {self.shown_url} failed after {deleted} keys: "
                                   f"{inline(exc)}. Re-run the command once Redis is reachable.") from exc
        return deleted
