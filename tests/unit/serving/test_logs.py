"""The access log: one JSON line per request, written in batches off the request's path."""

from __future__ import annotations

import asyncio
import io
import json
import time

from feature_pipelines.serving.logs import ACCESS_LOGGER, AccessLog


def _lines(stream: io.BytesIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_lines_are_buffered_then_written_within_the_flush_interval() -> None:
    stream = io.BytesIO()
    log = AccessLog(stream)

    async def serve() -> float:
        for i in range(3):
            log.write("POST /features/fraud_model 200", {"request_id": f"r{i}", "status": 200, "token": None})
        assert stream.getvalue() == b""  # no write per request
        began = time.monotonic()
        while not stream.getvalue():
            assert time.monotonic() - began < 5, "the buffered lines were never written"
            await asyncio.sleep(0.005)
        return time.monotonic() - began

    waited = asyncio.run(serve())
    assert waited < 1
    lines = _lines(stream)
    assert [line["request_id"] for line in lines] == ["r0", "r1", "r2"]
    assert {k: lines[0][k] for k in ("level", "logger", "message", "status", "token")} == {
        "level": "info", "logger": ACCESS_LOGGER, "message": "POST /features/fraud_model 200", "status": 200,
        "token": None}
    assert lines[0]["time"].endswith("+00:00")


def test_a_full_batch_is_written_at_once_and_a_broken_stdout_fails_no_request() -> None:
    stream = io.BytesIO()
    log = AccessLog(stream)

    async def serve() -> None:
        for i in range(AccessLog.BATCH):
            log.write("GET /health 200", {"request_id": str(i)})
        assert len(_lines(stream)) == AccessLog.BATCH  # without waiting for the interval

    asyncio.run(serve())
    log.write("GET /health 200", {"request_id": "outside a loop"})  # nothing would flush later: written now
    assert _lines(stream)[-1]["request_id"] == "outside a loop"
    stream.close()
    log.write("GET /health 200", {"request_id": "lost"})  # a closed stream: the line is lost, nothing raises
    log.flush()
