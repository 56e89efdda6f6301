"""A deterministic example domain: accounts, merchants and card transactions, as Delta sources.

The sample covers `days` whole UTC days ending with `end` (included). The same seed, sizes and
end always give the same tables; the CLI ends it at the last complete day by default, so the
demo's newest window is yesterday's and the store looks as live as a real one. `transactions`
sets the scale; the default is small enough for tests, and millions of rows work for benchmarks.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from deltalake import write_deltalake

from feature_pipelines.errors import WindowError
from feature_pipelines.stores.offline.delta_files import open_table, read_delta
from feature_pipelines.spec.durations import epoch_micros
from feature_pipelines.settings import resolve_path

_SEGMENTS = np.array(["student", "retail", "affluent", "business"])
_COUNTRIES = np.array(["DE", "FR", "NL", "ES", "IT", "PL"])
_CHANNELS = np.array(["card_present", "online", "contactless"])


@dataclass(frozen=True)
class SampleSize:
    """How much sample data, and which days: `days` whole UTC days up to and including `end`."""

    end: date
    transactions: int = 20_000
    accounts: int = 500
    merchants: int = 60
    days: int = 60
    seed: int = 7

    @classmethod
    def for_scale(cls, transactions: int, end: date, days: int = 60, seed: int = 7) -> "SampleSize":
        """Entities grow with the number of transactions, as they would in a real bank."""
        return cls(
            end=end,
            transactions=transactions,
            accounts=max(100, transactions // 40),
            merchants=max(20, transactions // 400),
            days=days,
            seed=seed,
        )

    @property
    def first_day(self) -> date:
        return self.end - timedelta(days=self.days - 1)

    @property
    def start(self) -> datetime:
        """The first instant of the sample (midnight UTC of its first day)."""
        return datetime.combine(self.first_day, time(), tzinfo=timezone.utc)


def last_complete_day(now: datetime) -> date:
    """The newest UTC day that has ended at `now`: the default end of the sample."""
    return (now.astimezone(timezone.utc) - timedelta(days=1)).date()


def sample_end(end: date | None, now: datetime) -> date:
    """The sample's last day: `end`, or the last complete day at `now`. A day that has not ended
    yet is refused (its windows could not be materialized)."""
    last = last_complete_day(now)
    if end is None:
        return last
    if end > last:
        raise WindowError(f"--end {end.isoformat()}: that day has not ended yet (now is "
                          f"{now.isoformat(timespec='seconds')}); pass --end {last.isoformat()} or earlier.")
    return end


def generate_sample_data(source_root: str, size: SampleSize) -> dict[str, int]:
    """Write the `transactions` and `accounts` source tables under `source_root` (replacing any
    there); return their row counts."""
    rng = np.random.default_rng(size.seed)
    transactions = _transactions(rng, size)
    accounts = _account_profiles(rng, size)
    write_deltalake(resolve_path(source_root, "transactions"), transactions, mode="overwrite",
                    partition_by=["event_date"], schema_mode="overwrite")
    write_deltalake(resolve_path(source_root, "accounts"), accounts, mode="overwrite", schema_mode="overwrite")
    return {"transactions": transactions.num_rows, "accounts": accounts.num_rows}


def _transactions(rng: np.random.Generator, size: SampleSize) -> pa.Table:
    n = size.transactions
    span = size.days * 86_400_000_000
    # Busy accounts and merchants exist: draw both from a skewed (Zipf-like) distribution.
    account_weights = 1.0 / np.arange(1, size.accounts + 1) ** 0.8
    merchant_weights = 1.0 / np.arange(1, size.merchants + 1) ** 1.1
    accounts = rng.choice(size.accounts, n, p=account_weights / account_weights.sum())
    merchants = rng.choice(size.merchants, n, p=merchant_weights / merchant_weights.sum())
    # Whole seconds, so that exact ties and window-boundary events do happen.
    offsets = rng.integers(0, span // 1_000_000, n) * 1_000_000
    micros = np.sort(epoch_micros(size.start) + offsets)
    amounts = np.round(rng.lognormal(mean=3.2, sigma=1.0, size=n), 2)
    event_time = pa.array(micros, pa.timestamp("us", tz="UTC"))
    event_date = pc.strftime(event_time, format="%Y-%m-%d")
    return pa.table(
        {
            "transaction_id": pa.array([f"t{i:09d}" for i in range(n)]),
            "account_id": pa.array(np.char.add("a", np.char.zfill(accounts.astype(str), 6))),
            "merchant_id": pa.array(np.char.add("m", np.char.zfill(merchants.astype(str), 5))),
            "amount": pa.array(amounts, pa.float64()),
            "channel": pa.array(_CHANNELS[rng.integers(0, len(_CHANNELS), n)]),
            "event_time": event_time,
            "event_date": event_date,
        }
    )


def _account_profiles(rng: np.random.Generator, size: SampleSize) -> pa.Table:
    """A first snapshot of every account on the first day (the initial export), then 0-3 updates."""
    n = size.accounts
    updates = rng.integers(0, 4, n)
    per_account = updates + 1
    account = np.repeat(np.arange(n), per_account)
    first_row = np.repeat(np.cumsum(per_account) - per_account, per_account)
    change = np.arange(len(account)) - first_row  # 0 for the first snapshot, then 1, 2, 3
    span_s = size.days * 86_400
    # Opening snapshots during day one; updates later, in order, at distinct seconds.
    seconds = np.where(change == 0, rng.integers(0, 86_400, len(account)), rng.integers(86_400, span_s, len(account)))
    seconds = seconds + change  # keeps (account, updated_at) unique even on equal draws
    order = np.lexsort((seconds, account))
    account, seconds, change = account[order], seconds[order], np.arange(len(account))[order] - first_row[order]
    base_limit = rng.choice([500.0, 1000.0, 2500.0, 5000.0, 10000.0], n)
    growth = rng.choice([1.0, 1.5, 2.0], len(account))
    limit = base_limit[account] * np.where(change == 0, 1.0, growth)
    segment = _SEGMENTS[rng.integers(0, len(_SEGMENTS), n)][account]
    micros = epoch_micros(size.start) + seconds.astype(np.int64) * 1_000_000
    return pa.table(
        {
            "account_id": pa.array(np.char.add("a", np.char.zfill(account.astype(str), 6))),
            "updated_at": pa.array(micros, pa.timestamp("us", tz="UTC")),
            "credit_limit": pa.array(limit, pa.float64()),
            "segment": pa.array(segment),
            "country": pa.array(_COUNTRIES[rng.integers(0, len(_COUNTRIES), n)][account]),
            "is_premium": pa.array((segment == "affluent") | (limit >= 10000.0)),
        }
    )


def write_sample_observations(source_root: str, path: str, rows: int = 2_000, seed: int = 7) -> int:
    """Labelled observations for the fraud example: a transaction's account, merchant and amount
    (the request field of its request feature), the time it was scored, and a label. Written as one
    Parquet file; returns the row count."""
    transactions = read_delta(
        open_table(resolve_path(source_root, "transactions")), columns=["account_id", "merchant_id", "amount", "event_time"]
    )
    rng = np.random.default_rng(seed)
    picked = transactions.take(np.sort(rng.choice(transactions.num_rows, min(rows, transactions.num_rows), replace=False)))
    amount = picked.column("amount").to_numpy()
    # Large amounts are likelier to be fraud, so a model has something to learn.
    fraud = rng.random(picked.num_rows) < np.clip(amount / 2_000.0, 0.01, 0.6)
    table = pa.table({
        "account_id": picked.column("account_id"),
        "merchant_id": picked.column("merchant_id"),
        "amount": picked.column("amount"),
        "event_timestamp": picked.column("event_time"),
        "is_fraud": pa.array(fraud),
    })
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return table.num_rows


def write_sample_entities(observations: str, path: str, rows: int = 200) -> int:
    """Entities to score in batch inference (`featurestore inference-set --entities`): the first
    `rows` distinct account and merchant pairs of the observations, each with the amount of its
    first transaction among them, as one Parquet file; returns the row count."""
    grouped = pq.read_table(observations, columns=["account_id", "merchant_id", "amount"]).group_by(
        ["account_id", "merchant_id"], use_threads=False).aggregate([("amount", "first")])
    pairs = pa.table({"account_id": grouped["account_id"], "merchant_id": grouped["merchant_id"],
                      "amount": grouped["amount_first"]})
    table = pairs.sort_by([("account_id", "ascending"), ("merchant_id", "ascending")]).slice(0, rows)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return table.num_rows
