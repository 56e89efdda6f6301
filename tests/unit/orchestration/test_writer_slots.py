"""The pure parts of waiting for a writer slot: the poll back-off and what the waiting run says."""

from __future__ import annotations

from datetime import datetime, timezone
from itertools import islice

from feature_pipelines.orchestration.run_process import Liveness, RunProcess
from feature_pipelines.orchestration.writer_slots import (
    FIRST_POLL_S,
    MAX_POLL_S,
    Holder,
    pool_label,
    poll_delays,
    wait_message,
)

STARTED = datetime(2024, 5, 1, 10, 2, 3, tzinfo=timezone.utc)
CLI_RUN = RunProcess(host="worker-1", pid=4242, machine="boot/pid:[1]", start="99")


def test_polls_start_fast_and_settle_at_the_maximum() -> None:
    delays = list(islice(poll_delays(), 30))
    assert delays[0] == FIRST_POLL_S
    assert delays == sorted(delays) and max(delays) == MAX_POLL_S
    assert delays.index(MAX_POLL_S) < 8  # a slot freed after a minute is taken within MAX_POLL_S
    assert sum(delays[:10]) < 15


def test_pools_are_named_by_their_feature_set() -> None:
    assert pool_label("feature_set_transactions") == "feature set transactions"
    assert pool_label("warehouse") == "pool warehouse"


def test_a_cli_holder_on_this_machine_is_named_with_its_job_start_process_and_how_to_stop_it() -> None:
    holder = Holder("3f2a9c1e-run", "materialize_transactions_v1", STARTED, None, CLI_RUN, Liveness.ALIVE)
    assert wait_message("feature_set_transactions", holder, 1) == (
        "waiting for the writer slot of feature set transactions, held by run 3f2a9c1e-run "
        "(job materialize_transactions_v1, started 2024-05-01 10:02:03 UTC, process 4242 on this machine, alive). "
        "To cancel that run, press Ctrl-C in its terminal or run `kill 4242`. "
        "This run starts by itself once the slot is free; Ctrl-C cancels it."
    )


def test_a_cli_holder_elsewhere_is_stopped_on_its_host() -> None:
    holder = Holder("r1", "materialize_transactions_v1", STARTED, None, CLI_RUN, Liveness.UNKNOWN)
    message = wait_message("feature_set_transactions", holder, 1)
    assert "process 4242 on host worker-1, not visible from here" in message
    assert "run `kill 4242` on host worker-1." in message


def test_a_holder_the_cli_did_not_start_is_terminated_in_the_ui() -> None:
    holder = Holder("r2", "materialize_transactions_v1", STARTED, None, None, None)
    message = wait_message("feature_set_transactions", holder, 1)
    assert "(job materialize_transactions_v1, started 2024-05-01 10:02:03 UTC, not started by featurestore)" in message
    assert "To cancel that run, terminate it in the Dagster UI (Runs > r2 > Terminate)." in message


def test_an_ended_holder_and_a_deleted_one_say_what_frees_the_slot() -> None:
    ended = wait_message("feature_set_x", Holder("r3", "materialize_x_v1", STARTED, "FAILURE", None, None), 1)
    assert "ended FAILURE" in ended and "Dagster's daemon frees the slots of an ended run a minute later" in ended
    deleted = wait_message("feature_set_x", Holder("r4", None, None, None, None, None), 1)
    assert "held by run r4 (no longer in the instance)" in deleted
    assert "Deployment > Concurrency > feature_set_x" in deleted


def test_without_a_holder_the_queue_ahead_is_counted() -> None:
    assert wait_message("feature_set_x", None, 2).startswith(
        "waiting for the writer slot of feature set x, behind 2 queued step(s) of other runs.")
