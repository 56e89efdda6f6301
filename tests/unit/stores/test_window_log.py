"""The window log caught up from the table's commits, on real Delta tables written by delta-rs
(no Spark): a writer killed between its commit and its log entry, deletes, upkeep commits, and
commits that the log cleanup removed from history."""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from feature_pipelines.stores.offline.delta_store import DeltaOfflineStore
from feature_pipelines.stores.offline.upkeep import maintain_table
from feature_pipelines.stores.offline.window_log import (
    CHECKS_FAILED, CHECKS_PASSED, CHECKS_PENDING, LOG_SCHEMA, WindowLog, latest_entries,
)
from tests.factories import feature_set

SCORES = feature_set("scores")


class Killed(BaseException):
    """The process dies: nothing after this point runs."""


def rows(day: str, count: int) -> pa.RecordBatch:
    at = datetime.fromisoformat(day).replace(tzinfo=timezone.utc)
    return pa.RecordBatch.from_pydict({
        "user_id": [f"u{i}" for i in range(count)], "ts": [at + timedelta(hours=1)] * count,
        "x": [float(i) for i in range(count)], "window_key": [day] * count, "created": [at] * count,
    })


def write(store: DeltaOfflineStore, counts: dict[str, int], run_id: str = "run", rows_known: bool = True) -> int:
    return store.open(SCORES).replace_windows(
        [rows(day, n) for day, n in counts.items() if n], list(counts), {"run_id": run_id},
        counts if rows_known else None)


def killed_before_the_log(monkeypatch: pytest.MonkeyPatch, action) -> None:
    """Run `action` as a process killed right after its Delta commit, before the window log."""
    def die(*args, **kwargs) -> None:
        raise Killed()

    monkeypatch.setattr(WindowLog, "sync", die)
    with pytest.raises(Killed):
        action()
    monkeypatch.undo()


def history_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    original = DeltaTable.history

    def counted(self, limit=None):
        calls.append(limit)
        return original(self, limit)

    monkeypatch.setattr(DeltaTable, "history", counted)
    return calls


def summary(store: DeltaOfflineStore) -> dict[str, tuple[int, str | None, str]]:
    return {k: (e["rows"], e.get("checks"), e["run_id"]) for k, e in store.materialized_windows(SCORES).items()}


@pytest.fixture()
def store(tmp_path: Path) -> DeltaOfflineStore:
    return DeltaOfflineStore(str(tmp_path / "offline"))


def test_windows_committed_by_a_run_killed_before_its_log_entry_count_as_materialized_pending(
        store: DeltaOfflineStore, monkeypatch: pytest.MonkeyPatch) -> None:
    write(store, {"2024-01-01": 3, "2024-01-02": 2}, "first")
    store.record_checks(SCORES, ["2024-01-01", "2024-01-02"])
    # Rewrites 01-02 (checked before) with new rows, adds 01-03 and the empty 01-04.
    killed_before_the_log(monkeypatch, lambda: write(store, {"2024-01-02": 4, "2024-01-03": 1, "2024-01-04": 0}, "killed"))

    assert summary(store) == {
        "2024-01-01": (3, CHECKS_PASSED, "first"), "2024-01-02": (4, CHECKS_PENDING, "killed"),
        "2024-01-03": (1, CHECKS_PENDING, "killed"), "2024-01-04": (0, CHECKS_PENDING, "killed"),
    }
    assert store.publishable_windows(SCORES) == ["2024-01-01"]  # the killed run's windows are not checked
    assert store.materialized_windows(SCORES)["2024-01-02"]["table_version"] == store.open(SCORES).delta.version()
    # The catch-up is in the log now: later reads compare one version and read no history.
    reads = history_reads(monkeypatch)
    assert summary(store)["2024-01-03"] == (1, CHECKS_PENDING, "killed") and reads == []
    store.record_checks(SCORES, ["2024-01-02", "2024-01-03", "2024-01-04"])
    assert store.publishable_windows(SCORES) == ["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04"]


def test_the_next_write_logs_a_commit_whose_log_entry_was_lost(
        store: DeltaOfflineStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """No reader in between: the next run's log entry must not hide the earlier commit."""
    write(store, {"2024-01-01": 3}, "first")
    killed_before_the_log(monkeypatch, lambda: write(store, {"2024-01-02": 2}, "killed"))
    write(store, {"2024-01-03": 5}, "next")
    entries = WindowLog(store.window_log_uri(SCORES)).windows(None)  # the log as written, nothing derived
    assert {k: (e["rows"], e["checks"], e["run_id"]) for k, e in entries.items()} == {
        "2024-01-01": (3, CHECKS_PENDING, "first"), "2024-01-02": (2, CHECKS_PENDING, "killed"),
        "2024-01-03": (5, CHECKS_PENDING, "next")}


def test_commits_that_name_no_window_are_read_once(store: DeltaOfflineStore, monkeypatch: pytest.MonkeyPatch) -> None:
    write(store, {"2024-01-01": 3, "2024-01-02": 2})
    write(store, {"2024-01-02": 2})
    before = store.materialized_windows(SCORES)
    maintain_table(store.table_uri(SCORES), retention_hours=0)  # compaction and vacuum commits
    version = store.open(SCORES).delta.version()
    reads = history_reads(monkeypatch)
    assert store.materialized_windows(SCORES) == before and len(reads) == 1
    assert store.materialized_windows(SCORES) == before and len(reads) == 1
    log = WindowLog(store.window_log_uri(SCORES))._rows()
    assert max(r["table_version"] for r in log) == version  # a mark row: read up to there


def test_deleted_windows_read_missing_even_when_killed_before_the_log(
        store: DeltaOfflineStore, monkeypatch: pytest.MonkeyPatch) -> None:
    write(store, {"2024-01-01": 3, "2024-01-02": 0, "2024-01-03": 2})
    store.open(SCORES).delete_windows(["2024-01-03"])
    assert sorted(store.materialized_windows(SCORES)) == ["2024-01-01", "2024-01-02"]
    killed_before_the_log(monkeypatch, lambda: store.open(SCORES).delete_windows(["2024-01-01", "2024-01-02"]))
    assert store.materialized_windows(SCORES) == {} and store.open(SCORES).window_keys() == []
    write(store, {"2024-01-02": 1})
    assert summary(store) == {"2024-01-02": (1, CHECKS_PENDING, "run")}


def test_a_delete_of_the_whole_table_empties_the_log(store: DeltaOfflineStore) -> None:
    """Retiring a version on an object store deletes its log, then every row of its table (a
    DELETE naming no window): a crash in between, or a reader after it, lists no window."""
    write(store, {"2024-01-01": 3, "2024-01-02": 0})
    DeltaTable(store.table_uri(SCORES)).delete()
    assert store.materialized_windows(SCORES) == {}
    shutil.rmtree(store.window_log_uri(SCORES))
    assert store.materialized_windows(SCORES) == {} and not DeltaTable.is_deltatable(store.window_log_uri(SCORES))


def test_commits_removed_from_history_are_found_in_the_table_files(
        store: DeltaOfflineStore, monkeypatch: pytest.MonkeyPatch) -> None:
    write(store, {"2024-01-01": 3})
    table = DeltaTable(store.table_uri(SCORES))
    table.alter.set_table_properties({"delta.logRetentionDuration": "interval 0 seconds"}, raise_if_not_exists=False)
    killed_before_the_log(monkeypatch, lambda: write(store, {"2024-01-02": 4}, "killed"))
    table = DeltaTable(store.table_uri(SCORES))
    table.alter.set_table_properties({"delta.appendOnly": "false"}, raise_if_not_exists=False)  # one more commit
    table = DeltaTable(store.table_uri(SCORES))
    table.create_checkpoint()
    table.cleanup_metadata()  # the killed run's commit is no longer in the table's history
    assert [c["version"] for c in DeltaTable(store.table_uri(SCORES)).history()] == [table.version()]

    assert summary(store) == {"2024-01-01": (3, CHECKS_PENDING, "run"), "2024-01-02": (4, CHECKS_PENDING, "")}


def test_row_counts_left_out_of_a_commit_are_counted_from_its_files(store: DeltaOfflineStore) -> None:
    write(store, {"2024-01-01": 3, "2024-01-02": 0}, rows_known=False)
    assert summary(store) == {"2024-01-01": (3, CHECKS_PENDING, "run"), "2024-01-02": (0, CHECKS_PENDING, "run")}


def test_a_verdict_outranks_pending_at_the_same_table_version() -> None:
    """A reader catching up appends `pending` for a commit; a writer's verdict on that commit
    may land before it."""
    at = datetime(2024, 1, 1, tzinfo=timezone.utc)
    entry = {"window_key": "2024-01-01", "rows": 3, "run_id": "r"}
    rows = [{**entry, "table_version": 2, "checks": CHECKS_PASSED, "materialized_at": at},
            {**entry, "table_version": 2, "checks": CHECKS_PENDING, "materialized_at": at + timedelta(seconds=1)},
            {"window_key": None, "rows": 0, "run_id": "", "table_version": 2, "checks": None, "materialized_at": at}]
    assert latest_entries(rows) == {"2024-01-01": rows[0]}
    rows.append({**entry, "table_version": 3, "checks": CHECKS_PENDING, "materialized_at": at})
    assert latest_entries(rows)["2024-01-01"]["checks"] == CHECKS_PENDING  # newer data: not checked yet


def test_a_commit_landing_while_the_history_is_read_keeps_the_versions_right(
        store: DeltaOfflineStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """deltalake numbers history entries down from the version the table object holds: a commit
    made meanwhile by another writer would shift every number by one."""
    write(store, {"2024-01-01": 3})
    killed_before_the_log(monkeypatch, lambda: write(store, {"2024-01-02": 2}, "killed"))
    killed = DeltaTable(store.table_uri(SCORES)).version()
    original = DeltaTable.history

    def with_a_commit_meanwhile(self, limit=None):
        monkeypatch.setattr(DeltaTable, "history", original)
        DeltaTable(store.table_uri(SCORES)).alter.set_table_properties(
            {"delta.appendOnly": "false"}, raise_if_not_exists=False)
        return original(self, limit)

    monkeypatch.setattr(DeltaTable, "history", with_a_commit_meanwhile)
    assert store.materialized_windows(SCORES)["2024-01-02"]["table_version"] == killed


def test_a_failed_verdict_names_its_checks_until_a_passing_rewrite_replaces_it(store: DeltaOfflineStore) -> None:
    write(store, {"2024-01-01": 3, "2024-01-02": 2, "2024-01-03": 1}, "bad")
    store.record_checks(SCORES, ["2024-01-01", "2024-01-02", "2024-01-03"],
                        {"2024-01-02": ["row_count_in_band", "expectations"], "2024-01-03": ["expectations"]})
    logged = store.materialized_windows(SCORES)
    assert {k: (e["checks"], e.get("failed_checks")) for k, e in logged.items()} == {
        "2024-01-01": (CHECKS_PASSED, None), "2024-01-02": (CHECKS_FAILED, ["row_count_in_band", "expectations"]),
        "2024-01-03": (CHECKS_FAILED, ["expectations"])}
    assert store.publishable_windows(SCORES) == ["2024-01-01"]

    write(store, {"2024-01-02": 2}, "fixed")  # re-materialized: pending until its checks ran, then passed
    assert store.materialized_windows(SCORES)["2024-01-02"]["checks"] == CHECKS_PENDING
    assert store.materialized_windows(SCORES)["2024-01-02"].get("failed_checks") is None
    store.record_checks(SCORES, ["2024-01-02"])
    logged = store.materialized_windows(SCORES)
    assert (logged["2024-01-02"]["checks"], logged["2024-01-02"]["failed_checks"]) == (CHECKS_PASSED, None)
    assert logged["2024-01-03"]["failed_checks"] == ["expectations"]
    assert store.publishable_windows(SCORES) == ["2024-01-01", "2024-01-02"]


def test_a_log_written_before_failed_checks_were_recorded_still_reads(store: DeltaOfflineStore) -> None:
    """Its failed verdicts have no names (an empty list); the next verdict adds the column."""
    write(store, {"2024-01-01": 3, "2024-01-02": 2}, "old")
    store.sync_window_log(SCORES)
    old_schema = pa.schema([f for f in LOG_SCHEMA if f.name != "failed_checks"])
    at = datetime(2024, 1, 5, tzinfo=timezone.utc)
    rows = [{"window_key": k, "rows": n, "table_version": store.open(SCORES).delta.version(), "run_id": "old",
             "materialized_at": at, "checks": CHECKS_FAILED} for k, n in (("2024-01-01", 3), ("2024-01-02", 2))]
    shutil.rmtree(store.window_log_uri(SCORES))
    write_deltalake(store.window_log_uri(SCORES), pa.Table.from_pylist(rows, old_schema))
    assert {k: e["failed_checks"] for k, e in store.materialized_windows(SCORES).items()} == {
        "2024-01-01": [], "2024-01-02": []}
    store.record_checks(SCORES, ["2024-01-01", "2024-01-02"], {"2024-01-02": ["keys_unique_and_not_null"]})
    assert {k: (e["checks"], e["failed_checks"]) for k, e in store.materialized_windows(SCORES).items()} == {
        "2024-01-01": (CHECKS_PASSED, None), "2024-01-02": (CHECKS_FAILED, ["keys_unique_and_not_null"])}
