"""Feature server performance: `featurestore serve` over HTTP on loopback, against the floor (a
bare redis-py MGET of the same keys, in process) and the peer (Feast's own Python feature server,
`feast serve`, over the same values in the same redis-server).

    apt-get install wrk                                           # the load generator
    .venv/bin/python benchmarks/serving.py                        # every case, median of 3 runs
    .venv/bin/python benchmarks/serving.py --skip-feast --runs 1  # ours and the floor only
    .venv/bin/python benchmarks/serving.py --skip-feast --stacks  # also our app under other runtimes

`--stacks` adds servers of our application run otherwise: `"uvicorn asyncio h11"`, `"granian"`
(needs granian importable, e.g. `"granian PYTHONPATH=/dir/with/granian"`), `"serve --workers=4"`;
words `--option=value` go on the server's command line, words `NAME=VALUE` into its environment
(`"serve PYTHONPATH=/old/tree"` measures another checkout of the package; `--no-request-time`
for one without request-time features).

One feature set of 50 features (40 float64, 10 int64) over `--entities` entities, published
through the product's own write path (`RedisOnlineStore.publish`) into a redis-server this
script starts on a free loopback port (and stops by its pid). Feast gets the same rows through
its own write path (`feast materialize` from a Parquet file) into the same redis-server, in its
own key space; it is installed by this script into its own venv (`--feast-venv`), never into
the project's. Both servers run `--workers` processes.

Cases (goals of issue 15):
- 1 entity x 50 features, one client: p99 <= 1 ms end to end;
- 100 entities x 50 features, one client: p99 <= 4 ms;
- concurrent clients (`--connections`), 1 entity per request: >= 5,000 requests/s with p99 <= 10 ms;
- 1 entity, the same spec plus one request-time feature, one client: adds <= 0.2 ms p99.

One client is a tight loop over one keep-alive connection (raw socket, prebuilt requests), so the
client's own cost is a few microseconds. Concurrent clients are `wrk` (Debian's package), bounded
by `--duration`; the throughput floor is redis.asyncio with as many concurrent callers. Every path
gets the same warm-up, runs alternate, and each figure is the median over `--runs`; one-client
runs stop after `--requests` or `--time-limit`. Before timing, the values each path returns are
checked equal to the rows that were published. The server's CPU time per request (all its
processes, from /proc) is printed too: on a shared machine it says more than latency does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import redis
import redis.asyncio

from feature_pipelines.spec.catalog import load_catalog
from feature_pipelines.stores.online.redis_store import RedisOnlineStore

PROJECT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
FLOATS, INTS = 40, 10
FEATURES = [f"f{i:02d}" for i in range(FLOATS + INTS)]
SPEC = "bench_model"
SPEC_RT = "bench_model_rt"  # the same features and one request-time feature
FEAST_VERSION = "0.67.0"
SEED = 15

DEFS = f'''
"""The benchmark's feature set: {FLOATS} float64 and {INTS} int64 features of one entity."""

from feature_pipelines import Entity, Feature, FeatureSet, Partitions, Source

FEATURES = {{f"f{{i:02d}}": "float64" if i < {FLOATS} else "int64" for i in range({FLOATS + INTS})}}
bench = FeatureSet(
    name="bench", version=1, entities=[Entity("entity_id", "string")],
    source=Source(name="bench", path="bench", timestamp="ts", columns={{"entity_id": "string", **FEATURES}}),
    features=[Feature(name, dtype) for name, dtype in FEATURES.items()],
    partitions=Partitions("daily", start="2024-01-01"), temporal_join_lookback="30d",
)
'''

REQUEST_DEFS = '''
"""The request-time case's feature: a request field over a fetched feature."""

from feature_pipelines import request_feature


@request_feature(request={"amount": "float64"}, features=["f00"], output="float64")
def amount_to_f00(amount, f00):
    return None if amount is None or not f00 else amount / f00
'''

FEAST_DEFS = '''
from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, Int64

entity = Entity(name="entity_id", join_keys=["entity_id"], value_type=ValueType.STRING)
source = FileSource(path={parquet!r}, timestamp_field="ts")
bench = FeatureView(
    name="bench", entities=[entity], ttl=timedelta(days=30), online=True, source=source,
    schema=[Field(name=f"f{{i:02d}}", dtype=Float64 if i < {floats} else Int64) for i in range({count})],
)
bench_model = FeatureService(name="bench_model", features=[bench])
'''

FEAST_CONFIG = '''
project: bench
registry: {registry}
provider: local
online_store:
  type: redis
  connection_string: "127.0.0.1:{port}"
offline_store:
  type: file
entity_key_serialization_version: 3
'''


# --- processes --------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().strip()


@contextmanager
def process(args: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None,
            ready: Callable[[], bool] | None = None, within: float = 120) -> Iterator[subprocess.Popen]:
    """A child process, logging to `log`, waited for until `ready()`; SIGTERM by pid at the end."""
    with log.open("w") as out:
        child = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, cwd=cwd)
    try:
        deadline = time.monotonic() + within
        while ready is not None and not ready():
            if child.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{args[0]} did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
        yield child
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout=60)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(timeout=30)


def tree_cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process and its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    used: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
        used[int(entry.name)] = int(fields[11]) + int(fields[12])
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        total += used.get(current, 0)
        todo += children.get(current, [])
    return total / os.sysconf("SC_CLK_TCK")


def http_ok(port: int, path: str) -> bool:
    try:
        with Connection(port) as conn:
            return conn.request("GET", path)[0] == 200
    except OSError:
        return False


@contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    port = free_port()
    folder = workdir / "redis"
    folder.mkdir(parents=True, exist_ok=True)
    args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(folder)]
    url = f"redis://127.0.0.1:{port}/0"

    def up() -> bool:
        try:
            return bool(redis.Redis.from_url(url).ping())
        except redis.RedisError:
            return False

    with process(args, folder / "redis.log", ready=up):
        yield url


# --- a raw keep-alive HTTP client -------------------------------------------------------------

class Connection:
    """One keep-alive HTTP/1.1 connection: prebuilt requests out, status and body back, nothing else
    (so one client's loop measures the server, not the client)."""

    def __init__(self, port: int):
        self.port = port
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    @staticmethod
    def build(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
        lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in (headers or {}).items())]
        if method == "POST":
            lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        return self.send(self.build(method, path, body))

    def send(self, raw: bytes) -> tuple[int, bytes]:
        sock = self.sock
        sock.sendall(raw)
        data = sock.recv(262144)
        while b"\r\n\r\n" not in data:
            more = sock.recv(262144)
            if not more:
                raise ConnectionError("the server closed the connection")
            data += more
        head, _, body = data.partition(b"\r\n\r\n")
        match = re.search(rb"\r\ncontent-length: *(\d+)", head, re.IGNORECASE)
        if match is None:
            raise ConnectionError(f"no Content-Length in {head[:300]!r}")
        length = int(match.group(1))
        while len(body) < length:
            more = sock.recv(262144)
            if not more:
                raise ConnectionError("the server closed the connection")
            body += more
        return int(head[9:12]), body


# --- the data ---------------------------------------------------------------------------------

@dataclass
class Data:
    ids: list[str]
    ts: datetime
    floats: np.ndarray  # entities x FLOATS
    ints: np.ndarray  # entities x INTS

    def row(self, i: int) -> list:
        return [*self.floats[i].tolist(), *self.ints[i].tolist()]

    def table(self) -> pa.Table:
        columns = {"entity_id": self.ids, "ts": pa.array([self.ts] * len(self.ids), pa.timestamp("us", tz="UTC"))}
        columns.update({f: self.floats[:, j] for j, f in enumerate(FEATURES[:FLOATS])})
        columns.update({f: self.ints[:, j] for j, f in enumerate(FEATURES[FLOATS:])})
        return pa.table(columns)


def make_data(entities: int, rng: np.random.Generator) -> Data:
    # An hour old, inside the 30-day lookback, so every value is served as present.
    ts = (datetime.now(timezone.utc) - timedelta(hours=1)).replace(microsecond=0)
    return Data([f"e{i:06d}" for i in range(entities)], ts, rng.normal(100, 50, (entities, FLOATS)),
                rng.integers(0, 10**9, (entities, INTS)))


def write_defs(workdir: Path, request_time: bool) -> Path:
    defs = workdir / "bench_defs"
    shutil.rmtree(defs, ignore_errors=True)
    (defs / "retrieval_specs").mkdir(parents=True)
    (defs / "bench.py").write_text(DEFS)
    (defs / "retrieval_specs" / f"{SPEC}.yaml").write_text(
        f"name: {SPEC}\ndescription: 50 features of one entity.\nfeatures:\n  - bench:1:*\n")
    if not request_time:
        return defs
    (defs / "request.py").write_text(REQUEST_DEFS)
    (defs / "retrieval_specs" / f"{SPEC_RT}.yaml").write_text(
        f"name: {SPEC_RT}\ndescription: 50 features and a request-time one.\nfeatures:\n  - bench:1:*\n"
        "request_features:\n  - amount_to_f00\n")
    return defs


def publish(defs: Path, url: str, data: Data) -> RedisOnlineStore:
    feature_set = load_catalog(defs).get("bench")
    online = RedisOnlineStore(redis.Redis.from_url(url), url)
    result = online.publish(feature_set, data.table().to_batches(max_chunksize=10_000))
    assert result.written == len(data.ids), result
    return online


# --- Feast --------------------------------------------------------------------------------------

def feast_venv(path: Path) -> Path:
    """Feast's own venv, made and filled by this script the first time."""
    feast = path / "bin" / "feast"
    if not feast.exists():
        print(f"installing feast[redis]=={FEAST_VERSION} into {path} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
        subprocess.run([str(path / "bin" / "pip"), "install", "-q", f"feast[redis]=={FEAST_VERSION}"], check=True)
    return feast


def feast_repo(workdir: Path, url_port: int, data: Data, feast: Path) -> Path:
    repo = workdir / "feast_repo"
    repo.mkdir(parents=True, exist_ok=True)
    parquet = workdir / "bench.parquet"
    pq.write_table(data.table(), parquet)
    (repo / "feature_store.yaml").write_text(FEAST_CONFIG.format(registry=repo / "registry.db", port=url_port))
    (repo / "bench_repo.py").write_text(FEAST_DEFS.format(parquet=str(parquet), floats=FLOATS, count=len(FEATURES)))
    env = {"FEAST_USAGE": "False"}
    subprocess.run([str(feast), "apply"], cwd=repo, check=True, env={**os.environ, **env}, capture_output=True)
    began = time.monotonic()
    start, end = data.ts - timedelta(days=1), data.ts + timedelta(minutes=1)
    run = subprocess.run([str(feast), "materialize", start.isoformat(), end.isoformat()], cwd=repo,
                         env={**os.environ, **env}, capture_output=True, text=True)
    if run.returncode:
        raise RuntimeError(f"feast materialize failed:\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}")
    print(f"feast materialize: {len(data.ids):,} rows in {time.monotonic() - began:.1f} s", flush=True)
    return repo


def feast_values(payload: dict) -> list[list]:
    """Feast's column-wise answer as one row of the 50 values per entity (int64 comes as strings)."""
    names = payload["metadata"]["feature_names"]
    columns = {name: result["values"] for name, result in zip(names, payload["results"])}
    assert all(s == "PRESENT" for result in payload["results"] for s in result["statuses"]), payload["results"][1]
    count = len(columns["entity_id"])
    return [[float(columns[f][i]) if f in FEATURES[:FLOATS] else int(columns[f][i]) for f in FEATURES]
            for i in range(count)]


# --- paths ------------------------------------------------------------------------------------

@dataclass
class Target:
    """One way to get the features over HTTP: a port, an endpoint and how to write the body."""

    name: str
    port: int
    pid: int  # the server's process; its CPU time includes its workers'
    endpoint: str
    body: Callable[[list[str]], bytes]
    values: Callable[[dict], list[list]]


def ours_body(ids: list[str]) -> bytes:
    return json.dumps({"entities": [{"entity_id": e} for e in ids]}).encode()


def ours_values(payload: dict) -> list[list]:
    assert all(r["feature_sets"]["bench_v1"]["status"] == "present" for r in payload["rows"])
    return [[r["values"][f] for f in FEATURES] for r in payload["rows"]]


def amount(entity: str) -> float:
    """The request field of the request-time case: a different amount per entity, fixed."""
    return int(entity[1:]) % 1000 + 0.25


def rt_body(ids: list[str]) -> bytes:
    return json.dumps({"entities": [{"entity_id": e, "amount": amount(e)} for e in ids]}).encode()


def rt_values(payload: dict) -> list[list]:
    """The 50 fetched values, then the request-time one divided back (amount / f00 * f00 = amount)."""
    rows = ours_values(payload)
    for row, answer in zip(rows, payload["rows"]):
        ratio = answer["values"]["amount_to_f00"]
        assert ratio == amount(answer["entity"]["entity_id"]) / row[0], answer["values"]
    return rows


def feast_body(ids: list[str]) -> bytes:
    return json.dumps({"feature_service": SPEC, "entities": {"entity_id": ids}}).encode()


def check_values(path: Target, data: Data, rng: random.Random) -> None:
    """What the path answers equals the published rows (and what the floor's MGET holds)."""
    index = rng.sample(range(len(data.ids)), 100)
    ids = [data.ids[i] for i in index]
    with Connection(path.port) as conn:
        status, body = conn.request("POST", path.endpoint, path.body(ids))
    assert status == 200, body[:500]
    got = path.values(json.loads(body))
    expected = [data.row(i) for i in index]
    assert got == expected, f"{path.name}: values differ from the published rows"


def check_floor(data: Data, online: RedisOnlineStore, keys: Callable[[list[str]], list[str]],
                rng: random.Random) -> None:
    """The floor's MGET reads the published rows, decoded here by the documented layout
    (stores/online/codec.py: 20 ts digits, "|", a null bitmap, then the numbers, 8 bytes each)."""
    index = rng.sample(range(len(data.ids)), 100)
    head = 21 + (len(FEATURES) + 7) // 8
    for i, raw in zip(index, online.client.mget(keys([data.ids[i] for i in index]))):
        assert int(raw[:20]) == int(data.ts.timestamp()) * 1_000_000 and not any(raw[21:head]), raw[:head]
        values = np.frombuffer(raw, "<f8", FLOATS, head).tolist() + np.frombuffer(raw, "<i8", INTS, head + 8 * FLOATS).tolist()
        assert values == data.row(i), "the floor's MGET does not read the published rows"


# --- measurements -----------------------------------------------------------------------------

@dataclass
class Figures:
    p50_ms: float
    p99_ms: float
    rps: float
    cpu_us: float = float("nan")  # the server's CPU time per request (all its processes)
    requests: int = 0

    @classmethod
    def of(cls, seconds: list[float], elapsed: float, cpu_s: float = float("nan")) -> "Figures":
        ms = np.array(seconds) * 1000
        return cls(float(np.percentile(ms, 50)), float(np.percentile(ms, 99)), len(seconds) / elapsed,
                   cpu_s / len(seconds) * 1e6, len(seconds))


def one_client_http(path: Target, batches: list[list[str]], warmup: int, limit_s: float) -> Figures:
    requests = [Connection.build("POST", path.endpoint, path.body(ids)) for ids in batches]
    times = []
    with Connection(path.port) as conn:
        for raw in requests[:warmup]:
            status, body = conn.send(raw)
            assert status == 200, body[:300]
        deadline = time.perf_counter() + limit_s
        cpu = tree_cpu_seconds(path.pid)
        began = time.perf_counter()
        for raw in requests[warmup:]:
            start = time.perf_counter()
            status, _ = conn.send(raw)
            end = time.perf_counter()
            assert status == 200
            times.append(end - start)
            if end > deadline:
                break
        elapsed = time.perf_counter() - began
    return Figures.of(times, elapsed, tree_cpu_seconds(path.pid) - cpu)


def one_client_floor(client: redis.Redis, keys: Callable[[list[str]], list[str]], batches: list[list[str]],
                     warmup: int, limit_s: float) -> Figures:
    """What the store issues (one pipelined MGET), with its reply parsed by hiredis, not decoded."""
    key_lists = [keys(ids) for ids in batches]
    for k in key_lists[:warmup]:
        pipe = client.pipeline(transaction=False)
        pipe.mget(k)
        pipe.execute()
    times = []
    deadline = time.perf_counter() + limit_s
    began = time.perf_counter()
    for k in key_lists[warmup:]:
        start = time.perf_counter()
        pipe = client.pipeline(transaction=False)
        pipe.mget(k)
        reply = pipe.execute()
        end = time.perf_counter()
        assert reply[0][0] is not None
        times.append(end - start)
        if end > deadline:
            break
    return Figures.of(times, time.perf_counter() - began)


WRK_SCRIPT = '''
local bodies = {{{bodies}}}
local i = 0
local headers = {{["Content-Type"] = "application/json"}}
request = function()
  i = i % #bodies + 1
  return wrk.format("POST", "{endpoint}", headers, bodies[i])
end
'''


def wrk(path: Target, bodies: list[bytes], connections: int, seconds: float, workdir: Path) -> Figures:
    script = workdir / f"wrk-{re.sub(r'[^A-Za-z0-9=.-]+', '-', path.name)}.lua"
    lua = ",".join("[[" + b.decode() + "]]" for b in bodies)
    script.write_text(WRK_SCRIPT.format(bodies=lua, endpoint=path.endpoint))
    cpu = tree_cpu_seconds(path.pid)
    run = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{round(seconds)}s", "--timeout", "5s", "--latency",
                          "-s", str(script), f"http://127.0.0.1:{path.port}"], capture_output=True, text=True,
                         timeout=seconds + 60)
    out = run.stdout
    if run.returncode or "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk against {path.name}:\n{out}\n{run.stderr}")
    unit = {"us": 0.001, "ms": 1.0, "s": 1000.0}

    def percentile(p: str) -> float:
        value, scale = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)$", out, re.MULTILINE).groups()
        return float(value) * unit[scale]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    count = int(re.search(r"(\d+) requests in", out).group(1))
    return Figures(percentile("50"), percentile("99"), rps, (tree_cpu_seconds(path.pid) - cpu) / count * 1e6, count)


def concurrent_floor(url: str, keys: Callable[[list[str]], list[str]], ids: list[str], connections: int,
                     seconds: float) -> Figures:
    """`connections` concurrent callers of one MGET each through redis.asyncio (hiredis), for `seconds`."""

    async def run() -> Figures:
        client = redis.asyncio.Redis.from_url(url, max_connections=connections)
        times: list[float] = []
        stop = time.perf_counter() + seconds

        async def caller(offset: int) -> None:
            i = offset
            while time.perf_counter() < stop:
                k = keys([ids[i % len(ids)]])
                start = time.perf_counter()
                await client.mget(k)
                times.append(time.perf_counter() - start)
                i += connections

        began = time.perf_counter()
        await asyncio.gather(*(caller(c) for c in range(connections)))
        elapsed = time.perf_counter() - began
        await client.aclose()
        return Figures.of(times, elapsed)

    return asyncio.run(run())


# --- the run ----------------------------------------------------------------------------------

@dataclass
class Case:
    name: str
    goal: str


CASES = [Case("1 entity x 50 features, one client", "p99 <= 1 ms"),
         Case("100 entities x 50 features, one client", "p99 <= 4 ms"),
         Case("concurrent clients, 1 entity per request", ">= 5,000 requests/s with p99 <= 10 ms"),
         Case("1 entity, a request-time feature, one client", "adds <= 0.2 ms p99")]


def ours_server(defs: Path, url: str, workdir: Path, workers: int,
                stack: str) -> tuple[AbstractContextManager[subprocess.Popen], int]:
    """Our server as users run it (`serve`: `featurestore serve`), or the same application under
    another runtime (`uvicorn LOOP HTTP`, `granian`), with the same JSON logs (access log on
    stdout, to a file here). After the runtime, words `--option=value` are added to its command
    line (`--workers=4` overrides --workers) and words `NAME=VALUE` go into its environment."""
    port = free_port()
    words = stack.split()
    options = [o for w in words if w.startswith("--") for o in w.split("=", 1)]
    words = [w for w in words if not w.startswith("--")]
    runtime = [w for w in words if "=" not in w]
    env = {"REDIS_URL": url, "FEATURE_DEFS_DIR": str(defs), "FEATURESTORE_PROJECT_DIR": str(workdir),
           "FEATURESTORE_DATA_DIR": str(workdir / "data"), **dict(w.split("=", 1) for w in words if "=" in w)}
    if runtime == ["serve"]:
        args = [str(BIN / "featurestore"), "serve", "--port", str(port), "--workers", str(workers)]
    else:
        from feature_pipelines.serving.config import CONFIG_ENV, ServeConfig
        from feature_pipelines.serving.logs import log_config

        env[CONFIG_ENV] = ServeConfig(redis_url=url, feature_defs_dir=defs, port=port, workers=workers).to_json()
        logging_file = workdir / "log-config.json"
        logging_file.write_text(json.dumps(log_config()))
        target = "feature_pipelines.serving.app:app_from_env"
        if runtime[0] == "uvicorn":
            loop, http = runtime[1:]
            args = [sys.executable, "-m", "uvicorn", "--factory", target, "--port", str(port), "--workers",
                    str(workers), "--loop", loop, "--http", http, "--no-access-log", "--no-server-header",
                    "--log-config", str(logging_file)]
        elif runtime == ["granian"]:
            args = [sys.executable, "-m", "granian", "--interface", "asgi", "--factory", "--port", str(port),
                    "--workers", str(workers), "--no-ws", "--no-access-log", "--log-config", str(logging_file), target]
        else:
            raise ValueError(f"unknown runtime in {stack!r}")
    if runtime[0] == "granian":  # its last word is the application
        args[-1:-1] = options
    else:
        args += options
    name = re.sub(r"[^A-Za-z0-9=.-]+", "-", stack)
    return process(args, workdir / f"ours-{name}.log", env=env, cwd=workdir, ready=lambda: http_ok(port, "/ready")), port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entities", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--requests", type=int, default=3000, help="timed requests per one-client run")
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--time-limit", type=float, default=60.0,
                        help="seconds a one-client run may take (Feast's 100-entity case stops there)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per concurrent run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2, help="server processes, ours and Feast's alike")
    parser.add_argument("--skip-feast", action="store_true")
    parser.add_argument("--feast-venv", type=Path, default=Path("/tmp/feast-bench/venv"))
    parser.add_argument("--stacks", nargs="*", default=None,
                        help="also compare server runtimes for our app (default set when given without values)")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--no-request-time", action="store_true",
                        help="leave the request-time case out (for a tree without request-time features)")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed: apt-get install wrk")

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="serving-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, load before: {loadavg()}, workdir {workdir}", flush=True)
    rng = np.random.default_rng(SEED)
    pick = random.Random(SEED)
    data = make_data(args.entities, rng)
    defs = write_defs(workdir, not args.no_request_time)
    feast = None if args.skip_feast else feast_venv(args.feast_venv)

    with redis_server(workdir) as url:
        began = time.monotonic()
        online = publish(defs, url, data)
        print(f"published {args.entities:,} rows of 50 features in {time.monotonic() - began:.1f} s", flush=True)
        feature_set = load_catalog(defs).get("bench")

        def keys(ids: list[str]) -> list[str]:
            return online.keys(feature_set, [[e] for e in ids])

        check_floor(data, online, keys, pick)
        repo = None if feast is None else feast_repo(workdir, int(url.rsplit(":", 1)[1].split("/")[0]), data, feast)

        total = args.warmup + args.requests
        singles = [[pick.choice(data.ids)] for _ in range(total)]
        hundreds = [pick.sample(data.ids, 100) for _ in range(total)]
        concurrent_ids = [pick.choice(data.ids) for _ in range(2000)]
        stacks = ["serve"] + ([] if args.stacks is None else args.stacks or
                              ["uvicorn asyncio h11", "uvicorn uvloop httptools", "granian"])
        results: dict[tuple[str, str], list[Figures]] = {}

        def record(case: str, name: str, figures: Figures) -> None:
            results.setdefault((case, name), []).append(figures)
            print(f"  {case[:40]:<40} {name:<28} p50 {figures.p50_ms:7.3f} ms  p99 {figures.p99_ms:7.3f} ms  "
                  f"{figures.rps:9.0f} req/s  server CPU {figures.cpu_us:6.0f} us/req  ({figures.requests} requests)",
                  flush=True)

        with ExitStack() as stack:
            paths = []
            for name in stacks:
                ctx, port = ours_server(defs, url, workdir, args.workers, name)
                pid = stack.enter_context(ctx).pid
                paths.append(Target(f"ours ({name})" if name != stacks[0] else "ours", port, pid, f"/features/{SPEC}",
                                   ours_body, ours_values))
            if repo is not None:
                port = free_port()
                pid = stack.enter_context(process(
                    [str(feast), "serve", "-h", "127.0.0.1", "-p", str(port), "--workers", str(args.workers),
                     "--no-access-log", "--max-requests", "0", "--registry_ttl_sec", "3600"],
                    workdir / "feast-serve.log", cwd=repo, env={"FEAST_USAGE": "False"},
                    ready=lambda: http_ok(port, "/health"))).pid
                paths.append(Target("feast", port, pid, "/get-online-features", feast_body, feast_values))
            request_time = Target("ours + request-time feature", paths[0].port, paths[0].pid, f"/features/{SPEC_RT}", rt_body,
                                  rt_values)
            for path in [*paths, *([] if args.no_request_time else [request_time])]:
                check_values(path, data, pick)
            print(f"values equal the published rows for: floor, {', '.join(p.name for p in paths)}; the request-time "
                  "feature equals amount / f00", flush=True)

            client = redis.Redis.from_url(url)
            for run in range(args.runs):
                print(f"run {run + 1} of {args.runs} (load {loadavg()})", flush=True)
                for case, batches in ((CASES[0].name, singles), (CASES[1].name, hundreds)):
                    record(case, "floor (redis-py MGET)",
                           one_client_floor(client, keys, batches, args.warmup, args.time_limit))
                    for path in paths:
                        record(case, path.name, one_client_http(path, batches, args.warmup, args.time_limit))
                case = CASES[2].name
                record(case, "floor (redis.asyncio MGET)",
                       concurrent_floor(url, keys, concurrent_ids, args.connections, args.duration))
                for path in paths:
                    bodies = [path.body([e]) for e in concurrent_ids[:500]]
                    wrk(path, bodies, args.connections, 2, workdir)  # the same warm-up for every path
                    record(case, path.name, wrk(path, bodies, args.connections, args.duration, workdir))
                for path in () if args.no_request_time else (paths[0], request_time):  # one feature more, else the same
                    record(CASES[3].name, path.name, one_client_http(path, singles, args.warmup, args.time_limit))
            client.close()

    print(f"\nload after: {loadavg()}")
    print(f"median of {args.runs} run(s); {args.entities:,} entities, {args.workers} worker(s) per server, "
          f"{args.connections} connections for the concurrent case")
    for case in CASES[:3] if args.no_request_time else CASES:
        print(f"\n{case.name} (goal: {case.goal})")
        print(f"{'path':<32}{'p50 ms':>9}{'p99 ms':>9}{'req/s':>10}{'CPU us/req':>12}{'p99 / ours':>12}"
              f"{'req/s / ours':>14}")
        ours = median([f for (c, n), f in results.items() if c == case.name and n == "ours"][0])
        for (c, name), figures in results.items():
            if c != case.name:
                continue
            m = median(figures)
            print(f"{name:<32}{m.p50_ms:>9.3f}{m.p99_ms:>9.3f}{m.rps:>10.0f}{m.cpu_us:>12.0f}"
                  f"{m.p99_ms / ours.p99_ms:>12.2f}{m.rps / ours.rps:>14.2f}")
        if case is CASES[3]:
            extra = median(results[(case.name, "ours + request-time feature")])
            print(f"the request-time feature adds {extra.p50_ms - ours.p50_ms:.3f} ms p50, "
                  f"{extra.p99_ms - ours.p99_ms:.3f} ms p99")
    (workdir / "results.json").write_text(json.dumps(
        {f"{c} | {n}": [vars(f) for f in figs] for (c, n), figs in results.items()}, indent=1))


def median(figures: list[Figures]) -> Figures:
    return Figures(*(statistics.median(getattr(f, field) for f in figures)
                     for field in ("p50_ms", "p99_ms", "rps", "cpu_us", "requests")))


if __name__ == "__main__":
    main()
