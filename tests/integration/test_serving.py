"""The feature server over HTTP: real `featurestore serve` processes on free loopback ports,
against real redis-servers holding the session's materialized example sets.

What it serves equals `FeatureStore.get_online_features` and the as-of join at the same instant
(values, expired values, missing entities), with each feature set's status and ts; tokens
guard every endpoint but /health; bad input is a 4xx naming the field; Redis down is a 503
naming it, and the server serves again once Redis is back; SIGTERM lets a request in flight
finish, then the process exits 0. Request-time features (fraud_model's amount_to_mean_30d) are the
same served, online and offline, nulls included; one that raises is a 500 naming it and its inputs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import redis
import requests

from feature_pipelines.planning.windows import windows_between
from feature_pipelines.retrieval.feature_store import FeatureStore
from feature_pipelines.serving.tokens import hash_token
from feature_pipelines.stores.online.redis_store import RedisOnlineStore
from feature_pipelines.stores.publish import publish_windows
from feature_pipelines.streaming.events import validate_events
from feature_pipelines.streaming.log import stream_key
from tests.helpers import BIN, MATERIALIZED_AT, PROJECT_DIR, RedisProcess, free_ports

pytestmark = pytest.mark.integration
T = MATERIALIZED_AT
SPEC = "fraud_model"
SPEC_FILE = PROJECT_DIR / "feature_defs" / "retrieval_specs" / f"{SPEC}.yaml"
KEYS = ["account_id", "merchant_id"]
GIVEN = [*KEYS, "amount"]  # what each entity of a fraud_model request gives: its keys and the request field
SETS = ["transactions_v1", "accounts_v1", "merchants_v1"]
TOKENS = {"full": "full-secret", "fraud": "fraud-only-secret", "churn": "churn-only-secret", "feed": "feed-secret"}
TOKEN_ENTRIES = (f"full {hash_token(TOKENS['full'])}; fraud {hash_token(TOKENS['fraud'])} {SPEC}; "
                 f"churn {hash_token(TOKENS['churn'])} churn_model; feed {hash_token(TOKENS['feed'])} push:transactions")
# A transaction of the example source, as POST /push/transactions takes it.
EVENT = {"transaction_id": "t-push-1", "account_id": "a000001", "merchant_id": "m00001", "amount": 12.5, "channel": "web",
         "event_time": "2024-02-19T12:00:00+01:00"}
PUSH_LOG = stream_key("transactions")
MAX_ENTITIES, MAX_BODY = 200, 65_536
TIMEOUT = 30  # seconds for any one HTTP call
ORIGIN = "https://models.example"  # the one origin browsers may call from (CORS is off without --cors-origin)


class Server:
    """A `featurestore serve` process on a free loopback port, its stdout (access log) and stderr in files."""

    def __init__(self, folder: Path, redis_url: str, *args: str, env: dict[str, str] | None = None,
                 token: str | None = None):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.args, self.token = folder, args, token
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("FEATURESTORE_SERVE_")}
        self.env = {**inherited, "REDIS_URL": redis_url, "FEATURESTORE_PROJECT_DIR": str(PROJECT_DIR),
                    "FEATURE_DEFS_DIR": str(PROJECT_DIR / "feature_defs"), "FEATURESTORE_DATA_DIR": str(folder / "data"),
                    **(env or {})}
        self.process: subprocess.Popen | None = None
        self.port = 0
        self.started_in = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def stderr(self) -> str:
        return (self.folder / "stderr.log").read_text()

    def access_log(self) -> list[dict]:
        return [json.loads(line) for line in (self.folder / "stdout.log").read_text().splitlines() if line.strip()]

    def start(self) -> "Server":
        for attempt in range(3):
            self.port = free_ports()[0]
            began = time.monotonic()
            with (self.folder / "stdout.log").open("w") as out, (self.folder / "stderr.log").open("w") as err:
                self.process = subprocess.Popen([str(BIN / "featurestore"), "serve", "--port", str(self.port), *self.args],
                                                cwd=self.folder, env=self.env, stdout=out, stderr=err)
            if self._ready_within(90):
                self.started_in = time.monotonic() - began
                return self
            if "address already in use" not in self.stderr.lower() or attempt == 2:
                raise AssertionError(f"featurestore serve did not become ready:\n{self.stderr[-3000:]}")
        raise AssertionError("unreachable")

    def _ready_within(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                if self.get("/ready", timeout=5).status_code == 200:
                    return True
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        self.process.kill()
        self.process.wait(timeout=30)
        raise AssertionError(f"featurestore serve was not ready within {seconds} s:\n{self.stderr[-3000:]}")

    def _headers(self, token: str | None) -> dict[str, str]:
        token = self.token if token is None else token
        return {"Authorization": f"Bearer {token}"} if token else {}

    def get(self, path: str, token: str | None = None, timeout: float = TIMEOUT) -> requests.Response:
        return requests.get(self.url + path, headers=self._headers(token), timeout=timeout)

    def post(self, path: str, payload: Any = None, token: str | None = None, data: Any = None,
             headers: dict[str, str] | None = None) -> requests.Response:
        return requests.post(self.url + path, json=payload, data=data, headers={**self._headers(token), **(headers or {})},
                             timeout=TIMEOUT)

    def features(self, entities: list[dict], at: datetime | None = None, spec: str = SPEC) -> dict:
        payload: dict[str, Any] = {"entities": entities}
        if at is not None:
            payload["at"] = at.isoformat()
        response = self.post(f"/features/{spec}", payload)
        assert response.status_code == 200, response.text
        return response.json()

    def metric(self, line_start: str) -> float:
        """The value of the first metrics line starting with `line_start`."""
        text = self.get("/metrics").text
        return next(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_start))

    def stop(self) -> int:
        """SIGTERM, by pid; the exit code once it has drained."""
        os.kill(self.process.pid, signal.SIGTERM)
        try:
            return self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)
            raise AssertionError(f"featurestore serve did not stop within 60 s of SIGTERM:\n{self.stderr[-3000:]}")


# A spec the example definitions lack, with a request feature that fails on a null input (served from a copy).
FRAGILE_SPEC = "name: fragile_model\nfeatures: [transactions:1:amount_mean_30d]\nrequest_features: [fragile_ratio]\n"
FRAGILE_DEFS = textwrap.dedent("""
    from feature_pipelines import request_feature

    @request_feature(request={"amount": "float64"}, features=["amount_mean_30d"], output="float64")
    def fragile_ratio(amount, amount_mean_30d):
        return amount / amount_mean_30d  # no guard for None: a bug
""")


@pytest.fixture(scope="module")
def defs_with_fragile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example definitions, plus FRAGILE_SPEC and its request feature."""
    defs = tmp_path_factory.mktemp("defs") / "feature_defs"
    shutil.copytree(PROJECT_DIR / "feature_defs", defs, ignore=shutil.ignore_patterns("__pycache__"))
    (defs / "fragile.py").write_text(FRAGILE_DEFS)
    (defs / "retrieval_specs" / "fragile_model.yaml").write_text(FRAGILE_SPEC)
    return defs


@pytest.fixture(scope="module")
def server(materialized_store: FeatureStore, defs_with_fragile: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with tokens over the materialized store; stopped by SIGTERM at the end, exiting 0."""
    running = Server(tmp_path_factory.mktemp("serve"), materialized_store.online.url, "--max-entities",
                     str(MAX_ENTITIES), "--max-body-bytes", str(MAX_BODY), "--cors-origin", ORIGIN,
                     env={"FEATURESTORE_SERVE_TOKENS": TOKEN_ENTRIES, "FEATURE_DEFS_DIR": str(defs_with_fragile)},
                     token=TOKENS["full"]).start()
    print(f"featurestore serve ready {running.started_in:.2f} s after it was started (loaded machine)")
    yield running
    assert running.stop() == 0, running.stderr[-3000:]
    assert "Traceback" not in running.stderr, running.stderr[-3000:]


def _entities(store: FeatureStore) -> list[dict]:
    """Every account with a merchant, and entities the store has never seen, each with an amount."""
    catalog = store.catalog
    accounts = sorted(store.offline.open(catalog.get("accounts")).read().column("account_id").unique().to_pylist())
    merchants = sorted(store.offline.open(catalog.get("merchants")).read().column("merchant_id").unique().to_pylist())
    rng = np.random.default_rng(7)
    pairs = [(a, str(rng.choice(merchants))) for a in accounts]
    pairs += [("a999999", "m99999"), ("a999999", merchants[0]), (accounts[0], "m99999")]
    return [dict(zip(GIVEN, (*pair, amount))) for pair, amount in zip(pairs, _amounts(rng, len(pairs)))]


def _amounts(rng: np.random.Generator, count: int) -> list[float | int | None]:
    """Random amounts of the request field: nulls, zeros, negatives, whole numbers (JSON integers) and cents."""
    kinds = rng.integers(0, 5, count).tolist()
    cents = np.round(rng.lognormal(3.2, 1.0, count), 2).tolist()
    return [None if k == 0 else 0.0 if k == 1 else -v if k == 2 else int(v) if k == 3 else v for k, v in zip(kinds, cents)]


def _objects(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.reset_index(drop=True).astype(object)
    return out.where(pd.notna(out), None)


def _served_frame(payload: dict) -> pd.DataFrame:
    return pd.DataFrame([{**row["entity"], **row["values"]} for row in payload["rows"]])


def _expected_states(store: FeatureStore, entities: list[dict], at: datetime) -> dict[str, list[tuple]]:
    """Per feature set, (status, ts) of each entity, from the offline rows (all of them are published)."""
    states = {}
    for key in SETS:
        name, version = key.rsplit("_v", 1)
        feature_set = store.catalog.get(name, int(version))
        rows = store.offline.open(feature_set).read().to_pandas()
        newest = rows.groupby(feature_set.entity_names)["ts"].max()
        column = []
        for entity in entities:
            ts = newest.get(entity[feature_set.entity_names[0]])
            if ts is None:
                column.append(("not_found", None))
            else:
                expired = feature_set.ttl is not None and at - ts.to_pydatetime() > feature_set.ttl
                column.append(("expired" if expired else "present", ts.to_pydatetime().isoformat()))
        states[key] = column
    return states


def test_served_values_equal_the_python_api_and_the_as_of_join(server: Server, materialized_store: FeatureStore) -> None:
    entities = _entities(materialized_store)
    payload = server.features(entities, at=T)
    online = materialized_store.get_online_features(SPEC_FILE, entities, now=T)
    joined = materialized_store.get_inference_features(pd.DataFrame(entities), SPEC_FILE, as_of=T)
    assert payload["retrieval_spec"] == SPEC and payload["at"] == T.isoformat()
    assert payload["features"] == [c for c in online.columns if c not in GIVEN]
    assert payload["features"][-1] == "amount_to_mean_30d"  # request features after the fetched ones
    served = _served_frame(payload)
    pd.testing.assert_frame_equal(_objects(served), _objects(online))
    pd.testing.assert_frame_equal(_objects(served), _objects(joined))
    # Each set's status and ts per entity: the newest offline row, expired past temporal_join_lookback.
    expected = _expected_states(materialized_store, entities, T)
    for key in SETS:
        got = [(row["feature_sets"][key]["status"], row["feature_sets"][key]["ts"]) for row in payload["rows"]]
        assert got == expected[key], key
    statuses = {(key, state) for key in SETS for state, _ in expected[key]}
    # Every case is there: values, entities never seen, and values past their lookback (merchants at T).
    assert {("transactions_v1", "present"), ("accounts_v1", "not_found"), ("merchants_v1", "expired")} <= statuses
    assert served["transactions__amount_sum_7d"].notna().sum() > 50


def test_values_are_judged_at_the_requested_instant_or_now(server: Server, materialized_store: FeatureStore) -> None:
    entities = _entities(materialized_store)[:40]
    earlier = T - timedelta(days=9)  # merchant values are within their 7-day lookback then
    payload = server.features(entities, at=earlier)
    expected = materialized_store.get_online_features(SPEC_FILE, entities, now=earlier)
    pd.testing.assert_frame_equal(_objects(_served_frame(payload)), _objects(expected))
    assert sum(row["feature_sets"]["merchants_v1"]["status"] == "present" for row in payload["rows"]) > 10
    before = datetime.now(timezone.utc)
    payload = server.features(entities)  # no `at`: now
    moment = datetime.fromisoformat(payload["at"])
    assert before <= moment <= datetime.now(timezone.utc)
    expected = materialized_store.get_online_features(SPEC_FILE, entities, now=moment)
    pd.testing.assert_frame_equal(_objects(_served_frame(payload)), _objects(expected))
    assert {row["feature_sets"]["merchants_v1"]["status"] for row in payload["rows"]} <= {"expired", "not_found"}


@pytest.mark.parametrize("full_names", [False, True])
def test_explicit_feature_lists(server: Server, materialized_store: FeatureStore, full_names: bool) -> None:
    refs = ["transactions:1:amount_sum_7d", "accounts:1:segment", "merchants:1:*"]
    entities = [{k: e[k] for k in KEYS} for e in _entities(materialized_store)[:30]]  # keys only: no request features
    response = server.post("/features", {"features": refs, "entities": entities, "full_names": full_names,
                                         "at": T.isoformat()})
    assert response.status_code == 200, response.text
    expected = materialized_store.get_online_features(refs, entities, now=T, full_names=full_names)
    assert "retrieval_spec" not in response.json()
    pd.testing.assert_frame_equal(_objects(_served_frame(response.json())), _objects(expected))


def test_request_features_are_the_same_served_online_and_offline(server: Server,
                                                                 materialized_store: FeatureStore) -> None:
    """fraud_model's amount_to_mean_30d on random amounts (nulls, zeros, negatives, whole numbers) for
    random entities (known, unknown) at three instants (values present, and past their lookback):
    the server, get_online_features and the as-of join give the same values, nulls included."""
    rng = np.random.default_rng(15)
    base = _entities(materialized_store)
    seen: Counter[str] = Counter()
    for at in (T, T + timedelta(days=30), T + timedelta(days=50)):  # transactions' lookback is 45d
        picked = [base[i] for i in rng.choice(len(base), 60, replace=False).tolist()]
        entities = [{**entity, "amount": amount} for entity, amount in zip(picked, _amounts(rng, len(picked)))]
        served = _objects(_served_frame(server.features(entities, at=at)))
        online = materialized_store.get_online_features(SPEC_FILE, entities, now=at)
        offline = materialized_store.get_inference_features(pd.DataFrame(entities), SPEC_FILE, as_of=at,
                                                            engine="local", now=T)
        pd.testing.assert_frame_equal(served, _objects(online), check_exact=True)  # the same floats, bit for bit
        pd.testing.assert_frame_equal(served, _objects(offline), check_exact=True)
        for amount, mean, ratio in zip(served["amount"], served["transactions__amount_mean_30d"],
                                       served["amount_to_mean_30d"]):
            assert (ratio is None) == (amount is None or not mean), (amount, mean, ratio)
            seen["null amount" if amount is None else "null mean" if mean is None else "value" if amount else "zero"] += 1
    assert min(seen[k] for k in ("null amount", "null mean", "value", "zero")) >= 5, seen


FRAUD_ENTITY = {"entities": [{"account_id": "a000001", "merchant_id": "m00001", "amount": 12.5}]}


@pytest.mark.parametrize("method, path, token, status", [
    ("GET", "/health", "", 200),  # the only endpoint without a token
    ("POST", f"/features/{SPEC}", "", 401),
    ("POST", f"/features/{SPEC}", "wrong-secret", 401),
    ("POST", f"/features/{SPEC}", hash_token(TOKENS["full"]), 401),  # the stored hash is not the token
    ("POST", f"/features/{SPEC}", TOKENS["full"], 200),
    ("POST", f"/features/{SPEC}", TOKENS["fraud"], 200),
    ("POST", f"/features/{SPEC}", TOKENS["churn"], 403),  # limited to another spec
    ("POST", "/features/unknown", "", 401),  # no token: no hint which specs exist
    ("POST", "/features/unknown", TOKENS["full"], 404),
    ("POST", "/features", TOKENS["full"], 200),
    ("POST", "/features", TOKENS["fraud"], 403),  # explicit lists need an unlimited token
    ("POST", "/features", "", 401),
    ("GET", "/ready", "", 401), ("GET", "/metrics", "", 401), ("GET", "/openapi.json", "", 401), ("GET", "/docs", "", 401),
    ("GET", "/ready", TOKENS["fraud"], 200), ("GET", "/metrics", TOKENS["fraud"], 200),
    ("GET", "/openapi.json", TOKENS["full"], 200), ("GET", "/docs", TOKENS["full"], 200),
    ("POST", "/push/transactions", "", 401),
    ("POST", "/push/transactions", TOKENS["full"], 200),  # no limits: it may push too
    ("POST", "/push/transactions", TOKENS["feed"], 200),  # limited to pushing to this source
    ("POST", "/push/transactions", TOKENS["fraud"], 403),  # limited to a spec: it pushes nothing
    ("POST", f"/features/{SPEC}", TOKENS["feed"], 403),  # a push token reads nothing
    ("POST", "/features", TOKENS["feed"], 403),
])
def test_tokens(server: Server, method: str, path: str, token: str, status: int) -> None:
    payload = {"entities": [GOOD_ROW], "features": ["accounts:1:*", "merchants:1:*"]} if path == "/features" \
        else {"events": [EVENT]} if path.startswith("/push/") else FRAUD_ENTITY
    response = server.get(path, token=token) if method == "GET" else server.post(path, payload, token=token)
    assert response.status_code == status, response.text
    if status in (401, 403):
        error = response.json()["error"]
        assert error["status"] == status and error["message"].endswith(".")
        assert (response.headers.get("WWW-Authenticate") == "Bearer") is (status == 401)


def _chunks(size: int) -> Iterator[bytes]:
    """A body without Content-Length (chunked), so only its bytes tell its size."""
    yield b'{"entities": ['
    for _ in range(size // 1000 + 1):
        yield b" " * 1000
    yield b"]}"


GOOD_ROW = {"account_id": "a000001", "merchant_id": "m00001"}
SPEC_ROW = {**GOOD_ROW, "amount": 12.5}  # fraud_model's request feature reads the amount


@pytest.mark.parametrize("path, body, status, field", [
    (f"/features/{SPEC}", b'{"entities": [', 400, "body"),
    (f"/features/{SPEC}", b"\xff\xfe\x00", 400, "body"),
    (f"/features/{SPEC}", b"[]", 400, "body"),
    (f"/features/{SPEC}", {}, 422, "entities"),
    (f"/features/{SPEC}", {"entities": [], "limit": 3}, 422, "limit"),
    (f"/features/{SPEC}", {"entities": {"account_id": "a000001"}}, 422, "entities"),
    (f"/features/{SPEC}", {"entities": ["a000001"]}, 422, "entities[0]"),
    (f"/features/{SPEC}", {"entities": [SPEC_ROW, {"account_id": "a000002"}]}, 422, "entities[1].merchant_id"),
    (f"/features/{SPEC}", {"entities": [{**SPEC_ROW, "channel": "web"}]}, 422, "entities[0].channel"),
    (f"/features/{SPEC}", {"entities": [{**SPEC_ROW, "account_id": 1}]}, 422, "entities[0].account_id"),
    (f"/features/{SPEC}", {"entities": [{**SPEC_ROW, "merchant_id": None}]}, 422, "entities[0].merchant_id"),
    (f"/features/{SPEC}", {"entities": [SPEC_ROW, GOOD_ROW]}, 422, "entities[1].amount"),  # the request field
    (f"/features/{SPEC}", {"entities": [SPEC_ROW, {**GOOD_ROW, "amount": "12.5"}]}, 422, "entities[1].amount"),
    (f"/features/{SPEC}", {"entities": [{**GOOD_ROW, "amount": True}]}, 422, "entities[0].amount"),
    (f"/features/{SPEC}", {"entities": [SPEC_ROW] * (MAX_ENTITIES + 1)}, 422, "entities"),
    (f"/features/{SPEC}", {"entities": [SPEC_ROW], "at": "2024-02-19T00:00:00"}, 422, "at"),
    (f"/features/{SPEC}", b'{"entities": [' + b" " * MAX_BODY + b"]}", 413, "body"),  # Content-Length says so
    (f"/features/{SPEC}", _chunks(MAX_BODY), 413, "body"),  # only the bytes say so
    ("/features/no_such_spec", {"entities": [GOOD_ROW]}, 404, "retrieval_spec"),
    ("/features", {"features": "accounts:1:*", "entities": [GOOD_ROW]}, 422, "features"),
    ("/features", {"features": ["accounts:1:nope"], "entities": [GOOD_ROW]}, 422, "features"),
    ("/features", {"features": ["transactions:1:txn_count_1d", "merchants:1:txn_count_1d"], "entities": [GOOD_ROW]},
     422, "features"),  # the same column from two sets, without full_names
    ("/features", {"features": ["accounts:1:*"], "entities": [GOOD_ROW], "full_names": "yes"}, 422, "full_names"),
    ("/features", {"features": ["accounts:1:*"], "entities": [{"account_id": "a1", "merchant_id": "m1"}]},
     422, "entities[0].merchant_id"),  # only the listed sets' keys
    ("/features", {"features": ["accounts:1:*"], "entities": [{"account_id": "a1", "amount": 1.0}]},
     422, "entities[0].amount"),  # an explicit list has no request features
    ("/push/transactions", b"[", 400, "body"),
    ("/push/transactions", {}, 422, "events"),
    ("/push/transactions", {"events": [EVENT], "at": "now"}, 422, "at"),
    ("/push/transactions", {"events": {"0": EVENT}}, 422, "events"),
    ("/push/transactions", {"events": [EVENT, "t2"]}, 422, "events[1]"),
    ("/push/transactions", {"events": [EVENT, {**EVENT, "amount": "12.5"}]}, 422, "events[1].amount"),
    ("/push/transactions", {"events": [{**EVENT, "event_time": "2024-02-19T12:00:00"}]}, 422, "events[0].event_time"),
    ("/push/transactions", {"events": [EVENT, EVENT, {**EVENT, "account_id": None}]}, 422, "events[2].account_id"),
    ("/push/transactions", {"events": [{**EVENT, "transaction_id": None}]}, 422, "events[0].transaction_id"),
    ("/push/transactions", {"events": [{k: v for k, v in EVENT.items() if k != "channel"}]}, 422, "events[0].channel"),
    ("/push/transactions", {"events": [{**EVENT, "country": "DE"}]}, 422, "events[0].country"),
    ("/push/transactions", {"events": [EVENT] * 1000}, 413, "body"),
    ("/push/payments", {"events": [EVENT]}, 404, "source"),  # no feature set reads it
    ("/push/accounts", {"events": [EVENT]}, 409, "source"),  # read, but by no streamed set
])
def test_bad_input_is_a_4xx_naming_the_field(server: Server, materialized_store: FeatureStore, path: str, body: Any,
                                             status: int, field: str) -> None:
    logged = materialized_store.online.client.xlen(PUSH_LOG)
    if isinstance(body, (dict, list)):
        response = server.post(path, body, headers={"X-Request-ID": "bad-input-1"})
    else:
        response = server.post(path, data=body, headers={"Content-Type": "application/json", "X-Request-ID": "bad-input-1"})
    assert response.status_code == status, response.text
    answer = response.json()
    assert answer["error"]["field"] == field and answer["error"]["status"] == status, answer
    assert answer["error"]["message"].endswith(".") and not answer["error"]["message"].endswith("..")
    assert answer["request_id"] == response.headers["X-Request-ID"] == "bad-input-1"
    assert server.get("/health").status_code == 200
    assert materialized_store.online.client.xlen(PUSH_LOG) == logged  # nothing of a refused push is appended


def test_push_appends_the_events_to_the_source_log(server: Server, materialized_store: FeatureStore) -> None:
    """POST /push/transactions appends the events, in the event log's form (times in UTC), as
    FeatureStore.push does; it is counted in /metrics and described in /openapi.json."""
    client = materialized_store.online.client
    logged = client.xlen(PUSH_LOG)
    events = [{**EVENT, "transaction_id": f"t-push-{i}", "amount": i * 1.5, "channel": None} for i in range(3)]
    response = server.post("/push/transactions", {"events": events}, headers={"X-Request-ID": "push-1"})
    assert response.status_code == 200, response.text
    assert response.json() == {"request_id": "push-1", "source": "transactions", "accepted": 3}
    stored = [json.loads(fields[b"event"]) for _, fields in client.xrange(PUSH_LOG)][logged:]
    assert stored == [{**event, "event_time": "2024-02-19T11:00:00+00:00"} for event in events]
    assert stored == list(validate_events(materialized_store.catalog.get("transactions").source, events).events)
    refused = server.post("/push/transactions", {"events": [*events, {**EVENT, "amount": "x"}]})
    assert refused.status_code == 422 and client.xlen(PUSH_LOG) == logged + 3
    assert server.metric('featurestore_serve_events_pushed_total{source="transactions"}') >= 3
    assert server.metric('featurestore_serve_pushes_refused_total{source="transactions",reason="invalid"}') >= 1
    assert server.metric('featurestore_serve_requests_total{endpoint="/push/{source}",status="200"}') >= 1
    operation = server.get("/openapi.json").json()["paths"]["/push/transactions"]["post"]
    event = operation["requestBody"]["content"]["application/json"]["schema"]["properties"]["events"]["items"]
    assert event["required"] == list(EVENT) and event["properties"]["account_id"]["type"] == "string"
    assert event["properties"]["amount"]["type"] == ["number", "null"] and set(operation["responses"]) >= {
        "200", "401", "403", "413", "422", "503"}
    assert "/push/accounts" not in server.get("/openapi.json").json()["paths"]  # no streamed set reads it


def test_wrong_paths_and_methods_answer_json(server: Server) -> None:
    for response, status in ((server.get("/nope"), 404), (server.get(f"/features/{SPEC}"), 405),
                             (server.post("/health", {}), 405)):
        assert response.status_code == status and response.json()["error"]["status"] == status


def test_cors_only_for_the_configured_origin(server: Server) -> None:
    def preflight(origin: str) -> requests.Response:
        return requests.options(f"{server.url}/features/{SPEC}", timeout=TIMEOUT, headers={
            "Origin": origin, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type"})

    allowed = preflight(ORIGIN)
    assert allowed.status_code == 200 and allowed.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "Access-Control-Allow-Origin" not in preflight("https://elsewhere.example").headers
    answer = server.post(f"/features/{SPEC}", FRAUD_ENTITY, headers={"Origin": ORIGIN})
    assert answer.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "X-Request-ID" in answer.headers["Access-Control-Expose-Headers"]


def test_metrics_schema_docs_and_access_log(server: Server) -> None:
    response = server.post(f"/features/{SPEC}", {**FRAUD_ENTITY, "at": T.isoformat()}, headers={"X-Request-ID": "trace-42"})
    assert response.headers["X-Request-ID"] == response.json()["request_id"] == "trace-42"
    metrics = server.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    assert server.metric('featurestore_serve_requests_total{endpoint="/features/{retrieval_spec}",status="200"}') >= 1
    assert server.metric('featurestore_serve_request_duration_seconds_count{endpoint="/features/{retrieval_spec}"}') >= 1
    assert server.metric('featurestore_serve_values_total{feature_set="merchants_v1",status="expired"}') >= 1
    assert 'status="500"' not in server.get("/metrics").text  # no input in these tests made it fail
    schema = server.get("/openapi.json").json()
    operation = schema["paths"][f"/features/{SPEC}"]["post"]
    entity = operation["requestBody"]["content"]["application/json"]["schema"]["properties"]["entities"]
    assert entity["maxItems"] == MAX_ENTITIES and entity["items"]["required"] == GIVEN
    assert entity["items"]["properties"]["amount"]["type"] == ["number", "null"]  # the request field, null allowed
    assert "`amount`" in operation["summary"] and "`amount_to_mean_30d`" in operation["summary"]
    values = operation["responses"]["200"]["content"]["application/json"]["schema"]["properties"]["rows"]["items"]
    assert list(values["properties"]["values"]["properties"])[-1] == "amount_to_mean_30d"
    assert set(operation["responses"]) >= {"200", "401", "403", "413", "422", "503"}
    assert schema["paths"]["/health"]["get"]["security"] == [] and schema["security"] == [{"bearer": []}]
    assert "swagger-ui" in server.get("/docs").text
    deadline = time.monotonic() + 10  # the access log line is written as the response goes out
    while not (lines := [e for e in server.access_log() if e.get("request_id") == "trace-42"]):
        assert time.monotonic() < deadline, "no access log line for request trace-42"
        time.sleep(0.05)
    assert lines[0]["status"] == 200 and lines[0]["path"] == f"/features/{SPEC}" and lines[0]["token"] == "full"
    assert lines[0]["entities"] == 1 and lines[0]["duration_ms"] > 0 and TOKENS["full"] not in json.dumps(server.access_log())


def test_a_failing_request_feature_is_a_500_naming_it_and_its_inputs(server: Server, defs_with_fragile: Path) -> None:
    """A request feature that raises is a bug in its definition: the one 500 the server answers on
    purpose, as JSON naming the function and its inputs, and counted in /metrics."""
    fine = server.post("/features/fragile_model", {"entities": [{"account_id": "a000001", "amount": 10}],
                                                   "at": T.isoformat()})
    assert fine.status_code == 200 and fine.json()["rows"][0]["values"]["fragile_ratio"] > 0, fine.text
    before = server.metric("featurestore_serve_request_feature_errors_total")
    failed = server.post("/features/fragile_model", {"entities": [{"account_id": "a000001", "amount": 10},
                                                                  {"account_id": "a999999", "amount": 12.5}],
                                                     "at": T.isoformat()})
    assert failed.status_code == 500, failed.text
    assert failed.json()["error"] == {"status": 500, "field": "request_features", "message": (
        f"request feature fragile_ratio ({defs_with_fragile / 'fragile.py'}) raised TypeError: unsupported operand "
        "type(s) for /: 'float' and 'NoneType' for amount=12.5, amount_mean_30d=None; fix the function: it gets None "
        "for a null input and returns float64 or None.")}
    assert server.metric("featurestore_serve_request_feature_errors_total") == before + 1
    assert server.get("/health").status_code == 200


def test_redis_down_is_a_503_then_served_again_and_sigterm_drains(
        materialized_store: FeatureStore, tmp_path: Path) -> None:
    """A server without tokens (loopback only, and it says so) on its own redis-server: stopped,
    /ready and feature requests answer 503 naming Redis; started again, the same values come back
    without a restart. Then SIGTERM while a request is in flight: it is answered, and the process exits 0."""
    own = RedisProcess(tmp_path / "redis")
    own.start()
    try:
        accounts = materialized_store.catalog.get("accounts")
        client = redis.Redis.from_url(own.url)
        publish_windows(accounts, [w.key for w in windows_between(accounts, "2024-01-01", "2024-02-19")],
                        materialized_store.offline, RedisOnlineStore(client, own.url))
        client.close()
        running = Server(tmp_path / "serve", own.url).start()
        try:
            assert "no tokens configured: serving without authentication, on loopback only" in running.stderr
            preflight = requests.options(f"{running.url}/features", timeout=TIMEOUT, headers={
                "Origin": ORIGIN, "Access-Control-Request-Method": "POST"})
            assert "Access-Control-Allow-Origin" not in preflight.headers  # CORS is off by default
            request = {"features": ["accounts:1:*"], "entities": [{"account_id": a} for a in ("a000001", "a000002", "x")],
                       "at": T.isoformat()}
            before = running.post("/features", request)
            assert before.status_code == 200 and before.json()["rows"][0]["feature_sets"]["accounts_v1"]["status"] == "present"

            own.stop()
            ready = running.get("/ready")
            assert ready.status_code == 503 and own.url in ready.json()["error"]["message"], ready.text
            down = running.post("/features", request)
            assert down.status_code == 503, down.text
            assert f"reading Redis {own.url} failed" in down.json()["error"]["message"]
            assert running.metric("featurestore_serve_redis_errors_total") >= 2
            pushed = running.post("/push/transactions", {"events": [EVENT]})
            assert pushed.status_code == 503, pushed.text
            assert pushed.json()["error"]["message"].startswith(
                f"appending 1 event(s) to the event log of source 'transactions' in Redis {own.url} failed: ")

            own.start()  # the same port and data
            deadline = time.monotonic() + 30
            while running.get("/ready").status_code != 200:
                assert time.monotonic() < deadline, "the server did not see Redis come back within 30 s"
                time.sleep(0.1)
            after = running.post("/features", request)
            assert after.status_code == 200 and after.json()["rows"] == before.json()["rows"]
            assert running.post("/push/transactions", {"events": [EVENT]}).json()["accepted"] == 1

            _sigterm_drains_a_request_in_flight(running, request, before.json()["rows"])
        finally:
            if running.process.poll() is None:
                running.process.kill()
                running.process.wait(timeout=30)
    finally:
        own.stop()


def _sigterm_drains_a_request_in_flight(running: Server, request: dict, rows: list) -> None:
    body = json.dumps(request).encode()
    with socket.create_connection(("127.0.0.1", running.port), timeout=TIMEOUT) as held:
        held.sendall(f"POST /features HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:10])
        deadline = time.monotonic() + 30
        while running.metric("featurestore_serve_requests_in_flight") < 2:  # the held request and this one
            assert time.monotonic() < deadline, "the held request never reached the application"
            time.sleep(0.05)
        os.kill(running.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while True:  # the server stops accepting connections ...
            try:
                socket.create_connection(("127.0.0.1", running.port), timeout=1).close()
            except ConnectionRefusedError:
                break
            assert time.monotonic() < deadline, "the server still accepts connections 30 s after SIGTERM"
            time.sleep(0.05)
        while "Waiting for connections to close" not in running.stderr:  # ... and waits for the request in flight
            assert time.monotonic() < deadline, running.stderr[-3000:]
            time.sleep(0.05)
        time.sleep(1.0)  # a slow client: the rest of its body comes a second into the drain
        assert running.process.poll() is None
        held.sendall(body[10:])
        answer = b""
        while chunk := held.recv(65536):  # it closes the connection after answering
            answer += chunk
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), answer[:500]
    assert json.loads(payload)["rows"] == rows
    assert running.process.wait(timeout=60) == 0, running.stderr[-3000:]


def test_several_workers(materialized_store: FeatureStore, tmp_path: Path) -> None:
    running = Server(tmp_path, materialized_store.online.url, "--workers", "2").start()
    try:
        entities = _entities(materialized_store)[:5]
        expected = materialized_store.get_online_features(SPEC_FILE, entities, now=T)
        for _ in range(6):
            pd.testing.assert_frame_equal(_objects(_served_frame(running.features(entities, at=T))), _objects(expected))
        deadline = time.monotonic() + 60
        while running.stderr.count("Started server process") < 2:  # both workers, each its own process
            assert time.monotonic() < deadline, running.stderr[-3000:]
            time.sleep(0.1)
    finally:
        assert running.stop() == 0, running.stderr[-3000:]
