"""Notifications about failed runs and checks: a Slack-compatible webhook, or a log file.

`notifier_from_env()` picks the channel: `FEATURESTORE_NOTIFY_WEBHOOK` (a URL that accepts a
JSON POST with a `text` field, as Slack incoming webhooks do) or else `FEATURESTORE_NOTIFY_FILE`
(default `<data dir>/notifications.jsonl`, one JSON object per line). Any object with a
`send(Notification)` method can stand in for either.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

from feature_pipelines.errors import FeatureStoreError
from feature_pipelines.settings import Settings


@dataclass(frozen=True)
class Notification:
    title: str
    text: str
    details: dict[str, str] = field(default_factory=dict)
    at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat())

    def as_json(self) -> dict:
        """Slack reads `text`; other receivers get the structured fields too."""
        return {**asdict(self), "message": self.text, "text": f"*{self.title}*\n{self.text}"}


class Notifier(Protocol):
    def send(self, notification: Notification) -> None: ...


@dataclass(frozen=True)
class WebhookNotifier:
    url: str
    timeout_s: float = 10.0

    def send(self, notification: Notification) -> None:
        body = json.dumps(notification.as_json()).encode()
        request = urllib.request.Request(self.url, data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                response.read()
        except (urllib.error.URLError, OSError) as exc:
            raise FeatureStoreError(f"sending a notification to {self.url} failed: {exc}") from exc


@dataclass(frozen=True)
class FileNotifier:
    path: Path

    def send(self, notification: Notification) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as out:
            out.write(json.dumps(notification.as_json()) + "\n")


def notifier_from_env(settings: Settings | None = None) -> Notifier:
    url = os.environ.get("FEATURESTORE_NOTIFY_WEBHOOK", "").strip()
    if url:
        return WebhookNotifier(url)
    settings = settings or Settings.from_env()
    return FileNotifier(Path(os.environ.get("FEATURESTORE_NOTIFY_FILE", settings.data_dir / "notifications.jsonl")))
