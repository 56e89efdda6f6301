"""How the CLI reports errors (`_friendly`): a user's error is one line, also when a Dagster run
wrapped it; anything else is one line naming it and the file holding its traceback. In process:
the real console script is run for every kind of bad input in integration/test_bad_input.py."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from feature_pipelines.cli.commands import _friendly
from feature_pipelines.errors import FeatureStoreError, SourceError, inline, user_error


def _cli(error: Exception) -> click.Group:
    """A command group like `featurestore` (with --debug) whose one command raises `error`."""

    @click.group()
    @click.option("--debug", is_flag=True)
    def cli(debug: bool) -> None:
        pass

    @cli.command()
    @_friendly
    def fail() -> None:
        raise error

    return cli


def _wrapped(inner: Exception) -> Exception:
    """`inner` as a Dagster run raises it: wrapped, with the user's error as the cause."""
    try:
        try:
            raise inner
        except Exception as exc:
            raise RuntimeError('Error occurred while executing op "transactions_v1":') from exc
    except RuntimeError as outer:
        return outer


def test_a_users_error_wrapped_by_dagster_is_one_line() -> None:
    result = CliRunner().invoke(_cli(_wrapped(SourceError("source 'events': column 'x' is missing"))), ["fail"])
    assert result.exit_code == 1
    assert result.output == "error: source 'events': column 'x' is missing.\n"


def test_an_unexpected_error_is_one_line_with_its_traceback_in_a_file() -> None:
    result = CliRunner().invoke(_cli(_wrapped(KeyError("boom"))), ["fail"])
    assert result.exit_code == 1
    [line] = result.output.splitlines()
    match = re.fullmatch(r"error: unexpected KeyError: 'boom'\. The traceback is in (\S+) \(rerun with --debug to "
                         r"print it\); report it if this is a bug\.", line)
    assert match, line
    saved = Path(match.group(1)).read_text()
    Path(match.group(1)).unlink()
    assert saved.startswith("Traceback (most recent call last)") and "KeyError: 'boom'" in saved
    assert "RuntimeError: Error occurred while executing op" in saved


@pytest.mark.parametrize("error", [SourceError("column 'x' is missing"), KeyError("boom")], ids=["user", "unexpected"])
def test_debug_prints_the_traceback(error: Exception) -> None:
    result = CliRunner().invoke(_cli(error), ["--debug", "fail"])
    assert result.exit_code == 1
    assert result.output.startswith("Traceback (most recent call last)") and 'File "' in result.output
    assert result.output.splitlines()[-1].startswith("error: ")
    assert "featurestore-error-" not in result.output


def test_click_usage_errors_pass_through() -> None:
    result = CliRunner().invoke(_cli(click.BadParameter("'x' is not KEY=VALUE")), ["fail"])
    assert result.exit_code == 2 and "Error: Invalid value: 'x' is not KEY=VALUE" in result.output


@pytest.mark.parametrize(("written", "message"), [
    ("no table", "no table."), ("no table.", "no table."), ("no table..  ", "no table."), ("", ""),
])
def test_messages_end_with_exactly_one_period(written: str, message: str) -> None:
    assert str(FeatureStoreError(written)) == message


def test_user_error_finds_ours_in_a_chain_or_none() -> None:
    ours = SourceError("bad")
    assert user_error(_wrapped(ours)) is ours
    assert user_error(_wrapped(KeyError("boom"))) is None


def test_other_libraries_errors_are_quoted_as_one_clause() -> None:
    spark_like = RuntimeError("[UNRESOLVED_COLUMN] `amount` cannot be resolved.\n== Plan ==\nProject [...]\n")
    error = SourceError(f"source 'events': cannot read it ({inline(spark_like)}); check Source.path")
    assert str(error) == "source 'events': cannot read it ([UNRESOLVED_COLUMN] `amount` cannot be resolved); check Source.path."
