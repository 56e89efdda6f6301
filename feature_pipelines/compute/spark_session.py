"""The Spark session: its settings from `Settings` (the environment), and the session built from them.

Dagster runs hand `spark_config` to their lazy PySpark resource; code without Dagster (the
retrieval API, notebooks) calls `spark_session`. pyspark is imported only when a session is built.
"""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING, Any

from feature_pipelines.settings import Settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

# Spark settings the engine relies on, whatever the session was built with.
SESSION_SETTINGS = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
}

# A local session talks to itself only: keep the driver on loopback, and run Python workers
# with this interpreter (its virtualenv has pyarrow, which Arrow-based steps need).
LOCAL_SPARK_NETWORK = {
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.pyspark.python": sys.executable,
}


def spark_config(settings: Settings) -> dict[str, Any]:
    """Spark settings: the master URL and engine defaults; FEATURESTORE_SPARK_CONF (JSON) adds more.

    `SPARK_MASTER` is any master URL (`local[*]`, `spark://`, `k8s://`, `yarn`) or a Spark
    Connect URL (`sc://host:15002`): then this process is a thin client and the driver, with
    its own memory and network settings, runs in the Spark Connect server.
    """
    master = settings.spark_master
    config: dict[str, Any] = {"spark.remote": master} if master.startswith("sc://") else {
        "spark.master": master,
        "spark.app.name": "feature-store",
        "spark.ui.showConsoleProgress": "false",
        "spark.driver.memory": os.environ.get("SPARK_DRIVER_MEMORY", "4g"),
    }
    config["spark.sql.shuffle.partitions"] = os.environ.get("SPARK_SHUFFLE_PARTITIONS", "8")
    config.update(SESSION_SETTINGS)
    if master.startswith("local"):
        config.update(LOCAL_SPARK_NETWORK)
        # PySpark reads the worker interpreter from the environment when it starts the context;
        # Spark its bind address (without it, it warns that the host name resolves to loopback).
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    config.update(json.loads(os.environ.get("FEATURESTORE_SPARK_CONF", "{}")))
    return config


def spark_session(settings: Settings | None = None) -> SparkSession:
    """The session `spark_config` describes (settings from the environment by default): the
    running one if there is one, else a new one."""
    from pyspark.sql import SparkSession

    builder = SparkSession.builder
    for key, value in spark_config(settings or Settings.from_env()).items():
        builder = builder.config(key, value)
    return builder.getOrCreate()
