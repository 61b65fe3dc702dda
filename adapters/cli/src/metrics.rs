//! `GET /metrics`: the `hedgerow` library's metrics (every name is in
//! `hedgerow::metrics`) in the Prometheus text format, through
//! `metrics-exporter-prometheus`. Its recorder is installed once per
//! process, with no listener of its own: the node's HTTP API renders it.
//! Latencies (`*_seconds`) are histograms with the buckets below, as the
//! hand-written renderer this replaced had them, so dashboards keep their
//! `_bucket` series.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Upper bounds of the latency histogram buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// How often the exporter drains its histograms' samples into buckets,
/// so memory stays bounded between scrapes.
pub(crate) const UPKEEP_EVERY: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();

/// The process's Prometheus recorder, installed as the global one on
/// first use (before any node starts, so every node's series reach it).
pub(crate) fn exporter() -> Result<PrometheusHandle, String> {
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &BUCKETS)
                .and_then(PrometheusBuilder::install_recorder)
                .map_err(|e| format!("cannot install the metrics exporter: {e}"))
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_render_as_histograms_with_the_buckets() {
        let handle = exporter().unwrap();
        metrics::histogram!("hedgerow_test_latency_seconds", "node" => "t").record(0.003);
        metrics::counter!("hedgerow_test_things_total", "node" => "t").increment(2);
        let text = handle.render();
        assert!(
            text.contains("hedgerow_test_latency_seconds_bucket{node=\"t\",le=\"0.005\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("hedgerow_test_latency_seconds_bucket{node=\"t\",le=\"0.0025\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("hedgerow_test_things_total{node=\"t\"} 2"),
            "{text}"
        );
        assert!(exporter().is_ok(), "a second call reuses the recorder");
    }
}
