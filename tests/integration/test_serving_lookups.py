"""The server's batched lookups: concurrent requests share one Redis round trip, and each gets
exactly what its own `lookup` at the batch's instant returns (values, ts, expiry, missing entities)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pytest
import redis

from feature_pipelines.errors import OnlineStoreError
from feature_pipelines.serving.lookups import BatchedLookups
from feature_pipelines.serving.specs import Served
from feature_pipelines.spec.retrieval_spec import FeatureSelection
from feature_pipelines.stores.online.lookup import lookup
from feature_pipelines.stores.online.redis_store import RedisOnlineStore
from tests.factories import feature_set, source

pytestmark = pytest.mark.integration
UTC = timezone.utc
T0 = datetime(2024, 1, 1, 12, tzinfo=UTC)
USERS = feature_set("users", keys={"k": "string"}, features={"v": "float64", "label": "string"},
                    source_=source("s", {"k": "string", "v": "float64", "label": "string"}, timestamp="t"),
                    temporal_join_lookback="1d")
SERVED = Served.of("users_model", [FeatureSelection(USERS, ("v", "label"), ("v", "label"))])
# Present at T0 + 1h: a, c (c with a null); expired there: b (older than the 1d lookback); never stored: zzz.
ROWS = {"k": ["a", "b", "c"], "ts": [T0, T0 - timedelta(days=2), T0 - timedelta(hours=3)], "v": [1.5, 2.5, None],
        "label": ["x", "y", "z"]}
REQUESTS = [["a"], ["zzz", "b", "a"], [], ["c", "c"], ["b"]]


def _view(found: list) -> list:
    """What a response is made of: per feature set its statuses, ts and value columns."""
    return [(values.statuses(), values.ts_micros.tolist(), {name: list(column) for name, column in values.columns.items()})
            for values in found]


def _mgets(client: redis.Redis) -> int:
    return client.info("commandstats").get("cmdstat_mget", {}).get("calls", 0)


@pytest.fixture()
def published(online_store: RedisOnlineStore) -> RedisOnlineStore:
    batch = pa.RecordBatch.from_pydict({**ROWS, "ts": pa.array(ROWS["ts"], pa.timestamp("us", tz="UTC"))})
    assert online_store.publish(USERS, [batch]).written == 3
    return online_store


def test_concurrent_requests_share_one_round_trip_and_each_gets_its_own_values(published: RedisOnlineStore) -> None:
    at = T0 + timedelta(hours=1)
    batched = BatchedLookups(published, max_entities=1000)

    async def serve() -> list:
        # Requests at the same instant form one batch; another instant, and "now", batches of their own.
        calls = [batched.lookup(SERVED, {"k": keys}, len(keys), at) for keys in REQUESTS]
        calls += [batched.lookup(SERVED, {"k": ["a"]}, 1, at + timedelta(days=1)),
                  batched.lookup(SERVED, {"k": ["a", "b"]}, 2, None)]
        return await asyncio.gather(*calls)

    before = _mgets(published.client)
    answers = asyncio.run(serve())
    assert _mgets(published.client) - before == 3
    for keys, (found, instant) in zip(REQUESTS, answers):
        assert instant == at
        assert _view(found) == _view(lookup(published, SERVED.selections, {"k": keys}, at))
    assert _view(answers[0][0])[0][0] == ["present"] and _view(answers[1][0])[0][0] == ["not_found", "expired", "present"]
    later, (found, instant) = answers[-2], answers[-1]
    assert _view(later[0])[0][0] == ["expired"]  # a day later, a's value has expired too
    assert instant > at and _view(found) == _view(lookup(published, SERVED.selections, {"k": ["a", "b"]}, instant))


def test_a_batch_holds_at_most_max_entities_and_a_cancelled_request_leaves_the_others_answered(
        published: RedisOnlineStore) -> None:
    at = T0 + timedelta(hours=1)
    batched = BatchedLookups(published, max_entities=3)

    async def serve() -> list:
        tasks = [asyncio.create_task(batched.lookup(SERVED, {"k": keys}, len(keys), at))
                 for keys in (["a", "b"], ["c"], ["b", "a"], ["zzz"])]
        await asyncio.sleep(0)  # every task has joined its batch
        tasks[1].cancel()
        return await asyncio.gather(*tasks, return_exceptions=True)

    before = _mgets(published.client)
    first, cancelled, third, fourth = asyncio.run(serve())
    assert _mgets(published.client) - before == 2  # a, b, c fill the first batch; b, a, zzz the second
    assert isinstance(cancelled, asyncio.CancelledError)
    for keys, (found, _) in ((["a", "b"], first), (["b", "a"], third), (["zzz"], fourth)):
        assert _view(found) == _view(lookup(published, SERVED.selections, {"k": keys}, at))


def test_redis_down_fails_every_request_of_the_batch() -> None:
    down = RedisOnlineStore.from_url("redis://127.0.0.1:1/0", socket_timeout=1, retries=0)
    batched = BatchedLookups(down, max_entities=1000)

    async def serve() -> list:
        return await asyncio.gather(*(batched.lookup(SERVED, {"k": [key]}, 1, T0) for key in "ab"),
                                    return_exceptions=True)

    answers = asyncio.run(serve())
    assert all(isinstance(answer, OnlineStoreError) and "127.0.0.1:1" in str(answer) for answer in answers)
