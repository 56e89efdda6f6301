"""The server's Prometheus text: counters by label, a cumulative latency histogram."""

from __future__ import annotations

from feature_pipelines.serving.metrics import Metrics


def test_rendered_counts_and_cumulative_buckets() -> None:
    metrics = Metrics()
    for seconds in (0.0004, 0.0007, 0.003, 7.0):
        metrics.observe("/features/{retrieval_spec}", 200, seconds)
    metrics.observe("/ready", 503, 0.01)
    metrics.statuses[("merchants_v1", "expired")] += 3
    metrics.redis_errors += 1
    metrics.request_feature_errors += 2
    metrics.events_pushed["transactions"] += 40
    metrics.pushes_refused[("transactions", "invalid")] += 1
    lines = metrics.render().splitlines()
    assert 'featurestore_serve_requests_total{endpoint="/features/{retrieval_spec}",status="200"} 4' in lines
    assert 'featurestore_serve_requests_total{endpoint="/ready",status="503"} 1' in lines
    bucket = 'featurestore_serve_request_duration_seconds_bucket{endpoint="/features/{retrieval_spec}",le="%s"} %d'
    assert bucket % ("0.0005", 1) in lines and bucket % ("0.001", 2) in lines and bucket % ("0.005", 3) in lines
    assert bucket % ("5", 3) in lines and bucket % ("+Inf", 4) in lines
    assert 'featurestore_serve_request_duration_seconds_count{endpoint="/features/{retrieval_spec}"} 4' in lines
    assert 'featurestore_serve_values_total{feature_set="merchants_v1",status="expired"} 3' in lines
    assert "featurestore_serve_request_feature_errors_total 2" in lines
    assert "featurestore_serve_redis_errors_total 1" in lines and "featurestore_serve_requests_in_flight 0" in lines
    types = [line.split()[2] for line in lines if line.startswith("# TYPE")]
    assert 'featurestore_serve_events_pushed_total{source="transactions"} 40' in lines
    assert 'featurestore_serve_pushes_refused_total{source="transactions",reason="invalid"} 1' in lines
    assert len(types) == len(set(types)) == 9  # one TYPE line per metric family
