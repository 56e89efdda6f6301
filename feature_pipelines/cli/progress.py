"""A progress line per materialization run: windows done, rows and seconds.

A line says what the run does when it starts, and one gives the result when it ends. On a
terminal, the result's line is a bar until then, redrawn in place as the run moves on and every
half second, so the seconds keep counting while Spark computes; not on other outputs (a pipe, a
log file), nor with --verbose, when Dagster's own log lines share the screen.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
from types import TracebackType
from typing import TextIO

import click

from feature_pipelines.orchestration.runs import RunProgress

_BAR = 20
_TICK_S = 0.5


def live_output() -> bool:
    """Whether stdout is a terminal, where a line can be redrawn in place."""
    return click.get_text_stream("stdout").isatty()


class ProgressLine:
    """The progress of one run of feature set `key`, introduced by `label` (what the run does):
    pass `update` as the run's progress callback, inside the `with` block that runs it."""

    def __init__(self, key: str, label: str, windows: int, live: bool):
        self._key = key
        self._label = label
        self._progress = RunProgress(key, windows)
        self._live = live
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self._terminal: TextIO | None = None

    def __enter__(self) -> ProgressLine:
        click.echo(f"{self._label} ...")
        if not self._live:
            return self
        # The run captures this process's stdout (file descriptor 1) into its compute log, which
        # the UI shows: draw on a copy of the terminal's descriptor, which the capture leaves alone.
        sys.stdout.flush()
        self._terminal = os.fdopen(os.dup(sys.stdout.fileno()), "w")
        self._draw()
        self._ticker = threading.Thread(target=self._tick, name="progress", daemon=True)
        self._ticker.start()
        return self

    def update(self, progress: RunProgress) -> None:
        with self._lock:
            self._progress = progress
        if self._live:
            self._draw()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        with self._lock:
            p = self._progress
            if kind is not None:
                result = f"failed after {p.elapsed_s:.1f} s"
            else:
                result = f"{p.windows_done}/{p.windows} windows, {p.rows or 0} rows, {p.elapsed_s:.1f} s"
                if p.failed_checks:
                    result += f"; failed check(s): {', '.join(p.failed_checks)} (see the asset's Checks tab)"
            if self._terminal is None:
                click.echo(f"{self._key}: {result}")
                return
            # The bar gives way to the result.
            click.echo(f"\r\033[K{self._key}: {result}", file=self._terminal)
            self._terminal.close()

    def _tick(self) -> None:
        while not self._stop.wait(_TICK_S):
            self._draw()

    def _draw(self) -> None:
        with self._lock:
            p = self._progress
            filled = _BAR * p.windows_done // max(p.windows, 1)
            line = (f"{self._key} [{'#' * filled}{'-' * (_BAR - filled)}] {p.windows_done}/{p.windows} windows, "
                    f"{p.step}, {p.elapsed_s:.0f} s")
            # One screen line at most: a wrapped line cannot be redrawn in place.
            width = shutil.get_terminal_size().columns - 1
            assert self._terminal is not None
            self._terminal.write(f"\r\033[K{line[:width]}")
            self._terminal.flush()
