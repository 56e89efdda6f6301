"""The `featurestore` command line: sample data, materialization and the local demo."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from typing import Any

import click

from feature_pipelines.errors import FeatureStoreError


def _friendly(command: Callable[..., Any]) -> Callable[..., Any]:
    """Print a FeatureStoreError as one clear line and exit 1; a traceback only with --debug."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except FeatureStoreError as exc:
            if click.get_current_context().find_root().params.get("debug"):
                traceback.print_exc()
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(1)

    return wrapper


@click.group()
@click.option("--debug", is_flag=True, help="Show Python tracebacks on errors.")
def main(debug: bool) -> None:
    """Feature store on Dagster: define feature sets in feature_defs/, then materialize and serve them."""


@main.command()
@click.option("--scale", type=click.IntRange(min=100), default=20_000, show_default=True,
              help="Number of transactions to generate (accounts and merchants grow with it).")
@click.option("--days", type=click.IntRange(min=1), default=60, show_default=True)
@click.option("--seed", type=int, default=7, show_default=True)
@_friendly
def generate(scale: int, days: int, seed: int) -> None:
    """Write the example source tables (transactions, accounts) as Delta under the data folder."""
    from feature_pipelines.sample_data import SampleSize, generate_sample_data
    from feature_pipelines.settings import Settings

    settings = Settings.from_env()
    counts = generate_sample_data(settings.source_root, SampleSize.for_scale(scale, days=days, seed=seed))
    for name, rows in counts.items():
        click.echo(f"source {name}: {rows} rows -> {settings.source_root}/{name}")


@main.command()
@click.argument("feature_set")
@click.option("--start", required=True, help="First window key, e.g. 2024-01-01 (hourly: 2024-01-01-05:00).")
@click.option("--end", required=True, help="Last window key, included.")
@click.option("--version", type=int, default=None, help="Feature set version (default: latest).")
@_friendly
def materialize(feature_set: str, start: str, end: str, version: int | None) -> None:
    """Materialize windows START..END of FEATURE_SET in one Dagster run."""
    from feature_pipelines.catalog import load_catalog
    from feature_pipelines.code_location import build_definitions
    from feature_pipelines.dagster_home import ensure_dagster_home
    from feature_pipelines.runs import materialize_range
    from feature_pipelines.settings import Settings

    from dagster import DagsterInstance

    ensure_dagster_home()
    settings = Settings.from_env()
    catalog = load_catalog(settings.feature_defs_dir)
    spec = catalog.get(feature_set, version)
    defs = build_definitions(settings, catalog)
    with _online_server(settings), DagsterInstance.get() as instance:
        outcome = materialize_range(defs, instance, spec, start, end)
    _print_outcome(spec.key, outcome)


@main.command()
@click.option("--scale", type=click.IntRange(min=100), default=20_000, show_default=True)
@click.option("--days", type=click.IntRange(min=30), default=60, show_default=True,
              help="Days of sample data, and so of daily windows to backfill (at least 30).")
@_friendly
def demo(scale: int, days: int) -> None:
    """Generate sample data, backfill every feature set over all its days, publish online, summarize."""
    from datetime import timedelta

    from dagster import DagsterInstance

    from feature_pipelines.catalog import load_catalog
    from feature_pipelines.code_location import build_definitions
    from feature_pipelines.dagster_home import ensure_dagster_home
    from feature_pipelines.local_redis import LocalRedisServer
    from feature_pipelines.online_store import RedisOnlineStore
    from feature_pipelines.runs import materialize_range
    from feature_pipelines.sample_data import SAMPLE_START, SampleSize, generate_sample_data
    from feature_pipelines.settings import Settings

    import redis

    home = ensure_dagster_home()
    settings = Settings.from_env()
    click.echo(f"DAGSTER_HOME={home}\ndata folder: {settings.data_dir}")
    counts = generate_sample_data(settings.source_root, SampleSize.for_scale(scale, days=days))
    click.echo("sample data: " + ", ".join(f"{k}={v} rows" for k, v in counts.items()))
    catalog = load_catalog(settings.feature_defs_dir)
    defs = build_definitions(settings, catalog)
    first = SAMPLE_START.strftime("%Y-%m-%d")
    last = (SAMPLE_START + timedelta(days=days - 1)).strftime("%Y-%m-%d")
    with _online_server(settings) as url, DagsterInstance.get() as instance:
        outcomes = []
        for spec in catalog:
            click.echo(f"backfilling {spec.key}: {first} .. {last} in one run ...")
            outcomes.append((spec, materialize_range(defs, instance, spec, first, last)))
        online = RedisOnlineStore(redis.Redis.from_url(url), url)
        click.echo("\nsummary")
        click.echo(f"{'feature set':<18}{'windows':>8}{'rows':>10}{'delta v':>9}{'online keys':>13}{'seconds':>9}  run")
        for spec, outcome in outcomes:
            meta = outcome.metadata
            click.echo(
                f"{spec.key:<18}{outcome.windows:>8}{meta.get('dagster/row_count', 0):>10}"
                f"{meta.get('delta_version', '-'):>9}{online.count(spec):>13}{meta.get('duration_s', 0):>9.1f}  {outcome.run_id[:8]}"
            )
        sample = catalog.get("transactions")
        value = online.read(sample, [["a000000"]])[0]
        if value is not None:
            click.echo(f"\nonline value of transactions for account a000000 (ts {value.ts.isoformat()}):")
            for name, feature in value.features.items():
                click.echo(f"  {name} = {feature}")
    click.echo(f"\nSee it in the UI: DAGSTER_HOME={home} dagster dev -w workspace.yaml")


def _print_outcome(key: str, outcome: Any) -> None:
    meta = outcome.metadata
    click.echo(
        f"{key}: {outcome.windows} window(s), {meta.get('dagster/row_count', 0)} rows, "
        f"Delta version {meta.get('delta_version', '-')}, online keys written {meta.get('online_keys_written', 0)}, "
        f"run {outcome.run_id}"
    )


@contextmanager
def _online_server(settings: Any) -> Iterator[str]:
    """The Redis URL for the whole command; the local redis-server is started when none is set."""
    if settings.redis_url:
        yield settings.redis_url
        return
    from feature_pipelines.local_redis import LocalRedisServer

    with LocalRedisServer(settings.data_dir / "redis") as server:
        yield server.url


if __name__ == "__main__":
    main()
