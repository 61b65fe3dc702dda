//! Prometheus text for `GET /metrics`: the node's own counters and gauges,
//! plus store call latencies measured here by wrapping the lease store
//! (the library does not time its store calls, so the CLI does), and the
//! outcomes of the KV puts HTTP callers asked for. A renew is told from a
//! takeover by the write itself: same holder nonce and token as this
//! node's last applied write.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use hedgerow::store::{CasOutcome, CoordStore, LeaseRow, LeaseStore, LeaseWrite, StoreError};
use hedgerow::Hedgerow;

/// Upper bounds of the latency histogram buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                self.counts[i] += 1;
            }
        }
        self.count += 1;
        self.sum += secs;
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (le, n) in BUCKETS.iter().zip(self.counts) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {n}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {}", self.sum);
        let _ = writeln!(out, "{name}_count {}", self.count);
    }
}

#[derive(Debug, Default)]
struct Timings {
    renew: Histogram,
    other_cas: Histogram,
    read: Histogram,
    errors: u64,
    /// `(nonce, token)` of this node's last applied write as holder.
    last_own: Option<(u64, u64)>,
}

/// Store call latencies of one node.
#[derive(Debug)]
pub struct StoreTimings {
    me: String,
    inner: Mutex<Timings>,
}

impl StoreTimings {
    /// Timings for the node `me`.
    pub fn new(me: &str) -> Self {
        StoreTimings {
            me: me.to_owned(),
            inner: Mutex::new(Timings::default()),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Timings) -> T) -> T {
        f(&mut self.inner.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// KV puts asked for over HTTP, by outcome (`ok`, or the error kind the
/// API answered with).
#[derive(Debug, Default)]
pub struct KvPuts {
    by_outcome: Mutex<BTreeMap<&'static str, u64>>,
}

impl KvPuts {
    /// Counts one put that ended in `outcome`.
    pub fn record(&self, outcome: &'static str) {
        let mut counts = self
            .by_outcome
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *counts.entry(outcome).or_default() += 1;
    }

    /// The counts, `ok` always among them (so a scrape shows the series
    /// before the first put).
    fn counts(&self) -> BTreeMap<&'static str, u64> {
        let mut counts = self
            .by_outcome
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        counts.entry("ok").or_default();
        counts
    }
}

/// A lease store that times each call into [`StoreTimings`].
pub struct TimedStore {
    inner: Box<dyn LeaseStore>,
    timings: std::sync::Arc<StoreTimings>,
}

impl TimedStore {
    /// Wraps `inner`.
    pub fn new(inner: Box<dyn LeaseStore>, timings: std::sync::Arc<StoreTimings>) -> Self {
        TimedStore { inner, timings }
    }
}

impl LeaseStore for TimedStore {
    fn read(&self, group: &str) -> Result<Option<LeaseRow>, StoreError> {
        let start = Instant::now();
        let result = self.inner.read(group);
        let secs = start.elapsed().as_secs_f64();
        self.timings.with(|t| {
            t.read.observe(secs);
            if result.is_err() {
                t.errors += 1;
            }
        });
        result
    }

    fn compare_and_set(
        &self,
        group: &str,
        expected_version: Option<u64>,
        write: &LeaseWrite,
    ) -> Result<CasOutcome, StoreError> {
        let start = Instant::now();
        let result = self.inner.compare_and_set(group, expected_version, write);
        let secs = start.elapsed().as_secs_f64();
        let mine = write
            .holder
            .as_ref()
            .filter(|h| h.id.as_str() == self.timings.me)
            .map(|h| (h.nonce, write.token.0));
        self.timings.with(|t| {
            let renew = mine.is_some() && mine == t.last_own;
            if renew {
                t.renew.observe(secs);
            } else {
                t.other_cas.observe(secs);
            }
            match &result {
                Ok(CasOutcome::Applied(_)) => t.last_own = mine,
                Ok(CasOutcome::Conflict(_)) => {}
                Err(_) => t.errors += 1,
            }
        });
        result
    }

    // Not timed (the coordination calls are counted by the node itself, in
    // `hedgerow_coord_store_ops_total`), but passed through: the trait's
    // default would hide the inner store's tables and refuse every put.
    fn coord(&self) -> Option<&dyn CoordStore> {
        self.inner.coord()
    }
}

/// The Prometheus text exposition of `node`, its store timings and its
/// HTTP callers' KV puts.
pub fn render(node: &Hedgerow, store: &StoreTimings, puts: &KvPuts) -> String {
    let stats = node.stats();
    let (view_term, view_version) = node.view_stamp();
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, kind: &str, value: u64| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        let _ = writeln!(out, "{name} {value}");
    };
    gauge(
        "hedgerow_term",
        "Highest term (fencing token) confirmed to this node.",
        "gauge",
        node.term().0,
    );
    gauge(
        "hedgerow_is_leader",
        "1 while this node holds the lease, from a fresh clock reading.",
        "gauge",
        u64::from(node.is_leader()),
    );
    gauge(
        "hedgerow_members",
        "Members in this node's current view.",
        "gauge",
        node.members().len() as u64,
    );
    gauge(
        "hedgerow_view_term",
        "Term of the leader that authored the current view.",
        "gauge",
        view_term.0,
    );
    gauge(
        "hedgerow_view_version",
        "Version of the current view within its term.",
        "gauge",
        view_version,
    );
    gauge(
        "hedgerow_view_stale",
        "1 while the view may be out of date (no live leader known).",
        "gauge",
        u64::from(node.view_is_stale()),
    );
    gauge(
        "hedgerow_messages_sent_total",
        "Protocol messages handed to the transport.",
        "counter",
        stats.messages_sent,
    );
    gauge(
        "hedgerow_messages_received_total",
        "Protocol messages received.",
        "counter",
        stats.messages_received,
    );
    gauge(
        "hedgerow_store_ops_total",
        "Lease store operations issued.",
        "counter",
        stats.store_ops,
    );
    gauge(
        "hedgerow_elections_won_total",
        "Times this node became leader.",
        "counter",
        stats.elections_won,
    );
    gauge(
        "hedgerow_leader_changes_total",
        "Times the leader this node follows changed (failovers seen).",
        "counter",
        stats.leader_changes,
    );
    gauge(
        "hedgerow_dedupe_entries",
        "Request ids remembered for at-most-once handling.",
        "gauge",
        stats.dedupe_entries as u64,
    );
    let net = node.transport_stats();
    let transport: [(&str, &str, &str, u64); 20] = [
        (
            "hedgerow_frame_budget_bytes",
            "The node's budget for bytes of frames being read.",
            "gauge",
            net.frame_budget as u64,
        ),
        (
            "hedgerow_frame_bytes_in_flight",
            "Bytes of frames being read now.",
            "gauge",
            net.frame_bytes_in_flight as u64,
        ),
        (
            "hedgerow_frame_bytes_peak",
            "Most bytes of frames ever in flight at once.",
            "gauge",
            net.frame_bytes_peak as u64,
        ),
        (
            "hedgerow_frame_budget_waits_total",
            "Times a connection waited for the frame budget.",
            "counter",
            net.frame_budget_waits,
        ),
        (
            "hedgerow_refused_handshake_slots_total",
            "New connections closed at once: too many handshakes in progress.",
            "counter",
            net.refused_handshake_slots,
        ),
        (
            "hedgerow_failed_handshakes_total",
            "Inbound handshakes that failed, timed out or were refused.",
            "counter",
            net.failed_handshakes,
        ),
        (
            "hedgerow_refused_inbound_total",
            "Peers refused after their hello: too many inbound connections.",
            "counter",
            net.refused_inbound,
        ),
        (
            "hedgerow_refused_per_address_total",
            "Peers refused after their hello: too many inbound connections from their address.",
            "counter",
            net.refused_per_address,
        ),
        (
            "hedgerow_replaced_same_id_total",
            "Inbound connections closed for a newer one claiming the same node id.",
            "counter",
            net.replaced_same_id,
        ),
        (
            "hedgerow_closed_slow_frame_total",
            "Connections closed: a frame not complete within the frame timeout.",
            "counter",
            net.closed_slow_frame,
        ),
        (
            "hedgerow_closed_budget_wait_total",
            "Connections closed: a frame waited for the budget past the frame timeout.",
            "counter",
            net.closed_budget_wait,
        ),
        (
            "hedgerow_closed_bad_frame_total",
            "Connections closed for a frame that broke the framing or the codec.",
            "counter",
            net.closed_bad_frame,
        ),
        (
            "hedgerow_closed_idle_total",
            "Connections closed as idle.",
            "counter",
            net.closed_idle,
        ),
        (
            "hedgerow_refused_plaintext_peer_total",
            "Peers refused: this node has TLS on, they spoke plaintext.",
            "counter",
            net.refused_plaintext_peer,
        ),
        (
            "hedgerow_refused_tls_peer_total",
            "Peers refused: this node has TLS off, they spoke TLS.",
            "counter",
            net.refused_tls_peer,
        ),
        (
            "hedgerow_refused_untrusted_cert_total",
            "TLS peers refused: certificate not from the cluster CA.",
            "counter",
            net.refused_untrusted_cert,
        ),
        (
            "hedgerow_refused_expired_cert_total",
            "TLS peers refused: certificate expired or not yet valid.",
            "counter",
            net.refused_expired_cert,
        ),
        (
            "hedgerow_refused_wrong_cluster_total",
            "TLS peers refused: certificate names no node of this cluster.",
            "counter",
            net.refused_wrong_cluster,
        ),
        (
            "hedgerow_refused_cert_id_mismatch_total",
            "TLS peers refused: hello claims an id the certificate does not name.",
            "counter",
            net.refused_cert_id_mismatch,
        ),
        (
            "hedgerow_failed_tls_handshakes_total",
            "TLS handshakes that failed otherwise (garbage, a peer's alert).",
            "counter",
            net.failed_tls_handshakes,
        ),
    ];
    for (name, help, kind, value) in transport {
        gauge(name, help, kind, value);
    }
    gauge(
        "hedgerow_permits_held",
        "Semaphore and lock permits this node holds.",
        "gauge",
        stats.permits_held as u64,
    );
    gauge(
        "hedgerow_coord_store_ops_total",
        "Coordination store operations issued (fenced writes and loads, as leader).",
        "counter",
        stats.coord_ops,
    );
    let t = store.with(|t| {
        (
            t.renew.clone(),
            t.other_cas.clone(),
            t.read.clone(),
            t.errors,
        )
    });
    gauge(
        "hedgerow_store_errors_total",
        "Lease store calls that failed.",
        "counter",
        t.3,
    );
    t.0.render(
        &mut out,
        "hedgerow_lease_renew_seconds",
        "Latency of lease renewals (compare-and-set by the holder).",
    );
    t.1.render(
        &mut out,
        "hedgerow_lease_cas_other_seconds",
        "Latency of other lease writes (takeovers, releases).",
    );
    t.2.render(
        &mut out,
        "hedgerow_lease_read_seconds",
        "Latency of lease row reads.",
    );
    let name = "hedgerow_kv_puts_total";
    let _ = writeln!(
        out,
        "# HELP {name} KV puts asked for over HTTP, by outcome (ok or the error kind)."
    );
    let _ = writeln!(out, "# TYPE {name} counter");
    for (outcome, n) in puts.counts() {
        let _ = writeln!(out, "{name}{{outcome=\"{outcome}\"}} {n}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use hedgerow::store::{Holder, MemoryStore};
    use hedgerow::{NodeId, Term};

    fn write(id: &str, nonce: u64, token: u64) -> LeaseWrite {
        LeaseWrite {
            holder: Some(Holder {
                id: NodeId::new(id).unwrap(),
                nonce,
                addr: "127.0.0.1:1".into(),
            }),
            token: Term(token),
            expires_ns: 1,
        }
    }

    #[test]
    fn kv_puts_are_counted_by_outcome_with_ok_always_shown() {
        let puts = KvPuts::default();
        assert_eq!(puts.counts().into_iter().collect::<Vec<_>>(), [("ok", 0)]);
        puts.record("timeout");
        puts.record("ok");
        puts.record("timeout");
        let counts: Vec<_> = puts.counts().into_iter().collect();
        assert_eq!(counts, [("ok", 1), ("timeout", 2)]);
    }

    #[test]
    fn renewals_are_told_from_takeovers() {
        let timings = std::sync::Arc::new(StoreTimings::new("a"));
        let store = TimedStore::new(Box::new(MemoryStore::new()), timings.clone());
        store.compare_and_set("g", None, &write("a", 7, 1)).unwrap();
        store
            .compare_and_set("g", Some(1), &write("a", 7, 1))
            .unwrap();
        store
            .compare_and_set("g", Some(2), &write("a", 7, 1))
            .unwrap();
        // A restarted process (new nonce) takes over: not a renew.
        store
            .compare_and_set("g", Some(3), &write("a", 8, 2))
            .unwrap();
        store.read("g").unwrap();
        assert!(
            store.coord().is_some(),
            "the coordination side is passed through"
        );
        timings.with(|t| {
            assert_eq!(t.renew.count, 2);
            assert_eq!(t.other_cas.count, 2);
            assert_eq!(t.read.count, 1);
        });
    }
}
