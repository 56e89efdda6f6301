"""Fault points: named places where the fault-injection tests freeze a process, to kill it or to
break something around it at exactly that moment. Inert unless FEATURESTORE_FAULT names the
point (one environment lookup per call).

When the point is reached, the process writes its pid to FEATURESTORE_FAULT_MARKER and waits
until that file is removed; each marker fires once (a retry passes through).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

OFFLINE_MID_WRITE = "offline.mid_write"  # data files are (being) written, nothing is committed
OFFLINE_AFTER_COMMIT = "offline.after_commit"  # the windows are committed, the window log not yet
ONLINE_BEFORE_PUBLISH = "online.before_publish"  # offline committed and checked, Redis untouched
ONLINE_MID_PUBLISH = "online.mid_publish"  # rows read from Delta, before a chunk goes to Redis
STREAM_BEFORE_STATE_WRITE = "stream.before_state_write"  # rolling states read and merged, not written
STREAM_AFTER_ONLINE = "stream.after_online"  # a micro-batch is online, not in the Delta source yet
STREAM_AFTER_APPEND = "stream.after_append"  # online and in the Delta source, not acknowledged


def fault_point(name: str) -> None:
    if os.environ.get("FEATURESTORE_FAULT") != name:
        return
    marker = Path(os.environ["FEATURESTORE_FAULT_MARKER"])
    fired = marker.with_name(marker.name + ".fired")
    if fired.exists():
        return
    fired.touch()
    marker.write_text(str(os.getpid()))
    while marker.exists():
        time.sleep(0.05)
