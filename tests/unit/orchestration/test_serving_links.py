"""The dataset assets of a retrieval spec link to where the feature server answers it, on the
asset's page (definition metadata, no run needed), at the URL FEATURESTORE_SERVE_URL names."""

from __future__ import annotations

import pytest
from dagster import AssetKey, UrlMetadataValue

from feature_pipelines.errors import FeatureStoreError
from feature_pipelines.orchestration.code_location import build_definitions
from feature_pipelines.settings import Settings
from tests.helpers import PROJECT_DIR


@pytest.mark.parametrize("configured, base", [
    (None, "http://127.0.0.1:6566"),  # `featurestore serve` with its defaults
    ("https://features.example.internal/", "https://features.example.internal"),
])
def test_dataset_assets_link_to_the_serving_endpoint(monkeypatch: pytest.MonkeyPatch, configured: str | None,
                                                     base: str) -> None:
    monkeypatch.setenv("FEATURESTORE_PROJECT_DIR", str(PROJECT_DIR))
    if configured is None:
        monkeypatch.delenv("FEATURESTORE_SERVE_URL", raising=False)
    else:
        monkeypatch.setenv("FEATURESTORE_SERVE_URL", configured)
    specs = {s.key: s for s in build_definitions(Settings.from_env()).resolve_all_asset_specs()}
    for kind in ("training", "inference"):
        metadata = specs[AssetKey(["datasets", "fraud_model", kind])].metadata
        assert metadata["serving_endpoint"] == UrlMetadataValue(f"{base}/features/fraud_model")
        assert metadata["serving_docs"] == UrlMetadataValue(f"{base}/docs")


def test_a_serve_url_that_is_no_url_is_refused_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEATURESTORE_SERVE_URL", "features:6566")
    with pytest.raises(FeatureStoreError, match=r"^FEATURESTORE_SERVE_URL is not an http\(s\) URL \('features:6566'\); "
                                                r"set it to where clients reach the feature server, like "
                                                r"http://127\.0\.0\.1:6566\.$"):
        Settings.from_env()


@pytest.mark.parametrize("configured, delay", [(None, 2.0), ("0.5", 0.5)])
def test_the_publish_retry_delay_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch, configured: str | None,
                                                            delay: float) -> None:
    monkeypatch.setenv("FEATURESTORE_PROJECT_DIR", str(PROJECT_DIR))
    if configured is None:
        monkeypatch.delenv("FEATURESTORE_PUBLISH_RETRY_DELAY", raising=False)
    else:
        monkeypatch.setenv("FEATURESTORE_PUBLISH_RETRY_DELAY", configured)
    defs = build_definitions(Settings.from_env())
    policy = defs.resolve_assets_def(AssetKey(["transactions_v1_online"])).op.retry_policy
    assert (policy.max_retries, policy.delay) == (3, delay)


@pytest.mark.parametrize("raw", ["0", "-1", "soon", "inf"])
def test_a_publish_retry_delay_that_is_no_positive_number_is_refused(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("FEATURESTORE_PUBLISH_RETRY_DELAY", raw)
    with pytest.raises(FeatureStoreError, match=rf"^FEATURESTORE_PUBLISH_RETRY_DELAY is '{raw}'; set it to a positive "
                                                r"number of seconds, like 2\.$"):
        Settings.from_env()
