"""A feature set's writer slot with real runs on a real instance: the repo's dagster.yaml gives
each feature set's pool one slot, claimed per step; a CLI run waiting for it names
the holder, idles, and stops cleanly on SIGINT, SIGTERM or --wait-timeout with nothing written;
it proceeds by itself once the holder finishes; a dead CLI run is failed and its slot freed by the
dead-run sensor while a daemon runs (and by the next command: test_faults.py kills a real one).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from dagster import DagsterInstance, DagsterRun, DagsterRunStatus, SkipReason, build_sensor_context
from dagster._core.instance.config import PoolGranularity

from feature_pipelines.errors import RunCanceledError
from feature_pipelines.faults import OFFLINE_MID_WRITE
from feature_pipelines.orchestration.assets import pool_name
from feature_pipelines.orchestration.code_location import build_definitions, materialize_job_name
from feature_pipelines.orchestration.dead_runs import DEAD_RUN_SENSOR
from feature_pipelines.orchestration.in_process import RecordedRun, record_run
from feature_pipelines.orchestration.run_process import RunProcess
from feature_pipelines.orchestration.runs import materialize_range
from feature_pipelines.orchestration.writer_slots import SlotWait, claim_writer_slot
from feature_pipelines.settings import Settings
from feature_pipelines.spec.catalog import load_catalog
from feature_pipelines.stores.offline.delta_store import DeltaOfflineStore
from feature_pipelines.stores.online.redis_store import RedisOnlineStore
from tests.helpers import PROJECT_DIR, dagster_env, offline_frame

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class CliProcess:
    """`featurestore ARGS` in its own process group, its output (stdout and stderr) collected."""

    def __init__(self, env: dict[str, str], *args: str):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "feature_pipelines.cli.commands", *args], env=env, cwd=PROJECT_DIR,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=lambda: self.lines.extend(self.process.stdout), daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_for(self, text: str, timeout_s: float) -> str:
        """The first output line containing `text`."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = next((line for line in list(self.lines) if text in line), None)
            if found:
                return found
            assert self.process.poll() is None, f"featurestore exited before printing {text!r}:\n{self.tail()}"
            time.sleep(0.1)
        raise AssertionError(f"featurestore did not print {text!r} within {timeout_s} s:\n{self.tail()}")

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process so far (/proc/<pid>/stat fields 14 and 15)."""
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def wait(self, timeout_s: float) -> int:
        try:
            code = self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"featurestore did not end within {timeout_s} s:\n{self.tail()}") from None
        self._reader.join(timeout=10)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.pid, signal.SIGKILL)  # with its Spark JVM
            self.process.wait(timeout=30)

    def output(self) -> str:
        return "".join(self.lines)

    def tail(self) -> str:
        return self.output()[-4000:]


@pytest.fixture()
def home(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment of CLI subprocesses; this process uses the same instance."""
    env = dagster_env(settings, tmp_path / "home")
    env.pop("FEATURESTORE_FAULT", None)
    monkeypatch.setenv("DAGSTER_HOME", env["DAGSTER_HOME"])
    return env


def transactions_run(instance: DagsterInstance, settings: Settings, process: RunProcess) -> RecordedRun:
    """A run of the transactions job recorded for `process`, not executed."""
    catalog = load_catalog(settings.feature_defs_dir)
    job = build_definitions(settings, catalog).resolve_job_def(materialize_job_name(catalog.get("transactions")))
    return record_run(job, instance, None, process.tags())


def holding_run(instance: DagsterInstance, settings: Settings, process: RunProcess) -> DagsterRun:
    """A run holding the transactions writer slot, as a CLI run does between claiming it and ending."""
    recorded = transactions_run(instance, settings, process)
    claim_writer_slot(instance, recorded.run, recorded.plan, SlotWait())
    return recorded.run


def test_the_instance_gives_each_feature_set_one_writer_slot(settings: Settings, home: dict[str, str]) -> None:
    """The repo's dagster.yaml (the one `home` holds): pools claimed per step, one slot each, so a
    second writer of the same feature set waits while the first holds the slot."""
    pool = pool_name(load_catalog(settings.feature_defs_dir).get("transactions"))
    with DagsterInstance.get() as instance:
        config = instance.event_log_storage.get_pool_config()
        assert (config.pool_granularity, config.default_pool_limit) == (PoolGranularity.OP, 1)
        first = holding_run(instance, settings, RunProcess.current())
        second = transactions_run(instance, settings, RunProcess.current())
        with pytest.raises(RunCanceledError, match=re.escape(
                f"gave up after 0 s waiting for the writer slot of feature set transactions (held by run {first.run_id})")):
            claim_writer_slot(instance, second.run, second.plan, SlotWait(timeout_s=0))
        info = instance.event_log_storage.get_concurrency_info(pool)
        assert info.slot_count == 1 and {s.run_id for s in info.claimed_slots} == {first.run_id}
        instance.event_log_storage.free_concurrency_slots_for_run(first.run_id)


STOPS = {"SIGINT": 130, "SIGTERM": 143, "--wait-timeout": 1}  # how each waiter is stopped: its exit code
WAIT_TIMEOUT_S = 10


def test_waiting_runs_name_the_holder_idle_and_stop_cleanly(spark, settings: Settings, home: dict[str, str]) -> None:
    """Three CLI runs wait behind one holder at once, and each is stopped one way: Ctrl-C,
    SIGTERM, or its own --wait-timeout."""
    catalog = load_catalog(settings.feature_defs_dir)
    transactions = catalog.get("transactions")
    offline = DeltaOfflineStore(settings.offline_uri)
    online = RedisOnlineStore.from_url(settings.redis_url)
    pool = pool_name(transactions)
    with DagsterInstance.get() as instance:
        materialize_range(build_definitions(settings, catalog), instance, transactions, "2024-01-01", "2024-01-02")
        tables = offline.open(transactions).delta.version(), offline_frame(offline, transactions), online.count(transactions)
        holder = holding_run(instance, settings, RunProcess.current())

        def waiter(stop: str) -> CliProcess:
            cli = CliProcess(home, "materialize", "transactions", "--start", "2024-01-02", "--end", "2024-01-04",
                             *(["--wait-timeout", str(WAIT_TIMEOUT_S)] if stop == "--wait-timeout" else []))
            clis[stop] = cli
            return cli

        def waiting(cli: CliProcess) -> None:
            said = cli.wait_for("waiting for the writer slot of feature set transactions", 120)
            assert (f"held by run {holder.run_id} (job materialize_transactions_v1, started " in said
                    and f"process {me} on this machine, alive). To cancel that run, press Ctrl-C in its terminal "
                        f"or run `kill {me}`." in said), said

        me, clis, codes, took = os.getpid(), {}, {}, {}
        try:
            # The signalled two start together; the third only once they wait, so that its own
            # timeout cannot run out while the other two are still starting.
            for cli in [waiter("SIGINT"), waiter("SIGTERM")]:
                waiting(cli)
            waiting(waiter("--wait-timeout"))
            # Waiting costs (almost) no CPU: a busy wait would take about 3 s of it here.
            before, start = {s: c.cpu_seconds() for s, c in clis.items()}, time.monotonic()
            time.sleep(3)
            for stop, cli in clis.items():
                cpu = (cli.cpu_seconds() - before[stop]) / (time.monotonic() - start)
                assert cpu < 0.1, f"the process waiting to be stopped by {stop} used {cpu:.0%} of a core"
            for stop, cli in clis.items():
                stopped = time.monotonic()
                if stop == "SIGINT":
                    os.killpg(cli.pid, signal.SIGINT)  # Ctrl-C reaches the terminal's whole process group
                elif stop == "SIGTERM":
                    os.kill(cli.pid, signal.SIGTERM)  # as `kill` or `timeout` sends it
                codes[stop] = cli.wait(WAIT_TIMEOUT_S + 30)
                took[stop] = time.monotonic() - stopped
        finally:
            for cli in clis.values():
                cli.kill()
        assert took["SIGINT"] < 10 and took["SIGTERM"] < 10, f"featurestore ended this long after the signal: {took}"
        assert codes == STOPS, {stop: cli.tail() for stop, cli in clis.items()}

        for stop, cli in clis.items():
            lines = [line.strip() for line in cli.lines if line.strip()]
            errors = [line for line in lines if line.startswith("error:")]
            assert len(errors) == 1 and lines[-1] == errors[0], cli.tail()
            assert not any("Traceback" in line or line.startswith('File "') for line in lines), cli.tail()
            waiter = next(r for r in instance.get_runs() if r.run_id != holder.run_id and r.run_id in errors[0])
            if stop == "--wait-timeout":
                assert errors[0] == (f"error: gave up after {WAIT_TIMEOUT_S} s waiting for the writer slot of feature set "
                                     f"transactions (held by run {holder.run_id}); run {waiter.run_id} canceled, nothing "
                                     "was written. Run it again once that run has finished, or let it wait longer "
                                     "(--wait-timeout).")
            else:
                assert errors[0] == (f"error: run {waiter.run_id} canceled by {stop} while it waited for the writer "
                                     "slot of feature set transactions; nothing was written.")
            assert waiter.status == DagsterRunStatus.CANCELED
        # Their claims are gone; the holder still holds the slot, and nothing was written.
        info = instance.event_log_storage.get_concurrency_info(pool)
        assert {s.run_id for s in info.claimed_slots} == {p.run_id for p in info.pending_steps} == {holder.run_id}
        version, frame, count = tables
        assert offline.open(transactions).delta.version() == version and online.count(transactions) == count
        assert offline_frame(offline, transactions).equals(frame)
        instance.event_log_storage.free_concurrency_slots_for_run(holder.run_id)


def test_a_waiting_run_proceeds_by_itself_once_the_holder_finishes(
        spark, settings: Settings, home: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    catalog = load_catalog(settings.feature_defs_dir)
    transactions = catalog.get("transactions")
    offline = DeltaOfflineStore(settings.offline_uri)
    marker = tmp_path / "fault"
    # The holder: a real materialization in this process, frozen mid-write while it holds the slot.
    monkeypatch.setenv("FEATURESTORE_FAULT", OFFLINE_MID_WRITE)
    monkeypatch.setenv("FEATURESTORE_FAULT_MARKER", str(marker))
    outcomes: list = []
    with DagsterInstance.get() as instance:
        defs = build_definitions(settings, catalog)
        holder = threading.Thread(target=lambda: outcomes.append(
            materialize_range(defs, instance, transactions, "2024-01-01", "2024-01-03")), daemon=True)
        holder.start()
        deadline = time.monotonic() + 180
        while not marker.exists():
            assert holder.is_alive() and time.monotonic() < deadline, "the holder never reached its fault point"
            time.sleep(0.1)

        cli = CliProcess(home, "materialize", "transactions", "--start", "2024-01-03", "--end", "2024-01-05")
        try:
            said = cli.wait_for("waiting for the writer slot of feature set transactions", 120)
            assert f"process {os.getpid()} on this machine, alive" in said
            marker.unlink()  # the holder goes on, commits, publishes and ends
            holder.join(timeout=120)
            code = cli.wait(180)
        finally:
            cli.kill()
        assert code == 0, cli.tail()
        assert "transactions_v1: 3 window(s)" in cli.output()
        first, second = (instance.get_run_record_by_id(outcomes[0].run_id),
                         next(r for r in instance.get_run_records() if r.dagster_run.run_id != outcomes[0].run_id))
        assert first.dagster_run.status == second.dagster_run.status == DagsterRunStatus.SUCCESS
        assert second.start_time >= first.end_time  # one writer at a time
    assert sorted(offline.materialized_windows(transactions)) == [f"2024-01-0{d}" for d in range(1, 6)]
    rows = offline.open(transactions).read().to_pandas()
    assert not rows.duplicated(subset=[*transactions.entity_names, transactions.timestamp]).any()


def test_the_dead_run_sensor_fails_dead_cli_runs_of_this_machine_and_frees_their_slots(
        settings: Settings, home: dict[str, str]) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead_process = RunProcess.of(child.pid)
    child.kill()
    child.wait()
    me = RunProcess.current()
    pool = pool_name(load_catalog(settings.feature_defs_dir).get("transactions"))
    sensor = build_definitions(settings).resolve_sensor_def(DEAD_RUN_SENSOR)
    with DagsterInstance.get() as instance:
        dead = holding_run(instance, settings, dead_process)
        # A live run queued behind it, and one from another container of this host (its pid means nothing here).
        recorded = transactions_run(instance, settings, me)
        alive, step = recorded.run, recorded.plan.get_steps_to_execute_in_topo_order()[0].key
        assert not instance.event_log_storage.claim_concurrency_slot(pool, alive.run_id, step).is_claimed
        elsewhere = transactions_run(instance, settings, replace(me, machine="another-boot/pid:[4026539999]")).run

        result = sensor(build_sensor_context(instance=instance))

        assert isinstance(result, SkipReason)
        assert result.skip_message == (f"run {dead.run_id} (materialize_transactions_v1) was killed (its process "
                                       f"{dead_process.pid} on this machine, gone): marked it failed and freed its "
                                       "writer slots.")
        assert instance.get_run_by_id(dead.run_id).status == DagsterRunStatus.FAILURE
        assert instance.get_run_by_id(alive.run_id).status == DagsterRunStatus.STARTED
        assert instance.get_run_by_id(elsewhere.run_id).status == DagsterRunStatus.STARTED
        # The slot went to the run queued behind the dead one.
        assert instance.event_log_storage.claim_concurrency_slot(pool, alive.run_id, step).is_claimed
        # Nothing else to do on the next tick.
        assert "no featurestore run" in sensor(build_sensor_context(instance=instance)).skip_message
