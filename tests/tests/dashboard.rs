//! `deploy/grafana/hedgerow.json` is a Grafana dashboard that parses,
//! queries only metrics the library emits (`hedgerow::metrics::ALL`, with
//! a histogram's `_bucket`, `_sum` and `_count` series), and shows what an
//! operator looks at first: leader, term, view size, failovers, store
//! latency and message rates.
#![allow(clippy::expect_used)]

use std::collections::BTreeSet;

use hedgerow::metrics::{MetricKind, ALL};
use serde_json::Value;

const DASHBOARD: &str = include_str!("../../deploy/grafana/hedgerow.json");

/// Every `hedgerow_…` name in `expr`.
fn names_in(expr: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("hedgerow_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(&tail[..end]);
        rest = &tail[end..];
    }
    names
}

/// The metric of ALL a series name belongs to.
fn emitted(series: &str) -> bool {
    ALL.iter().any(|m| {
        series == m.name
            || (m.kind == MetricKind::Histogram
                && ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|s| series.strip_suffix(s) == Some(m.name)))
    })
}

fn exprs(dashboard: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().expect("a panels list") {
        let targets = panel["targets"].as_array().expect("each panel has targets");
        assert!(
            !targets.is_empty(),
            "panel {} queries nothing",
            panel["title"]
        );
        for t in targets {
            out.push(t["expr"].as_str().expect("a PromQL expr").to_owned());
        }
    }
    for var in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(q) = var["definition"].as_str() {
            out.push(q.to_owned());
        }
    }
    out
}

#[test]
fn the_dashboard_parses_and_queries_only_emitted_metrics() {
    let dashboard: Value = serde_json::from_str(DASHBOARD).expect("the dashboard is JSON");
    assert_eq!(dashboard["uid"], "hedgerow");
    let exprs = exprs(&dashboard);
    let used: BTreeSet<&str> = exprs.iter().flat_map(|e| names_in(e)).collect();
    let unknown: Vec<_> = used.iter().filter(|n| !emitted(n)).collect();
    assert!(
        unknown.is_empty(),
        "not emitted by the library: {unknown:?}"
    );
    for needed in [
        "hedgerow_is_leader",
        "hedgerow_term",
        "hedgerow_members",
        "hedgerow_elections_won_total",
        "hedgerow_lease_renew_seconds_bucket",
        "hedgerow_transport_messages_out_total",
    ] {
        assert!(
            used.contains(needed),
            "the dashboard does not show {needed}"
        );
    }
}

#[test]
fn names_are_found_in_promql() {
    assert_eq!(
        names_in("sum(rate(hedgerow_a_total{x=\"y\"}[5m])) / hedgerow_b"),
        ["hedgerow_a_total", "hedgerow_b"]
    );
    assert!(emitted("hedgerow_send_seconds_bucket"));
    assert!(!emitted("hedgerow_term_bucket"));
    assert!(!emitted("hedgerow_nonexistent"));
}
