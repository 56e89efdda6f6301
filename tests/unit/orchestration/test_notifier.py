"""Notifiers on their own: a file of JSON lines, and a webhook that cannot be reached."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from feature_pipelines.errors import FeatureStoreError
from feature_pipelines.orchestration.notifier import FileNotifier, Notification, WebhookNotifier


def test_file_notifier_appends_json_lines(tmp_path: Path) -> None:
    notifier = FileNotifier(tmp_path / "n" / "notifications.jsonl")
    notifier.send(Notification("a", "first"))
    notifier.send(Notification("b", "second", {"run_id": "r1"}))
    lines = [json.loads(line) for line in (tmp_path / "n" / "notifications.jsonl").read_text().splitlines()]
    assert [line["title"] for line in lines] == ["a", "b"] and lines[1]["details"] == {"run_id": "r1"}


def test_webhook_failure_is_a_clear_error() -> None:
    with pytest.raises(FeatureStoreError, match="sending a notification to http://127.0.0.1:9/x failed"):
        WebhookNotifier("http://127.0.0.1:9/x", timeout_s=2).send(Notification("t", "x"))

