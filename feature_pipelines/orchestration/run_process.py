"""The process that executes an in-process run, recorded in the run's tags, and whether it is alive.

A run executed in process (the `featurestore` CLI) has no run worker for Dagster's run monitoring
to watch: when its process is killed the run stays STARTED. So the CLI records who runs it, and
whoever can see that process (a later CLI command, the dead-run sensor) can tell that it is gone.

A process is known by its pid and its start time (a reused pid has another start time), within
one boot of one machine and one pid namespace (a container has its own): only there does its
pid mean anything. Without /proc (not Linux) the host name and `kill(pid, 0)` stand in.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

HOST_TAG = "featurestore/host"
PID_TAG = "featurestore/pid"
PROCESS_TAG = "featurestore/process"  # `<boot id>/<pid namespace>/<start ticks>`, or "" without /proc


class Liveness(Enum):
    ALIVE = "alive"
    GONE = "gone"
    UNKNOWN = "unknown"  # another machine or container: its pid means nothing here


@dataclass(frozen=True)
class RunProcess:
    host: str
    pid: int
    machine: str  # boot id and pid namespace; "" without /proc
    start: str  # start time in clock ticks since boot; "" without /proc

    @classmethod
    def current(cls) -> RunProcess:
        return cls.of(os.getpid())

    @classmethod
    def of(cls, pid: int) -> RunProcess:
        """The running process `pid` of this machine."""
        machine = this_machine()
        fields = _stat_fields(pid) if machine else None
        return cls(host=socket.gethostname(), pid=pid, machine=machine, start=fields[19] if fields else "")

    def tags(self) -> dict[str, str]:
        return {HOST_TAG: self.host, PID_TAG: str(self.pid),
                PROCESS_TAG: f"{self.machine}/{self.start}" if self.machine else ""}

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> RunProcess | None:
        """The process recorded in a run's tags; None for runs the CLI did not start."""
        if HOST_TAG not in tags or not tags.get(PID_TAG, "").isdigit():
            return None
        machine, _, start = tags.get(PROCESS_TAG, "").rpartition("/")
        return cls(host=tags[HOST_TAG], pid=int(tags[PID_TAG]), machine=machine, start=start)

    def liveness(self) -> Liveness:
        """Whether the process still runs, seen from this process's machine and pid namespace."""
        here = this_machine()
        if here or self.machine:
            if self.machine != here:
                return Liveness.UNKNOWN
            fields = _stat_fields(self.pid)
            # A zombie has exited (its parent has not collected it yet); another start time means
            # the pid was reused by a new process.
            alive = fields is not None and fields[0] not in ("Z", "X") and fields[19] == self.start
            return Liveness.ALIVE if alive else Liveness.GONE
        if self.host != socket.gethostname():
            return Liveness.UNKNOWN
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return Liveness.GONE
        except PermissionError:
            pass  # it exists, owned by another user
        return Liveness.ALIVE

    def describe(self, liveness: Liveness) -> str:
        where = "this machine" if liveness is not Liveness.UNKNOWN else f"host {self.host}"
        state = {Liveness.ALIVE: "alive", Liveness.GONE: "gone",
                 Liveness.UNKNOWN: "not visible from here"}[liveness]
        return f"process {self.pid} on {where}, {state}"


def this_machine() -> str:
    """This boot of this machine and this process's pid namespace; "" without /proc."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""
    return f"{boot}/{namespace}"


def _stat_fields(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/<pid>/stat (state first, start time at index 19); None if no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may itself contain spaces or parentheses.
    return stat[stat.rindex(")") + 2:].split()
