"""The Dagster UI, in a real headless Chromium: a feature set's asset page shows its partitions
(feature windows), its check results and its metadata.

`dagster-webserver` serves a temporary instance holding materialized windows on loopback;
Playwright drives Debian's Chromium (never a downloaded browser). Screenshots are saved under
`test-artifacts/` (or $FEATURESTORE_TEST_ARTIFACTS) for CI to keep.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import DagsterInstance

from feature_pipelines.spec.catalog import load_catalog
from feature_pipelines.orchestration.code_location import build_definitions
from feature_pipelines.orchestration.runs import materialize_range
from feature_pipelines.settings import Settings
from tests.helpers import PROJECT_DIR, dagster_env, free_ports

CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser")) if p), None)
ARTIFACTS = Path(os.environ.get("FEATURESTORE_TEST_ARTIFACTS", PROJECT_DIR / "test-artifacts"))
# Flags for a sandbox with no network beyond loopback: no background calls home, no GPU.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update", "--disable-dev-shm-usage"]

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed: `apt-get install chromium` "
                                                "(scripts/setup.sh does it) to run the browser test"),
]


@pytest.fixture()
def webserver(spark, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A webserver over a fresh instance in which transactions 2024-01-01..09 were materialized."""
    env = dagster_env(settings, tmp_path / "home")
    monkeypatch.setenv("DAGSTER_HOME", env["DAGSTER_HOME"])
    catalog = load_catalog(settings.feature_defs_dir)
    with DagsterInstance.get() as instance:
        materialize_range(build_definitions(settings, catalog), instance, catalog.get("transactions"),
                          "2024-01-01", "2024-01-09")
    port = free_ports()[0]
    log = (tmp_path / "webserver.log").open("w")
    server = subprocess.Popen(
        [str(Path(os.sys.executable).parent / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port),
         "-w", "workspace.yaml"],
        cwd=PROJECT_DIR, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{url}/server_info", timeout=2).read()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"dagster-webserver did not start:\n{(tmp_path / 'webserver.log').read_text()[-3000:]}")
                time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def test_asset_page_shows_partitions_checks_and_metadata(webserver: str) -> None:
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1200})
            page.set_default_timeout(90_000)  # the first page load compiles the code location's queries

            def open_view(view: str) -> None:
                page.goto(f"{webserver}/assets/transactions_v1{view}")
                skip = page.get_by_role("button", name="Skip")  # Dagster's one-time community dialog
                try:
                    skip.click(timeout=3_000)
                except Exception:  # noqa: BLE001 - the dialog shows once per browser profile, or not at all
                    pass

            # Overview: description, schema with descriptions, run metadata and spec metadata.
            open_view("")
            expect(page.get_by_text("Spending per account over trailing 1, 7 and 30 days.")).to_be_visible()
            for text in ("sum(amount) over the trailing 7d", "rows_per_window", "feature_stats", "window_status",
                         "2024-01-01 .. 2024-01-09 (9 windows)", "offline_table", "freshness_deadline",
                         "7h after each window closes"):
                expect(page.get_by_text(text, exact=True).first).to_be_visible()
            page.screenshot(path=str(ARTIFACTS / "transactions_v1_overview.png"), full_page=True)

            # Partitions: the nine windows are materialized, none failed.
            open_view("?view=partitions")
            expect(page.get_by_text("Materialized (9)")).to_be_visible()
            expect(page.get_by_text("Failed (0)")).to_be_visible()
            expect(page.get_by_text(re.compile(r"^Missing \(\d+\)$"))).to_be_visible()
            page.screenshot(path=str(ARTIFACTS / "transactions_v1_partitions.png"), full_page=True)

            # Checks: every quality check passed; freshness failed (the sample windows are from 2024).
            open_view("?view=checks")
            expect(page.get_by_text("Checks (5)")).to_be_visible()
            body = page.locator("body")
            for check, state in (("expectations", "Succeeded"), ("keys_unique_and_not_null", "Succeeded"),
                                 ("row_count_in_band", "Succeeded"), ("schema_matches_spec", "Succeeded"),
                                 ("freshness_check", "Failed")):
                # Each list entry reads "<name> <name> <state>" (the name twice: label and tooltip).
                expect(body).to_contain_text(re.compile(rf"{check}\s*{check}\s*{state}"))
            expect(page.get_by_text("every expectation holds in every window").first).to_be_visible()
            page.get_by_text("freshness_check", exact=True).first.click()
            expect(page.get_by_text(re.compile(r"We expected partition \d{4}-\d{2}-\d{2} to have arrived")).first).to_be_visible()
            page.screenshot(path=str(ARTIFACTS / "transactions_v1_checks.png"), full_page=True)
        finally:
            browser.close()
    assert (ARTIFACTS / "transactions_v1_checks.png").stat().st_size > 10_000
