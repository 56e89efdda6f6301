"""Redis URLs in messages and logs: every form, without its password."""

from __future__ import annotations

import pytest

from feature_pipelines.stores.online.connection import redacted


@pytest.mark.parametrize("url, shown", [
    ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ("redis://:s3cret@cache:6379/0", "redis://:***@cache:6379/0"),
    ("rediss://app:s3cret@cache:6380/2", "rediss://app:***@cache:6380/2"),
    ("redis+cluster://:s3cret@h1:7000,h2:7001", "redis+cluster://:***@h1:7000,h2:7001"),
    ("redis+sentinel://:s3cret@h1:26379,h2:26379/features/0", "redis+sentinel://:***@h1:26379,h2:26379/features/0"),
    ("redis://cache:6379/0?password=s3cret&socket_timeout=1", "redis://cache:6379/0?password=***&socket_timeout=1"),
    ("unix:///run/redis.sock?db=1", "unix:///run/redis.sock?db=1"),
])
def test_passwords_are_hidden(url: str, shown: str) -> None:
    assert redacted(url) == shown and "s3cret" not in redacted(url)
