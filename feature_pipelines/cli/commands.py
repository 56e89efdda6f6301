"""The `featurestore` command line: sample data, materialization and the local demo.

The group builds one `Workspace` per invocation (settings, catalog, stores, retrieval specs, each
on first use) and hands it to every command as `click`'s context object.
"""

from __future__ import annotations

import os
import sys
import tempfile
import traceback
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from feature_pipelines.cli.workspace import Workspace
from feature_pipelines.errors import inline, user_error

if TYPE_CHECKING:
    from datetime import datetime

    from dagster import DagsterInstance, Definitions

    from feature_pipelines.cli.sample_data import SampleSize
    from feature_pipelines.orchestration.runs import RunOutcome
    from feature_pipelines.orchestration.writer_slots import SlotWait
    from feature_pipelines.spec.feature_set import FeatureSet


def _friendly(command: Callable[..., Any]) -> Callable[..., Any]:
    """Errors as one line on stderr, `error: ...`, and exit 1; a traceback only with --debug.

    An error the user caused is a FeatureStoreError, also when a Dagster run raised it (Dagster
    wraps it): its message says what, where and how to fix. Anything else is unexpected: one line
    naming it and a file holding its traceback, so an operator keeps what a bug report needs
    without rerunning (`--debug` prints it instead). click's own usage errors pass through."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (click.ClickException, click.exceptions.Abort, click.exceptions.Exit):
            raise
        except Exception as exc:
            debug = bool(click.get_current_context().find_root().params.get("debug"))
            if debug:
                traceback.print_exc()
            error = user_error(exc)
            if error is not None:
                click.secho(f"error: {error}", fg="red", err=True)
                sys.exit(getattr(error, "exit_code", 1))  # a run canceled by a signal exits 128 + its number
            click.secho(f"error: {_unexpected(exc, debug)}", fg="red", err=True)
            sys.exit(1)

    return wrapper


def _unexpected(exc: Exception, debug: bool) -> str:
    """One line for an error that is not the user's: its innermost cause, and where the traceback is."""
    root: BaseException = exc
    seen = {id(root)}
    while root.__cause__ is not None and id(root.__cause__) not in seen:  # Dagster's wrappers say less than what they wrap
        root = root.__cause__
        seen.add(id(root))
    what = f"unexpected {type(root).__name__}" + (f": {inline(root)[:300]}" if str(root).strip() else "")
    if debug:
        return f"{what}. The traceback is above; report it if this is a bug."
    try:
        fd, path = tempfile.mkstemp(prefix="featurestore-error-", suffix=".txt")
        with os.fdopen(fd, "w") as file:
            traceback.print_exception(exc, file=file)
    except OSError:
        return f"{what}. Rerun with --debug to print the traceback; report it if this is a bug."
    return f"{what}. The traceback is in {path} (rerun with --debug to print it); report it if this is a bug."


class _Featurestore(click.Group):
    """The command group. Run as its process's own command line (`main()` without arguments: the
    console script, `python -m feature_pipelines.cli`), a read-only command that succeeded ends
    the process at once: Python's teardown once Dagster is loaded takes 0.2-0.5 s, a quarter of
    `featurestore status`, and such a command has nothing left to release (its instance and tables
    are closed; the output is flushed first). Called with arguments, as click's CliRunner does, it
    returns as usual."""

    READ_ONLY = ("status", "describe")
    _whole_process = False

    def main(self, args: Any = None, *more: Any, **kwargs: Any) -> Any:
        self._whole_process = args is None
        return super().main(args, *more, **kwargs)

    def invoke(self, ctx: click.Context) -> Any:
        result = super().invoke(ctx)
        if self._whole_process and ctx.invoked_subcommand in self.READ_ONLY:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
        return result


@click.group(cls=_Featurestore)
@click.option("--debug", is_flag=True, help="Show Python tracebacks on errors.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Feature store on Dagster: define feature sets in feature_defs/, then materialize and serve them."""
    # A new workspace per invocation: settings come from the environment as it is now.
    ctx.obj = Workspace()


def _sample_options(min_days: int) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The options that pin the sample data: scale, days, seed and last day."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        command = click.option("--end", type=click.DateTime(formats=["%Y-%m-%d"]), default=None,
                               help="Last day of the sample, e.g. 2024-02-29 (default: yesterday, the last "
                                    "complete day in UTC).")(command)
        command = click.option("--seed", type=int, default=7, show_default=True)(command)
        command = click.option("--days", type=click.IntRange(min=min_days), default=60, show_default=True,
                               help=f"Days of sample data, ending with --end (at least {min_days}).")(command)
        return click.option("--scale", type=click.IntRange(min=100), default=20_000, show_default=True,
                            help="Number of transactions to generate (accounts and merchants grow with it).")(command)

    return decorate


def _sample(scale: int, days: int, seed: int, end: datetime | None) -> SampleSize:
    """The sample the options describe; the same options give the same data on any day once
    --end is given."""
    from feature_pipelines.cli.sample_data import SampleSize, sample_end
    from feature_pipelines.clock import utc_now

    return SampleSize.for_scale(scale, end=sample_end(end.date() if end else None, utc_now()), days=days, seed=seed)


@main.command()
@_sample_options(min_days=1)
@click.pass_obj
@_friendly
def generate(workspace: Workspace, scale: int, days: int, seed: int, end: datetime | None) -> None:
    """Write the example source tables (transactions, accounts) as Delta under the data folder."""
    from feature_pipelines.cli.sample_data import generate_sample_data

    source_root = workspace.settings.source_root
    sample = _sample(scale, days, seed, end)
    counts = generate_sample_data(source_root, sample)
    for name, rows in counts.items():
        click.echo(f"source {name}: {rows} rows, {sample.first_day}..{sample.end} -> {source_root}/{name}")


def _verbose_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--verbose", is_flag=True,
        help="Print Dagster's full run logs (every event) too. Without it the console shows progress and "
             "results only; the full logs are in the Dagster instance either way (the run's page in the UI).")(command)


def _wait_timeout_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--wait-timeout", type=click.FloatRange(min=0), default=None, metavar="S",
        help="Give up (run canceled, nothing written) after waiting S seconds for a feature set's writer slot "
             "while another run writes it (default: wait as long as it takes).")(command)


@main.command()
@click.argument("name", metavar="FEATURE_SET")
@click.option("--start", required=True, help="First window key, e.g. 2024-01-01 (hourly: 2024-01-01-05:00).")
@click.option("--end", required=True, help="Last window key, included.")
@click.option("--version", type=int, default=None, help="Feature set version (default: latest).")
@_wait_timeout_option
@_verbose_option
@click.pass_obj
@_friendly
def materialize(workspace: Workspace, name: str, start: str, end: str, version: int | None,
                wait_timeout: float | None, verbose: bool) -> None:
    """Materialize windows START..END of FEATURE_SET in one Dagster run.

    While another run writes FEATURE_SET, this one waits for its writer slot and says which run
    holds it; Ctrl-C cancels it."""
    feature_set = workspace.feature_set(name, version)
    workspace.check_source(feature_set)  # a bad source records no run
    defs = workspace.definitions()
    with workspace.online_server(), workspace.dagster_instance() as instance:
        outcome = _materialize_with_progress(defs, instance, feature_set, start, end, "materializing", wait_timeout,
                                             verbose)
    _print_outcome(feature_set.key, outcome)


def _materialize_with_progress(defs: Definitions, instance: DagsterInstance, feature_set: FeatureSet, first: str,
                               last: str, verb: str, wait_timeout: float | None, verbose: bool) -> RunOutcome:
    """Windows `first..last` in one run, with a progress line; Dagster's log lines only when `verbose`."""
    from feature_pipelines.cli.progress import ProgressLine, live_output
    from feature_pipelines.orchestration.runs import materialize_range
    from feature_pipelines.planning.windows import windows_between

    windows = windows_between(feature_set, first, last)
    label = f"{verb} {feature_set.key}: {windows[0].key} .. {windows[-1].key} in one run"
    with ProgressLine(feature_set.key, label, len(windows), live=live_output() and not verbose) as line:
        return materialize_range(defs, instance, feature_set, first, last, _slot_wait(wait_timeout),
                                 quiet=not verbose, progress=line.update)


def _slot_wait(timeout_s: float | None) -> SlotWait:
    """How a CLI run waits for its writer slot: printing who holds it on stderr."""
    from feature_pipelines.orchestration.writer_slots import SlotWait

    return SlotWait(timeout_s=timeout_s, say=lambda message: click.secho(message, fg="yellow", err=True))


@main.command()
@click.argument("name", metavar="FEATURE_SET")
@click.option("--start", required=True, help="First window key, e.g. 2024-01-01 (hourly: 2024-01-01-05:00).")
@click.option("--end", required=True, help="Last window key, included.")
@click.option("--version", type=int, default=None, help="Feature set version (default: latest).")
@click.option("--only-missing", is_flag=True, help="Only windows not yet in the offline store.")
@click.option("--failed", is_flag=True, help="Only windows whose last Dagster attempt failed.")
@click.option("--force", is_flag=True, help="Skip the check that the source already holds data for the windows.")
@click.option("--wait/--no-wait", default=False, show_default=True, help="Follow the backfill until it ends.")
@click.option("--timeout", type=float, default=None, help="With --wait: give up waiting after this many seconds.")
@click.pass_obj
@_friendly
def backfill(workspace: Workspace, name: str, start: str, end: str, version: int | None, only_missing: bool,
             failed: bool, force: bool, wait: bool, timeout: float | None) -> None:
    """Submit a Dagster asset backfill of windows START..END of FEATURE_SET; the daemon runs it.

    It shows under Backfills in the Dagster UI. Each contiguous range of windows runs as one
    run (one Spark job). With --wait, exits 1 if any window failed.
    """
    from feature_pipelines.clock import utc_now
    from feature_pipelines.orchestration.backfills import daemon_running, submit_backfill, wait_for_backfill
    from feature_pipelines.orchestration.window_states import window_run_states
    from feature_pipelines.planning.source_changes import latest_event
    from feature_pipelines.planning.window_selection import check_source_reaches, check_windows_closed, select_windows
    from feature_pipelines.planning.windows import describe_keys, windows_between

    feature_set = workspace.feature_set(name, version)
    windows = windows_between(feature_set, start, end)
    with workspace.dagster_instance() as instance:
        # Each filter reads only what it needs: the window log, or the runs on the instance.
        keys = select_windows(
            windows,
            materialized=workspace.offline.materialized_windows(feature_set) if only_missing else {},
            run_states=window_run_states(instance, feature_set, windows) if failed else {},
            only_missing=only_missing, failed=failed,
        )
        if not keys:
            click.echo(f"{feature_set.key}: nothing to backfill in {start}..{end}"
                       + (" (every window is materialized)" if only_missing and not failed else ""))
            return
        workspace.check_source(feature_set)  # a source every run would fail on is refused here
        if not force:
            check_windows_closed(feature_set, keys, utc_now())
            check_source_reaches(feature_set, keys, latest_event(workspace.source_files(feature_set)))
        defs = workspace.definitions()
        backfill_id = submit_backfill(instance, defs, feature_set, keys)
        click.echo(f"submitted backfill {backfill_id}: {feature_set.key}, {len(keys)} window(s) "
                   f"{describe_keys(keys, feature_set)}")
        if not daemon_running(instance):
            click.secho("warning: no dagster-daemon is running on this instance; start `dagster-daemon run` "
                        "(or `dagster dev`) with the same DAGSTER_HOME to run it.", fg="yellow", err=True)
        if not wait:
            return
        progress = wait_for_backfill(instance, defs, backfill_id, feature_set, lambda p: click.echo(p.describe()),
                                     timeout_s=timeout)
    if not progress.succeeded:
        raise click.ClickException(f"backfill {backfill_id} ended {progress.status} with {progress.failed} failed window(s)")


@main.command()
@click.argument("name", metavar="[FEATURE_SET]", required=False)
@click.option("--version", type=int, default=None, help="Feature set version (default: latest).")
@click.option("--start", default=None, help="First window key (default: the first window).")
@click.option("--end", default=None, help="Last window key (default: the last complete window).")
@click.option("--all", "show_all", is_flag=True, help="List every window (default: counts, and the other windows as ranges).")
@click.pass_obj
@_friendly
def status(workspace: Workspace, name: str | None, version: int | None, start: str | None, end: str | None,
           show_all: bool) -> None:
    """Per-window status of feature sets: materialized, missing, failed, quarantined (a blocking
    quality check failed; the checks are named), in progress, stale or no source data (the source
    has no events for the window: nothing to compute, not behind)."""
    from feature_pipelines.clock import utc_now
    from feature_pipelines.orchestration.window_states import feature_set_statuses
    from feature_pipelines.planning.window_status import STATUSES, describe_status

    feature_sets = [workspace.feature_set(name, version)] if name else list(workspace.catalog)
    settings = workspace.settings
    now = utc_now()
    with workspace.dagster_instance() as instance:
        for feature_set in feature_sets:
            rows = feature_set_statuses(instance, feature_set, workspace.offline, settings.source_root,
                                        settings.source_storage_options, now, start, end)
            counts = {s: sum(1 for r in rows if r.status == s) for s in STATUSES}
            click.echo(f"{feature_set.key}: {len(rows)} window(s): "
                       + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
            if not show_all:
                # Compact: the windows of each non-materialized status, as ranges.
                for state in STATUSES[1:]:
                    if counts[state]:
                        click.echo(f"  {state}: {describe_status(rows, state, feature_set)}")
                continue
            click.echo(f"  {'window':<17}{'status':<16}{'rows':>9}  materialized at (UTC)")
            for row in rows:
                when = row.materialized_at.strftime("%Y-%m-%d %H:%M:%S") if row.materialized_at else "-"
                failed = f"  failed {', '.join(row.failed_checks)}" if row.failed_checks else ""
                click.echo(f"  {row.key:<17}{row.status:<16}{(row.rows if row.rows is not None else '-'):>9}  {when}"
                           f"{failed}")


@main.command()
@click.argument("name", metavar="FEATURE_SET")
@click.option("--version", type=int, required=True, help="The version to retire.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
@_friendly
def retire(workspace: Workspace, name: str, version: int, yes: bool) -> None:
    """Delete a feature set version from the offline and online stores, and its assets' history
    from the Dagster instance (the UI stops listing them), for good.

    Remove its declaration from feature_defs/ (and from retrieval specs) first."""
    from feature_pipelines.orchestration.asset_history import recorded_assets, wipe_history
    from feature_pipelines.spec.feature_set import VersionRef
    from feature_pipelines.stores.online.redis_store import RedisOnlineStore
    from feature_pipelines.stores.retire import plan_retirement, retire as retire_version

    ref = VersionRef(name, version)
    with workspace.online_server() as url, workspace.dagster_instance() as instance:
        online = RedisOnlineStore.from_url(url, socket_timeout=30)
        assets = recorded_assets(instance, ref)
        plan = plan_retirement(ref, workspace.catalog, workspace.retrieval_specs, workspace.offline, online,
                               asset_history=[key.to_user_string() for key in assets])
        click.echo(f"retiring deletes {plan.summary()}")
        if not yes and not click.confirm("delete them?", default=False):
            click.echo("nothing deleted")
            sys.exit(1)
        deleted = retire_version(plan, workspace.offline, online, forget_history=lambda: wipe_history(instance, assets))
    wiped = f", the asset history of {', '.join(plan.asset_history)}" if plan.asset_history else ""
    click.echo(f"retired {name} v{version}: {deleted} online value(s){wiped} and the offline table deleted")


@main.command("list")
@click.pass_obj
@_friendly
def list_feature_sets(workspace: Workspace) -> None:
    """Every feature set version in the catalog, a line each; then the versions the offline store
    holds that no file declares, each with the command that retires it."""
    from feature_pipelines.cli.catalog_view import undeclared_versions

    _print_table(list(workspace.catalog))
    undeclared = undeclared_versions(workspace.catalog, workspace.offline)
    if undeclared:
        click.echo(f"\nstored, but declared in no file of {workspace.settings.feature_defs_dir}:")
        for version in undeclared:
            click.echo(f"  {version.describe()}")


@main.command("search")
@click.argument("query")
@click.pass_obj
@_friendly
def search_feature_sets(workspace: Workspace, query: str) -> None:
    """Feature sets whose name, description, tags, owners, entities or features contain QUERY."""
    from feature_pipelines.cli.catalog_view import search

    found = search(workspace.catalog, query)
    if not found:
        click.echo(f"no feature set matches {query!r}")
        return
    _print_table([feature_set for feature_set, _ in found],
                 matched={feature_set.key: hits for feature_set, hits in found})


@main.command("describe")
@click.argument("name", metavar="FEATURE_SET")
@click.option("--version", type=int, default=None, help="Feature set version (default: latest).")
@click.pass_obj
@_friendly
def describe_feature_set(workspace: Workspace, name: str, version: int | None) -> None:
    """The spec, versions, materialized windows, freshness, last runs and users of FEATURE_SET."""
    from feature_pipelines.cli.catalog_view import describe, render
    from feature_pipelines.clock import utc_now
    from feature_pipelines.orchestration.window_states import feature_set_statuses

    feature_set = workspace.feature_set(name, version)
    settings = workspace.settings
    with workspace.dagster_instance() as instance:
        statuses = feature_set_statuses(instance, feature_set, workspace.offline, settings.source_root,
                                        settings.source_storage_options, utc_now())
        click.echo(render(describe(feature_set, workspace.catalog, statuses, instance, workspace.retrieval_specs)))


def _print_table(feature_sets: list, matched: dict[str, list[str]] | None = None) -> None:
    rows = [
        (feature_set.key, ",".join(e.name for e in feature_set.entities),
         feature_set.partitions.cadence + ("+stream" if feature_set.materialization.stream else ""),
         str(len(feature_set.features)), ",".join(feature_set.owners),
         ", ".join(matched[feature_set.key]) if matched else feature_set.description)
        for feature_set in feature_sets
    ]
    header = ("feature set", "entities", "cadence", "features", "owners", "matched in" if matched else "description")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1])


@main.command()
@_sample_options(min_days=30)
@_wait_timeout_option
@_verbose_option
@click.pass_obj
@_friendly
def demo(workspace: Workspace, scale: int, days: int, seed: int, end: datetime | None,
         wait_timeout: float | None, verbose: bool) -> None:
    """Generate sample data up to yesterday, backfill every feature set over all its days, publish
    online, summarize."""
    from datetime import timedelta

    from feature_pipelines.cli.sample_data import generate_sample_data, write_sample_entities, write_sample_observations
    from feature_pipelines.stores.online.redis_store import RedisOnlineStore

    home = workspace.dagster_home()
    settings = workspace.settings
    click.echo(f"data folder: {settings.data_dir}")
    sample_size = _sample(scale, days, seed, end)
    counts = generate_sample_data(settings.source_root, sample_size)
    click.echo("sample data: " + ", ".join(f"{k}={v} rows" for k, v in counts.items()))
    observations = settings.data_dir / "observations" / "fraud_labels.parquet"
    entities = settings.data_dir / "observations" / "entities.parquet"
    write_sample_observations(settings.source_root, str(observations))
    write_sample_entities(str(observations), str(entities))
    catalog = workspace.catalog
    defs = workspace.definitions()
    # Every day of the sample is a complete daily window with source data.
    first, last = sample_size.first_day.isoformat(), sample_size.end.isoformat()
    with workspace.online_server() as url, workspace.dagster_instance() as instance:
        outcomes = [(feature_set, _materialize_with_progress(defs, instance, feature_set, first, last, "backfilling",
                                                             wait_timeout, verbose))
                    for feature_set in catalog]
        online = RedisOnlineStore.from_url(url)
        click.echo("\nsummary")
        click.echo(f"{'feature set':<18}{'windows':>8}{'rows':>10}{'delta v':>9}{'online keys':>13}{'compute s':>10}  run")
        for feature_set, outcome in outcomes:
            meta = outcome.metadata
            click.echo(
                f"{feature_set.key:<18}{outcome.windows:>8}{meta.get('dagster/row_count', 0):>10}"
                f"{meta.get('delta_version', '-'):>9}{online.count(feature_set):>13}{meta.get('duration_s', 0):>10.1f}"
                f"  {outcome.run_id[:8]}"
            )
    at = (sample_size.start + timedelta(days=days)).isoformat()
    click.echo("\nnext, in this shell (the README's commands assume these two lines):")
    for line in [*_activate_lines(home), "featurestore status",
                 f"featurestore training-set fraud_model --observations {_shown(observations)}",
                 f"featurestore inference-set fraud_model --entities {_shown(entities)} --as-of {at}",
                 f"featurestore online fraud_model account_id=a000000 merchant_id=m00000 amount=42.5 --at {at}",
                 "dagster dev -w workspace.yaml        # the UI, on http://127.0.0.1:3000"]:
        click.echo(f"  {line}")


def _activate_lines(home: Path) -> list[str]:
    """The shell lines that make `featurestore` and `dagster` this environment's, on this instance."""
    lines = [f"export DAGSTER_HOME={home}"]
    if sys.prefix != sys.base_prefix:  # running from a virtualenv (the quick start's .venv)
        lines.insert(0, f"source {_shown(Path(sys.prefix) / 'bin' / 'activate')}")
    return lines


def _shown(path: Path) -> str:
    """A path as a user would type it here: relative to the current folder when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _dataset_run_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The output format, engine and quarantine options of the dataset commands, and their workspace."""
    command = _friendly(command)
    command = click.pass_obj(command)
    command = _verbose_option(command)
    command = click.option("--accept-quarantined", is_flag=True,
                           help="Join the rows of quarantined windows (a blocking quality check failed on them) "
                                "instead of refusing them.")(command)
    command = click.option("--engine", type=click.Choice(["auto", "local", "spark"]), default="auto",
                           show_default=True)(command)
    return click.option("--format", "output_format", type=click.Choice(["parquet", "delta"]), default="parquet",
                        show_default=True)(command)


@main.command("training-set")
@click.argument("retrieval_spec", metavar="SPEC")
@click.option("--observations", required=True, help="Delta table or Parquet path: entity keys, a UTC timestamp, labels.")
@click.option("--timestamp-column", default="event_timestamp", show_default=True)
@click.option("--output", default="", help="Output path (default: <data>/datasets/<spec>/training/<run id>.parquet).")
@_dataset_run_options
def training_set(workspace: Workspace, retrieval_spec: str, observations: str, timestamp_column: str, output: str,
                 output_format: str, engine: str, accept_quarantined: bool, verbose: bool) -> None:
    """Build a point-in-time correct training set for retrieval spec SPEC, as a Dagster run."""
    config = {"observations": observations, "timestamp_column": timestamp_column, "output": output,
              "output_format": output_format, "engine": engine, "accept_quarantined": accept_quarantined}
    _run_dataset(workspace, retrieval_spec, "training", config, verbose)


@main.command("inference-set")
@click.argument("retrieval_spec", metavar="SPEC")
@click.option("--entities", required=True, help="Delta table or Parquet path of the entity keys to score.")
@click.option("--as-of", required=True, help="Inference time, ISO 8601 with a zone, e.g. 2024-02-01T00:00:00+00:00.")
@click.option("--output", default="", help="Output path (default: <data>/datasets/<spec>/inference/<run id>.parquet).")
@_dataset_run_options
def inference_set(workspace: Workspace, retrieval_spec: str, entities: str, as_of: str, output: str,
                  output_format: str, engine: str, accept_quarantined: bool, verbose: bool) -> None:
    """Build the batch-inference features of SPEC for some entities at one time, as a Dagster run."""
    from feature_pipelines.clock import parse_time

    parse_time(as_of, "--as-of")  # here, to name the option; the run reads it again
    config = {"entities": entities, "as_of": as_of, "output": output, "output_format": output_format, "engine": engine,
              "accept_quarantined": accept_quarantined}
    _run_dataset(workspace, retrieval_spec, "inference", config, verbose)


@main.command()
@click.argument("retrieval_spec", metavar="SPEC")
@click.argument("keys", nargs=-1, required=True)
@click.option("--at", "at", default=None,
              help="Judge value ages (temporal_join_lookback) at this ISO time instead of now, e.g. 2024-03-01T00:00:00+00:00.")
@click.pass_obj
@_friendly
def online(workspace: Workspace, retrieval_spec: str, keys: tuple[str, ...], at: str | None) -> None:
    """Online features of SPEC for one entity, given as KEY=VALUE pairs (e.g. account_id=a000001),
    request fields of its request features too (e.g. amount=42.5)."""
    import json

    from feature_pipelines.clock import parse_time
    from feature_pipelines.retrieval.feature_store import FeatureStore

    store = FeatureStore(workspace.catalog, workspace.offline)
    spec = workspace.retrieval_spec_path(retrieval_spec)
    fields = store.request_features(spec).fields
    row: dict[str, Any] = {}
    for pair in keys:
        if "=" not in pair:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="KEYS")
        name, value = pair.split("=", 1)
        row[name] = value
        if name in fields and fields[name] != "string":  # typed like JSON: 42.5, 3, true, null
            try:
                row[name] = json.loads(value)
            except ValueError:
                raise click.BadParameter(f"{name}={value}: request field {name!r} is {fields[name]}; write a JSON "
                                         "number, true, false or null", param_hint="KEYS") from None
    with workspace.online_server() as url:
        from feature_pipelines.stores.online.redis_store import RedisOnlineStore

        store.online = RedisOnlineStore.from_url(url)
        frame = store.get_online_features(spec, [row], now=parse_time(at, "--at") if at else None)
    for column, value in frame.iloc[0].items():
        click.echo(f"{column} = {value}")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind; other than loopback needs tokens.")
@click.option("--port", type=click.IntRange(0, 65535), default=6566, show_default=True)
@click.option("--workers", type=click.IntRange(1), default=1, show_default=True, help="Worker processes.")
@click.option("--tokens-file", type=click.Path(dir_okay=False, path_type=Path), envvar="FEATURESTORE_SERVE_TOKENS_FILE",
              default=None, help="Bearer tokens, hashed: lines `NAME SHA256 [SPEC,push:SOURCE,...]` (README, Serving).")
@click.option("--max-entities", type=click.IntRange(1), default=1000, show_default=True, help="Entities per request.")
@click.option("--max-body-bytes", type=click.IntRange(1), default=1 << 20, show_default=True)
@click.option("--cors-origin", "cors_origins", multiple=True, help="Allow browser calls from this origin (repeatable).")
@click.option("--drain-timeout", type=float, default=30.0, show_default=True,
              help="On SIGTERM, seconds in-flight requests may take to finish.")
@click.pass_obj
@_friendly
def serve(workspace: Workspace, host: str, port: int, workers: int, tokens_file: Path | None, max_entities: int,
          max_body_bytes: int, cors_origins: tuple[str, ...], drain_timeout: float) -> None:
    """Serve online features over HTTP (POST /features/SPEC); needs neither Spark nor Dagster."""
    from feature_pipelines.serving.config import TOKENS_ENV, ServeConfig
    from feature_pipelines.serving.server import serve as run_server

    with workspace.online_server() as url:
        run_server(ServeConfig(
            redis_url=url, feature_defs_dir=workspace.settings.feature_defs_dir, host=host, port=port, workers=workers,
            tokens_file=tokens_file, tokens=os.environ.get(TOKENS_ENV), max_entities=max_entities,
            max_body_bytes=max_body_bytes, cors_origins=cors_origins, drain_timeout_s=drain_timeout))


@main.command()
@click.option("--group", default="featurestore", show_default=True,
              help="Consumer group: processes of one group share the work; each group gets every event.")
@click.option("--consumer", default=None, help="This process's name in the group (default: host-pid); a stable "
                                               "name resumes its unacknowledged entries at once after a restart.")
@click.option("--source", "sources", multiple=True, help="Only this source (repeatable; default: every streamed one).")
@click.option("--allowed-lateness", default="1h", show_default=True,
              help="Events older than now minus this go to the Delta source only, not online (e.g. 30m, 0).")
@click.option("--batch-size", type=click.IntRange(1), default=1000, show_default=True, help="Entries per micro-batch.")
@click.option("--claim-idle", type=click.FloatRange(0.1), default=30.0, show_default=True,
              help="Seconds after which entries a dead consumer held are claimed.")
@click.option("--log-every", type=click.FloatRange(0.1), default=10.0, show_default=True,
              help="Seconds between the JSON lines of counters and lag on stderr.")
@click.pass_obj
@_friendly
def stream(workspace: Workspace, group: str, consumer: str | None, sources: tuple[str, ...], allowed_lateness: str,
           batch_size: int, claim_idle: float, log_every: float) -> None:
    """Apply pushed and streamed events to the online store and their Delta sources (README,
    "Real-time features"); needs neither Spark nor Dagster. SIGTERM or Ctrl-C finish the
    micro-batch in hand, then exit 0."""
    from feature_pipelines.spec.durations import micros, parse_duration
    from feature_pipelines.streaming.processor import StreamConfig
    from feature_pipelines.streaming.run import run_processor

    lateness = micros(parse_duration(allowed_lateness, field="--allowed-lateness"))
    config = StreamConfig(group=group, consumer=consumer or "", batch_size=batch_size,
                          claim_idle_ms=int(claim_idle * 1000), lateness_us=lateness)
    settings = workspace.settings
    with workspace.online_server() as url:
        run_processor(workspace.catalog, url, settings.source_root, settings.source_storage_options or None, config,
                      sources, log_every_s=log_every)


def _run_dataset(workspace: Workspace, retrieval_spec: str, kind: str, config: dict[str, Any], verbose: bool) -> None:
    from feature_pipelines.orchestration.datasets import check_dataset_config
    from feature_pipelines.orchestration.runs import run_job
    from feature_pipelines.spec.retrieval_spec import RetrievalSpec

    spec = RetrievalSpec.from_yaml(workspace.retrieval_spec_path(retrieval_spec))
    name = spec.name
    op_config = {k: v for k, v in config.items() if v != ""}
    # Bad observations record no run: a failed run would mark the dataset failed over its last good output.
    check_dataset_config(spec, workspace.catalog, kind, op_config)
    defs = workspace.definitions()
    click.echo(f"building the {kind} set of {name} ...")
    with workspace.dagster_instance() as instance:
        by_asset, run_id = run_job(
            defs, instance, f"{kind}_dataset_{name}", {"ops": {f"datasets__{name}__{kind}": {"config": op_config}}},
            quiet=not verbose,
        )
        metadata = by_asset.get(f"datasets/{name}/{kind}", {})
    click.echo(f"{metadata.get('dagster/row_count', 0)} rows -> {metadata.get('output')}  (run {run_id})")
    for key, value in metadata.items():
        if key.startswith("match_rate/"):
            click.echo(f"  match rate {key.split('/', 1)[1]}: {value:.2%}")


def _print_outcome(key: str, outcome: Any) -> None:
    meta = outcome.metadata
    click.echo(
        f"{key}: {outcome.windows} window(s), {meta.get('dagster/row_count', 0)} rows, "
        f"Delta version {meta.get('delta_version', '-')}, online keys written {outcome.online.get('online_keys_written', 0)}, "
        f"run {outcome.run_id}"
    )


if __name__ == "__main__":
    main()
