"""A run's process, as recorded in its tags: alive, gone (exited, a zombie, or its pid reused), or
on another machine, where its pid means nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import replace

import pytest

from feature_pipelines.orchestration import run_process
from feature_pipelines.orchestration.run_process import HOST_TAG, Liveness, RunProcess


def test_this_process_is_alive_and_its_tags_round_trip() -> None:
    me = RunProcess.current()
    assert me.pid == os.getpid() and me.machine and me.start
    assert RunProcess.from_tags({**me.tags(), "dagster/partition": "x"}) == me
    assert me.liveness() is Liveness.ALIVE


def test_a_run_without_process_tags_has_no_process() -> None:
    assert RunProcess.from_tags({"dagster/backfill": "abc"}) is None
    assert RunProcess.from_tags({HOST_TAG: "h", "featurestore/pid": "not a pid"}) is None


def test_an_exited_process_is_gone_even_before_its_parent_collects_it() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    process = RunProcess.of(child.pid)
    assert process.liveness() is Liveness.ALIVE
    child.kill()
    deadline = time.monotonic() + 10
    while run_process._stat_fields(child.pid)[0] != "Z":  # killed, not yet waited for: a zombie
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert process.liveness() is Liveness.GONE
    child.wait()
    assert process.liveness() is Liveness.GONE


def test_a_reused_pid_is_not_the_run_s_process() -> None:
    # Same pid, another start time: the run's process ended and a new one got its pid.
    assert replace(RunProcess.current(), start="1").liveness() is Liveness.GONE


def test_a_process_of_another_machine_or_container_cannot_be_judged() -> None:
    other = replace(RunProcess.current(), host="elsewhere", machine="another-boot/pid:[4026531999]")
    assert other.liveness() is Liveness.UNKNOWN
    assert other.describe(Liveness.UNKNOWN) == f"process {other.pid} on host elsewhere, not visible from here"


def test_without_proc_the_host_name_and_kill_0_decide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run_process, "this_machine", lambda: "")
    me = RunProcess.current()
    assert me.machine == "" and me.tags()["featurestore/process"] == ""
    assert RunProcess.from_tags(me.tags()) == me
    assert me.liveness() is Liveness.ALIVE
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert replace(me, pid=child.pid).liveness() is Liveness.GONE
    assert replace(me, host="elsewhere").liveness() is Liveness.UNKNOWN
