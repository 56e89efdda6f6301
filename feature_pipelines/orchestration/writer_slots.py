"""A run waits for its feature set's writer slot civilly, before Dagster executes it.

Writers of one feature set are serialized by its concurrency pool (`feature_set_<name>`, limit 1,
claimed per step). Left to Dagster, an in-process run waits for a blocked step in its executor
loop, which never sleeps (`InstanceConcurrencyContext.interval_to_next_pending_claim_check` is
never positive, so `ActiveExecution.sleep_til_ready` does not sleep: a core at 100%), ignores
SIGINT and SIGTERM (`capture_interrupts` only raises them inside a step) and says so at DEBUG.

So `claim_writer_slot` claims the slot of the run's first pooled step itself, before execution,
through Dagster's own queue (the pending-steps table: first come first served, safe with any
number of waiters); Dagster's claim for that step then finds it granted. While it waits it says
who holds the slot, sleeps between polls, fails a holder whose process is gone (dead_runs.py),
and ends on SIGINT, SIGTERM, its timeout or a cancel from the UI with the run canceled and its
claims freed. Once granted, the run's later pooled steps (the online publish) are queued ahead of
other runs, so the executor never waits between its own steps.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from types import FrameType

from dagster import DagsterInstance, DagsterRun, DagsterRunStatus
from dagster._core.execution.plan.plan import ExecutionPlan
from dagster._core.instance.config import PoolGranularity
from dagster._core.storage.tags import PRIORITY_TAG

from feature_pipelines.errors import RunCanceledError
from feature_pipelines.orchestration.assets import POOL_PREFIX
from feature_pipelines.orchestration.dead_runs import reap_if_dead
from feature_pipelines.orchestration.run_process import Liveness, RunProcess

FIRST_POLL_S, MAX_POLL_S = 0.25, 2.0
# Priority of a run's later pooled steps once it holds the slot: above any run's first step.
FOLLOW_UP_PRIORITY = 1_000_000


def _quiet(message: str) -> None:
    pass


@dataclass(frozen=True)
class SlotWait:
    """How a run waits for its writer slot: at most `timeout_s` seconds (None: as long as it
    takes), telling `say` who holds the slot."""

    timeout_s: float | None = None
    say: Callable[[str], None] = _quiet


@dataclass(frozen=True)
class Holder:
    """The run that holds (or is next to get) the slot."""

    run_id: str
    job_name: str | None  # None: the run is no longer in the instance
    started: datetime | None
    ended: str | None  # its status once it has ended
    process: RunProcess | None  # None: not started by the featurestore CLI
    liveness: Liveness | None


def poll_delays() -> Iterator[float]:
    """Seconds between polls: fast at first (a slot freed just now), then every MAX_POLL_S."""
    delay = FIRST_POLL_S
    while True:
        yield delay
        delay = min(delay * 1.5, MAX_POLL_S)


def pool_label(pool: str) -> str:
    return f"feature set {pool.removeprefix(POOL_PREFIX)}" if pool.startswith(POOL_PREFIX) else f"pool {pool}"


def wait_message(pool: str, holder: Holder | None, queued_ahead: int) -> str:
    """What a waiting run says: who holds the slot, how to cancel that run, and this one."""
    label = pool_label(pool)
    if holder is None:
        return (f"waiting for the writer slot of {label}, behind {queued_ahead} queued step(s) of other runs. "
                "This run starts by itself once the slot is free; Ctrl-C cancels it.")
    if holder.job_name is None:
        details = "no longer in the instance"
        cancel = f"free its slot in the Dagster UI (Deployment > Concurrency > {pool})"
    else:
        when = f", started {holder.started:%Y-%m-%d %H:%M:%S} UTC" if holder.started else ""
        if holder.process is None:
            details = f"job {holder.job_name}{when}, not started by featurestore"
            cancel = f"terminate it in the Dagster UI (Runs > {holder.run_id} > Terminate)"
        else:
            details = f"job {holder.job_name}{when}, {holder.process.describe(holder.liveness or Liveness.UNKNOWN)}"
            where = "" if holder.liveness is Liveness.ALIVE else f" on host {holder.process.host}"
            cancel = f"press Ctrl-C in its terminal or run `kill {holder.process.pid}`{where}"
        if holder.ended:
            details += f", ended {holder.ended}"
            cancel = ("wait: Dagster's daemon frees the slots of an ended run a minute later "
                      "(run_monitoring.free_slots_after_run_end_seconds)") if holder.process is None else cancel
    return (f"waiting for the writer slot of {label}, held by run {holder.run_id} ({details}). "
            f"To cancel that run, {cancel}. This run starts by itself once the slot is free; Ctrl-C cancels it.")


def claim_writer_slot(instance: DagsterInstance, run: DagsterRun, plan: ExecutionPlan, wait: SlotWait) -> None:
    """Claim the slot of `run`'s first pooled step in Dagster's queue, waiting civilly (see the
    module docstring); then queue its later pooled steps right behind it. Raises RunCanceledError,
    with the run canceled and its claims freed, on SIGINT, SIGTERM, the timeout or a cancel from
    outside. Does nothing for a job without pooled steps, or with steps in several pools (Dagster's
    executor claims those itself)."""
    pooled = [(step.key, step.pool, _priority(step.tags)) for step in plan.get_steps_to_execute_in_topo_order()
              if step.pool]
    pools = {pool for _, pool, _ in pooled}
    if len(pools) != 1 or not _limited(instance, next(iter(pools))):
        return
    pool = pools.pop()
    (first, _, step_priority), *later = pooled
    with _signals_raise():
        try:
            _claim_first(instance, run, pool, first, _priority(run.tags) + step_priority, wait)
            storage = instance.event_log_storage
            for rank, (key, _, _) in enumerate(later):
                storage.claim_concurrency_slot(pool, run.run_id, key, FOLLOW_UP_PRIORITY + len(later) - rank)
        except _Interrupted as interrupted:
            name = signal.Signals(interrupted.signum).name
            _cancel(instance, run, f"run {run.run_id} canceled by {name} while it waited for the writer slot of "
                                   f"{pool_label(pool)}; nothing was written.", 128 + interrupted.signum)


def _claim_first(instance: DagsterInstance, run: DagsterRun, pool: str, step_key: str, priority: int,
                 wait: SlotWait) -> None:
    storage = instance.event_log_storage
    deadline = None if wait.timeout_s is None else time.monotonic() + wait.timeout_s
    delays = poll_delays()
    told: object = ()  # the holder last told about (its run id, or None for "behind the queue")
    while not storage.claim_concurrency_slot(pool, run.run_id, step_key, priority).is_claimed:
        holder, holder_run, queued_ahead = _holder(instance, pool, run.run_id)
        if holder_run is not None and holder is not None and holder.liveness is Liveness.GONE:
            reaped = reap_if_dead(instance, holder_run)
            if reaped is not None:
                wait.say(reaped.describe())
                continue
        if (holder.run_id if holder else None) != told:
            message = wait_message(pool, holder, queued_ahead)
            wait.say(message)
            instance.report_engine_event(message, run)
            told = holder.run_id if holder else None
        _stop_if_ended_elsewhere(instance, run, pool)
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            held = f" (held by run {holder.run_id})" if holder else ""
            _cancel(instance, run, f"gave up after {wait.timeout_s:g} s waiting for the writer slot of {pool_label(pool)}"
                                   f"{held}; run {run.run_id} canceled, nothing was written. Run it again once that run "
                                   "has finished, or let it wait longer (--wait-timeout).", 1)
        time.sleep(next(delays) if remaining is None else min(next(delays), remaining))


def _holder(instance: DagsterInstance, pool: str, run_id: str) -> tuple[Holder | None, DagsterRun | None, int]:
    """The run holding the slot (or the one it is assigned to next), its record, and how many
    steps of other runs are queued for the pool."""
    info = instance.event_log_storage.get_concurrency_info(pool)
    others = [p for p in info.pending_steps if p.run_id != run_id]
    holders = [s.run_id for s in info.claimed_slots if s.run_id != run_id] or \
              [p.run_id for p in others if p.assigned_timestamp is not None]
    if not holders:
        return None, None, len(others)
    record = instance.get_run_record_by_id(holders[0])
    if record is None:
        return Holder(holders[0], None, None, None, None, None), None, len(others)
    run = record.dagster_run
    process = RunProcess.from_tags(run.tags)
    started = record.start_time or record.create_timestamp.timestamp()
    holder = Holder(
        run_id=run.run_id, job_name=run.job_name, started=datetime.fromtimestamp(started, timezone.utc),
        ended=run.status.value if run.is_finished else None, process=process,
        liveness=process.liveness() if process else None,
    )
    return holder, run, len(others)


def _stop_if_ended_elsewhere(instance: DagsterInstance, run: DagsterRun, pool: str) -> None:
    """A waiting run canceled from the UI (or ended by anyone else) stops waiting."""
    current = instance.get_run_by_id(run.run_id)
    if current is not None and current.status == DagsterRunStatus.STARTED:
        return
    status = current.status.value if current else "deleted"
    message = (f"run {run.run_id} was {status} from outside (the Dagster UI?) while it waited for the writer "
               f"slot of {pool_label(pool)}; nothing was written.")
    with _signals_ignored():
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        if current is not None and current.status == DagsterRunStatus.CANCELING:
            instance.report_run_canceled(current, message)
    raise RunCanceledError(message)


def _cancel(instance: DagsterInstance, run: DagsterRun, message: str, exit_code: int) -> None:
    """Free what the run claimed or queued for, mark it canceled, and raise."""
    with _signals_ignored():  # a second Ctrl-C must not leave a half-canceled run
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        instance.report_run_canceled(run, message)
    raise RunCanceledError(message, exit_code)


def _limited(instance: DagsterInstance, pool: str) -> bool:
    """Whether Dagster's executor would claim `pool` per step: it does when the instance has
    pool limits at op granularity and the pool has a limit (set from the default, as Dagster's
    own claim does)."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return False
    config = storage.get_pool_config()
    if config.pool_granularity == PoolGranularity.RUN:
        return False
    limit = next((p for p in storage.get_pool_limits() if p.name == pool), None)
    default = config.default_pool_limit
    if (limit is None and default is not None) or (limit is not None and limit.from_default and limit.limit != default):
        storage.initialize_concurrency_limit_to_default(pool)
        limit = next((p for p in storage.get_pool_limits() if p.name == pool), None)
    return limit is not None


def _priority(tags: dict[str, str]) -> int:
    try:
        return int(tags.get(PRIORITY_TAG, "0"))
    except ValueError:
        return 0


class _Interrupted(BaseException):
    """SIGINT or SIGTERM while waiting (a BaseException, so no `except Exception` swallows it)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


@contextmanager
def _signals_raise() -> Iterator[None]:
    """SIGINT and SIGTERM raise _Interrupted in the block (main thread only: elsewhere Python
    cannot set handlers, and the process's own handlers apply)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise _Interrupted(signum)

    with _handlers(interrupt):
        yield


@contextmanager
def _signals_ignored() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    with _handlers(signal.SIG_IGN):
        yield


@contextmanager
def _handlers(handler: Callable | signal.Handlers) -> Iterator[None]:
    previous = {signum: signal.signal(signum, handler) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old if old is not None else signal.SIG_DFL)
