"""Schedules, the source sensor and the failure notifier, against a real Dagster instance."""

from __future__ import annotations

import json
import shutil
import threading
from dataclasses import replace
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from dagster import (
    DagsterEventType,
    Definitions,
    RunRequest,
    SkipReason,
    build_run_status_sensor_context,
    build_schedule_context,
    build_sensor_context,
    define_asset_job,
    instance_for_test,
    job,
    op,
)
from deltalake import DeltaTable, write_deltalake

from feature_pipelines.orchestration.assets import RANGE_END_TAG, RANGE_START_TAG, feature_set_assets
from feature_pipelines.orchestration.partitions import partitions_def
from feature_pipelines.orchestration.automation import failure_sensor, feature_set_schedule, source_run_requests, source_sensor
from feature_pipelines.spec.catalog import load_catalog
from feature_pipelines.orchestration.code_location import build_definitions, materialize_job_name
from feature_pipelines.stores.offline.delta_files import read_delta
from feature_pipelines.errors import SpecError
from feature_pipelines.orchestration.resources import build_resources
from feature_pipelines.orchestration.notifier import WebhookNotifier
from feature_pipelines.settings import Settings
from feature_pipelines.spec.feature_set import Materialization
from tests.helpers import PROJECT_DIR

UTC = timezone.utc
CATALOG = load_catalog(PROJECT_DIR / "feature_defs")


def _job(settings: Settings, name: str):
    defs = build_definitions(settings, CATALOG)
    return defs, defs.resolve_job_def(materialize_job_name(CATALOG.get(name)))


def test_daily_schedule_requests_the_last_complete_window_after_the_delay(settings: Settings) -> None:
    defs = build_definitions(settings, CATALOG)
    schedule = defs.resolve_schedule_def("transactions_v1_schedule")
    # transactions: daily windows, materialization.delay 1h -> the tick at 01:00 UTC.
    assert schedule.cron_schedule == "0 1 * * *"
    with instance_for_test() as instance:
        context = build_schedule_context(instance=instance, scheduled_execution_time=datetime(2024, 2, 3, 1, 0, tzinfo=UTC))
        requests = schedule.evaluate_tick(context).run_requests
    assert [r.partition_key for r in requests] == ["2024-02-02"]


def test_hourly_schedule_and_default_status_follow_the_spec(settings: Settings) -> None:
    accounts = CATALOG.get("accounts")
    hourly = replace(accounts, partitions=replace(accounts.partitions, cadence="hourly"),
                     materialization=Materialization(delay="15m", schedule_enabled=True))
    hourly_job = define_asset_job("hourly", selection=[hourly.key], partitions_def=partitions_def(hourly))
    defs = Definitions(
        assets=feature_set_assets(hourly, None, settings.offline_uri), jobs=[hourly_job],
        schedules=[feature_set_schedule(hourly, hourly_job)], resources=build_resources(settings),
    )
    schedule = defs.resolve_schedule_def("accounts_v1_schedule")
    assert schedule.cron_schedule == "15 * * * *" and schedule.default_status.value == "RUNNING"
    with instance_for_test() as instance:
        context = build_schedule_context(instance=instance, scheduled_execution_time=datetime(2024, 2, 3, 7, 15, tzinfo=UTC))
        requests = schedule.evaluate_tick(context).run_requests
    assert [r.partition_key for r in requests] == ["2024-02-03-06:00"]
    with pytest.raises(SpecError, match="materialization.delay 25h must be shorter than one day"):
        replace(accounts, materialization=Materialization(delay="25h"))


def _copy_sources(sample_sources: str, tmp_path: Path) -> str:
    root = tmp_path / "sources"
    shutil.copytree(sample_sources, root)
    return str(root)


def test_source_sensor_requests_exactly_the_windows_late_rows_touch(settings: Settings, sample_sources: str, tmp_path: Path) -> None:
    settings = replace(settings, source_root=_copy_sources(sample_sources, tmp_path))
    merchants = CATALOG.get("merchants")  # source_lookback 1 day, daily windows
    now = datetime(2024, 3, 1, tzinfo=UTC)

    with instance_for_test() as instance:
        defs, job_def = _job(settings, "merchants")
        sensor_def = source_sensor(merchants, job_def, settings)
        context = build_sensor_context(instance=instance, cursor=None, definitions=defs)
        first = source_run_requests(merchants, settings, None, now, context)
        assert isinstance(first, SkipReason) and "first tick" in first.skip_message
        cursor = context.cursor

        # Late rows for 2024-01-05 (and one for 2024-01-20) arrive in a new source version.
        path = f"{settings.source_root}/transactions"
        existing = read_delta(DeltaTable(path))
        late = existing.slice(0, 3).to_pandas()
        late["transaction_id"] = ["late-1", "late-2", "late-3"]
        late["event_time"] = pd.to_datetime(["2024-01-05 10:00:00", "2024-01-05 23:59:59", "2024-01-20 00:00:00"], utc=True)
        late["event_date"] = late["event_time"].dt.strftime("%Y-%m-%d")
        write_deltalake(path, pa.Table.from_pandas(late, schema=existing.schema, preserve_index=False), mode="append",
                        partition_by=["event_date"])

        context = build_sensor_context(instance=instance, cursor=cursor, definitions=defs)
        requests = source_run_requests(merchants, settings, cursor, now, context)
        # merchants reads no lookback: each late file touches its own day only.
        assert isinstance(requests, list) and all(isinstance(r, RunRequest) for r in requests)
        assert [(r.tags[RANGE_START_TAG], r.tags[RANGE_END_TAG]) for r in requests] == [
            ("2024-01-05", "2024-01-05"), ("2024-01-20", "2024-01-20"),
        ]
        # transactions reads 30 days back: 01-05 reaches 02-04 and 01-20 reaches 02-19, one range.
        rolling = source_run_requests(CATALOG.get("transactions"), settings, cursor, now)
        assert [(r.tags[RANGE_START_TAG], r.tags[RANGE_END_TAG]) for r in rolling] == [("2024-01-05", "2024-02-19")]
        # Nothing again on the next tick.
        again = source_run_requests(merchants, settings, context.cursor, now, build_sensor_context(instance=instance))
        assert isinstance(again, SkipReason) and "no new version" in again.skip_message
        # The sensor definition itself runs the same code and moves its cursor.
        result = sensor_def.evaluate_tick(build_sensor_context(instance=instance, cursor=cursor, definitions=defs))
        assert len(result.run_requests) == 2 and json.loads(result.cursor)["version"] > json.loads(cursor)["version"]


class _Receiver(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server API)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Receiver.received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args) -> None:
        pass


@op
def _explode() -> None:
    raise RuntimeError("source table unreadable")


@job
def failing_job() -> None:
    _explode()


def test_failure_sensor_posts_to_a_webhook_on_loopback() -> None:
    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Receiver.received.clear()
    try:
        url = f"http://127.0.0.1:{server.server_port}/hook"
        sensor_def = failure_sensor(WebhookNotifier(url))
        with instance_for_test() as instance:
            result = failing_job.execute_in_process(instance=instance, raise_on_error=False)
            assert not result.success
            run = instance.get_run_by_id(result.run_id)
            event = next(e for e in instance.all_logs(result.run_id, of_type=DagsterEventType.RUN_FAILURE))
            context = build_run_status_sensor_context(
                sensor_name=sensor_def.name, dagster_instance=instance, dagster_run=run, dagster_event=event.dagster_event,
            ).for_run_failure()
            sensor_def(context)
    finally:
        server.shutdown()
    assert len(_Receiver.received) == 1
    payload = _Receiver.received[0]
    assert payload["title"] == "Run failed: failing_job" and payload["details"]["run_id"] == result.run_id
    assert payload["text"].startswith("*Run failed: failing_job*") and "source table unreadable" in payload["text"]
