"""The source checks a run makes before Spark starts, from the Delta log alone: the same rule and
messages as the Spark read (integration/test_bad_input.py), cheap enough for the CLI to refuse
a run before recording it."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from feature_pipelines import Source
from feature_pipelines.compute.source_schema import check_source
from feature_pipelines.errors import SourceError
from tests.factories import source
from tests.helpers import write_source

EVENTS = source(columns={"user_id": "string", "score": "float64"})
GOOD = pd.DataFrame({"user_id": ["u1"], "score": [0.5], "event_time": pd.to_datetime(["2024-03-02 01:00"], utc=True)})


@pytest.mark.parametrize(("frame", "declared", "message"), [
    (None, EVENTS, "source 'events': no Delta table at {root}/events; check Source.path"),
    (GOOD.drop(columns="score"), EVENTS,
     "source 'events' ({root}/events): column 'score' is missing; the table has ['event_time', 'user_id']. "
     "Add it to the source, or remove it from the source's declared columns."),
    (GOOD.assign(score=["x"]), EVENTS, "column 'score' has type 'string' but is declared 'float64'"),
    (GOOD.assign(event_time=GOOD["event_time"].dt.tz_localize(None)), EVENTS,
     "column 'event_time' holds naive timestamps (no time zone)"),
    (GOOD.iloc[:0], EVENTS, "source 'events' ({root}/events) is empty: it holds no rows at all"),
], ids=["no table", "missing column", "wrong type", "naive timestamps", "empty"])
def test_bad_sources_are_refused_from_the_delta_log(tmp_path: Path, frame, declared: Source, message: str) -> None:
    if frame is not None:
        write_source(tmp_path, "events", frame,
                     schema=pa.schema([("user_id", pa.string()), ("score", pa.float64()),
                                       ("event_time", pa.timestamp("us", "UTC"))]) if frame.empty else None)
    with pytest.raises(SourceError, match=re.escape(message.format(root=tmp_path))):
        check_source(declared, str(tmp_path))


def test_good_sources_pass(tmp_path: Path) -> None:
    write_source(tmp_path, "events", GOOD.assign(score=GOOD["score"].astype("float32"), extra=["y"]))  # widened, extra column
    assert check_source(EVENTS, str(tmp_path)).schema.names == ["user_id", "score", "event_time", "extra"]
    naive = GOOD.assign(event_time=GOOD["event_time"].dt.tz_localize(None))
    write_source(tmp_path, "local", naive)
    zoned = Source(name="local", path="local", timestamp="event_time", timezone="Europe/Berlin",
                   columns={"user_id": "string", "score": "float64"})
    assert check_source(zoned, str(tmp_path)).naive_timestamp
    assert check_source(Source(name="files", path="files", timestamp="t", columns={"a": "string"}, format="parquet"),
                        str(tmp_path)) is None  # checked as Spark reads it
