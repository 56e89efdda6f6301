"""Run the stream processor as a process: connect, then process micro-batches until SIGTERM or
SIGINT, which let the micro-batch in hand finish (acknowledged, so none is redone) before it exits."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Sequence

from feature_pipelines.errors import FeatureStoreError
from feature_pipelines.spec.catalog import Catalog
from feature_pipelines.stores.online.redis_store import RedisOnlineStore
from feature_pipelines.streaming.log import RedisStreamLog
from feature_pipelines.streaming.metrics import StreamMetrics
from feature_pipelines.streaming.processor import StreamConfig, StreamProcessor


def run_processor(catalog: Catalog, redis_url: str, source_root: str, source_options: dict[str, str] | None,
                  config: StreamConfig, sources: Sequence[str] = (), log_every_s: float = 10.0) -> None:
    """Process the streamed sources of `catalog` (or `sources`) until a signal stops it."""
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    online = RedisOnlineStore.from_url(redis_url)
    events = RedisStreamLog.from_url(redis_url)
    metrics = StreamMetrics(events.client, config.group, interval_s=log_every_s)
    processor = StreamProcessor(catalog, events, online, source_root, source_options, config, metrics, sources)
    if not processor.sources:
        raise FeatureStoreError("no feature set streams: set materialization=Materialization(stream=True) on one "
                                "(its source also needs event_id=...), then start the processor again.")
    stop = threading.Event()

    def finish(signum: int, _frame: object) -> None:
        logging.getLogger("featurestore.stream").info("%s: finishing the micro-batch in hand, then exiting",
                                                      signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, finish)
    signal.signal(signal.SIGINT, finish)
    names = ", ".join(s.source.name for s in processor.sources)
    logging.getLogger("featurestore.stream").info(
        "stream processor %s of group %s: sources %s", processor.consumer, config.group, names)
    processor.run(stop)
