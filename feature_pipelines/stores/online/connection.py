"""Connect to Redis from one URL: a single server, a Redis Cluster, or a Sentinel-managed master.

- `redis://[:password@]host:port/db` (or `rediss://`, `unix://`): one server (redis-py's URL).
- `redis+cluster://[:password@]host1:port1[,host2:port2...]`: a Redis Cluster; any reachable
  node is enough to discover the others.
- `redis+sentinel://[:password@]host1:port1[,host2:port2...]/master_name[/db]`: the current
  master of `master_name`, as the Sentinels report it (the password is the master's).
"""

from __future__ import annotations

import re
from urllib.parse import unquote

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.retry import Retry
from redis.sentinel import Sentinel

from feature_pipelines.errors import OnlineStoreError

CLUSTER_SCHEME = "redis+cluster"
SENTINEL_SCHEME = "redis+sentinel"


def connect(url: str, socket_timeout: float | None = None, retries: int | None = None) -> redis.Redis | RedisCluster:
    """A client for `url` (see the module docstring for the forms). `retries`: how often a
    command is retried at once, without back-off, after a connection error (a pooled connection
    that a restarted Redis dropped needs one); None keeps redis-py's default (10, with
    back-off up to 1 s: seconds before a down Redis is reported)."""
    scheme, _, rest = url.partition("://")
    options: dict = {} if retries is None else {"retry": Retry(NoBackoff(), retries)}
    if scheme not in (CLUSTER_SCHEME, SENTINEL_SCHEME):
        return redis.Redis.from_url(url, socket_timeout=socket_timeout, **options)
    password, hosts, path = _split(url, rest)
    if scheme == CLUSTER_SCHEME:
        return RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in hosts], password=password,
                            socket_timeout=socket_timeout, **options)
    parts = [p for p in path.split("/") if p]
    if not parts:
        raise OnlineStoreError(f"Redis URL {redacted(url)!r} names no master; write it as "
                               "redis+sentinel://host:26379/master_name[/db].")
    db = int(parts[1]) if len(parts) > 1 else 0
    sentinel = Sentinel(hosts, socket_timeout=socket_timeout)
    return sentinel.master_for(parts[0], db=db, password=password, socket_timeout=socket_timeout, **options)


_PASSWORD_PARAMETER = re.compile(r"([?&]password=)[^&]*")


def redacted(url: str) -> str:
    """`url` without its password (for messages and logs): `redis://:***@host:6379/0`."""
    scheme, separator, rest = url.partition("://")
    netloc, slash, path = rest.partition("/")
    if "@" in netloc:
        userinfo, hosts = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0] if ":" in userinfo else ""
        netloc = f"{user}:***@{hosts}"
    return _PASSWORD_PARAMETER.sub(r"\1***", f"{scheme}{separator}{netloc}{slash}{path}")


def is_cluster(client: object) -> bool:
    return isinstance(client, RedisCluster)


def _split(url: str, rest: str) -> tuple[str | None, list[tuple[str, int]], str]:
    netloc, slash, path = rest.partition("/")
    password = None
    if "@" in netloc:
        userinfo, netloc = netloc.rsplit("@", 1)
        password = unquote(userinfo.split(":", 1)[1]) if ":" in userinfo else unquote(userinfo)
    hosts = []
    for part in netloc.split(","):
        host, _, port = part.rpartition(":")
        if not host or not port.isdigit():
            raise OnlineStoreError(f"Redis URL {redacted(url)!r}: {part!r} is not host:port.")
        hosts.append((host, int(port)))
    return password or None, hosts, path
