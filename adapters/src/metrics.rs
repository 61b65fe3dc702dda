//! The library's metrics, through the [`metrics`](https://docs.rs/metrics)
//! facade: this room owns every name, label and help text (the consts
//! below, listed in [`ALL`]), and the handles a node records through.
//! The application picks the exporter (`metrics-exporter-prometheus`, as
//! the `hedgerow` command does, or any other recorder); with none
//! installed every handle is a no-op. With the `metrics` cargo feature
//! off (it is on by default) nothing is registered at all.
//!
//! Every series carries the labels `cluster` and `node`, so several nodes
//! in one process stay apart. Counters the core and the transport already
//! keep ([`NodeStats`], [`TransportStats`]) are published from them as
//! absolute values about once a second, and at once after a leadership or
//! view event: one source of truth. Latencies and outcomes, which nothing
//! else counts, are recorded as they happen. This room never decides
//! anything; it only names and records.
//!
//! | name | type | labels (besides `cluster`, `node`) | unit | meaning |
//! |---|---|---|---|---|
//! | `hedgerow_term` | gauge | | | highest term (fencing token) confirmed to this node |
//! | `hedgerow_is_leader` | gauge | | | 1 while this node holds the lease |
//! | `hedgerow_members` | gauge | | | members in this node's current view |
//! | `hedgerow_view_term` | gauge | | | term of the leader that authored the current view |
//! | `hedgerow_view_version` | gauge | | | version of the current view within its term |
//! | `hedgerow_view_stale` | gauge | | | 1 while the view may be out of date |
//! | `hedgerow_dedupe_entries` | gauge | | | request ids remembered for at-most-once handling |
//! | `hedgerow_permits_held` | gauge | | | semaphore and lock permits this node holds |
//! | `hedgerow_elections_won_total` | counter | | | times this node became leader |
//! | `hedgerow_leader_changes_total` | counter | | | times the leader this node follows changed |
//! | `hedgerow_step_downs_total` | counter | `reason` | | times this node stopped leading, by why |
//! | `hedgerow_members_left_total` | counter | `reason` | | members that left this node's view: `failed` is a failure verdict |
//! | `hedgerow_messages_sent_total` | counter | | | protocol messages the node handed out (loopback included) |
//! | `hedgerow_messages_received_total` | counter | | | protocol messages the node received |
//! | `hedgerow_transport_messages_out_total` | counter | `kind` | | frames queued on a connection, by message kind |
//! | `hedgerow_transport_messages_in_total` | counter | `kind` | | frames read from a connection, by message kind |
//! | `hedgerow_transport_bytes_out_total` | counter | `kind` | bytes | encoded bytes queued on a connection, by message kind |
//! | `hedgerow_transport_bytes_in_total` | counter | `kind` | bytes | frame bytes read from a connection, by message kind |
//! | `hedgerow_store_ops_total` | counter | | | lease store operations the node issued |
//! | `hedgerow_coord_store_ops_total` | counter | | | coordination store operations issued (as leader) |
//! | `hedgerow_store_errors_total` | counter | | | lease store calls that failed or timed out |
//! | `hedgerow_store_results_total` | counter | `kind`, `outcome` | | store calls by kind and outcome |
//! | `hedgerow_lease_read_seconds` | histogram | | seconds | latency of lease row reads |
//! | `hedgerow_lease_renew_seconds` | histogram | | seconds | latency of renewals (CAS by the holder) |
//! | `hedgerow_lease_cas_other_seconds` | histogram | | seconds | latency of other lease writes (takeovers, releases) |
//! | `hedgerow_coord_store_op_seconds` | histogram | `kind` | seconds | latency of coordination store calls |
//! | `hedgerow_send_seconds` | histogram | | seconds | a `send` from the call to its outcome |
//! | `hedgerow_sends_total` | counter | `outcome` | | sends by outcome |
//! | `hedgerow_broadcast_seconds` | histogram | | seconds | a broadcast from the call to its last reply |
//! | `hedgerow_broadcast_replies_total` | counter | `outcome` | | per-member broadcast outcomes |
//! | `hedgerow_stream_bytes_out_total` | counter | | bytes | stream bytes written by this node's streams |
//! | `hedgerow_stream_bytes_in_total` | counter | | bytes | stream bytes delivered to this node's readers |
//! | `hedgerow_kv_puts_total` | counter | `outcome` | | KV puts by outcome |
//! | `hedgerow_frame_budget_bytes` | gauge | | bytes | the node's budget for frames being read |
//! | `hedgerow_frame_bytes_in_flight` | gauge | | bytes | bytes of frames being read now |
//! | `hedgerow_frame_bytes_peak` | gauge | | bytes | most bytes of frames in flight at once |
//! | `hedgerow_frame_budget_waits_total` | counter | | | times a connection waited for the frame budget |
//! | `hedgerow_refused_handshake_slots_total` | counter | | | connections closed at once: too many handshakes |
//! | `hedgerow_failed_handshakes_total` | counter | | | inbound handshakes that failed or were refused |
//! | `hedgerow_refused_inbound_total` | counter | | | peers refused: too many inbound connections |
//! | `hedgerow_refused_per_address_total` | counter | | | peers refused: too many from their address |
//! | `hedgerow_replaced_same_id_total` | counter | | | inbound connections replaced by a newer one of the same id |
//! | `hedgerow_closed_slow_frame_total` | counter | | | connections closed: a frame not complete in time |
//! | `hedgerow_closed_budget_wait_total` | counter | | | connections closed: a frame waited too long for the budget |
//! | `hedgerow_closed_bad_frame_total` | counter | | | connections closed for a frame that broke the codec |
//! | `hedgerow_closed_idle_total` | counter | | | connections closed as idle |
//! | `hedgerow_refused_plaintext_peer_total` | counter | | | peers refused: this node has TLS on, they spoke plaintext |
//! | `hedgerow_refused_tls_peer_total` | counter | | | peers refused: this node has TLS off, they spoke TLS |
//! | `hedgerow_refused_untrusted_cert_total` | counter | | | TLS peers refused: certificate not from the cluster CA |
//! | `hedgerow_refused_expired_cert_total` | counter | | | TLS peers refused: certificate expired or not yet valid |
//! | `hedgerow_refused_wrong_cluster_total` | counter | | | TLS peers refused: certificate names no node of this cluster |
//! | `hedgerow_refused_cert_id_mismatch_total` | counter | | | TLS peers refused: hello claims an id the certificate does not name |
//! | `hedgerow_failed_tls_handshakes_total` | counter | | | TLS handshakes that failed otherwise (garbage, a peer's alert) |
//!
//! Label values: `kind` of a message is [`Message::kind`](hedgerow_core::Message::kind)
//! (`heartbeat`, `request`, `stream_data`, …); `kind` of a store call is
//! `read`, `renew`, `cas_other` (takeover, release, first insert), or a
//! coordination call `put`, `grant`, `free`, `load_permits`, `kv_read`;
//! `outcome` of a store call is `ok`, `conflict`, `error`, `timeout`,
//! `unsupported`; of a send `ok`, `timeout`, `no_leader`, `failed`,
//! `overloaded`; of a broadcast reply `ok`, `timeout`, `failed`,
//! `not_member`, `left`; of a KV put `ok`, `no_leader`, `timeout`, `overloaded`,
//! `invalid`, `refused`, `store`, `failed` (the error kinds of the
//! `hedgerow` command's HTTP API).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ::metrics::{Counter, Gauge, Histogram, Label};
use hedgerow_core::{BroadcastError, LeaveReason, NodeStats, SendError, StepDownReason, Term};

use crate::transport::TransportStats;

/// What a metric is, as Prometheus types it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MetricKind {
    /// Only goes up (it restarts at zero with the process).
    Counter,
    /// A value now.
    Gauge,
    /// A distribution of observations (buckets, sum, count).
    Histogram,
}

/// One metric the library emits: its name, type, labels besides
/// [`CLUSTER`] and [`NODE`], unit and meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Metric {
    /// The name, in Prometheus form.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: MetricKind,
    /// Labels besides `cluster` and `node`.
    pub labels: &'static [&'static str],
    /// `seconds`, `bytes`, or empty for a plain count.
    pub unit: &'static str,
    /// The help text.
    pub help: &'static str,
}

/// The label naming the cluster, on every series.
pub const CLUSTER: &str = "cluster";
/// The label naming the node, on every series.
pub const NODE: &str = "node";

const fn metric(
    name: &'static str,
    kind: MetricKind,
    labels: &'static [&'static str],
    unit: &'static str,
    help: &'static str,
) -> Metric {
    Metric {
        name,
        kind,
        labels,
        unit,
        help,
    }
}

use MetricKind::{Counter as C, Gauge as G, Histogram as H};

macro_rules! metrics_table {
    ($($(#[$doc:meta])* $id:ident = ($name:literal, $kind:expr, $labels:expr, $unit:literal, $help:literal);)*) => {
        $( $(#[$doc])* pub const $id: Metric = metric($name, $kind, $labels, $unit, $help); )*
        /// Every metric the library emits, in the order of the table above.
        pub const ALL: &[Metric] = &[$($id),*];
    };
}

metrics_table! {
    /// `hedgerow_term`
    TERM = ("hedgerow_term", G, &[], "", "Highest term (fencing token) confirmed to this node.");
    /// `hedgerow_is_leader`
    IS_LEADER = ("hedgerow_is_leader", G, &[], "", "1 while this node holds the lease, from a fresh clock reading.");
    /// `hedgerow_members`
    MEMBERS = ("hedgerow_members", G, &[], "", "Members in this node's current view.");
    /// `hedgerow_view_term`
    VIEW_TERM = ("hedgerow_view_term", G, &[], "", "Term of the leader that authored the current view.");
    /// `hedgerow_view_version`
    VIEW_VERSION = ("hedgerow_view_version", G, &[], "", "Version of the current view within its term.");
    /// `hedgerow_view_stale`
    VIEW_STALE = ("hedgerow_view_stale", G, &[], "", "1 while the view may be out of date (no live leader known).");
    /// `hedgerow_dedupe_entries`
    DEDUPE_ENTRIES = ("hedgerow_dedupe_entries", G, &[], "", "Request ids remembered for at-most-once handling.");
    /// `hedgerow_permits_held`
    PERMITS_HELD = ("hedgerow_permits_held", G, &[], "", "Semaphore and lock permits this node holds.");
    /// `hedgerow_elections_won_total`
    ELECTIONS_WON = ("hedgerow_elections_won_total", C, &[], "", "Times this node became leader.");
    /// `hedgerow_leader_changes_total`
    LEADER_CHANGES = ("hedgerow_leader_changes_total", C, &[], "", "Times the leader this node follows changed (failovers seen).");
    /// `hedgerow_step_downs_total`
    STEP_DOWNS = ("hedgerow_step_downs_total", C, &["reason"], "", "Times this node stopped leading, by reason.");
    /// `hedgerow_members_left_total`
    MEMBERS_LEFT = ("hedgerow_members_left_total", C, &["reason"], "", "Members that left this node's view, by reason (failed: a failure verdict).");
    /// `hedgerow_messages_sent_total`
    MESSAGES_SENT = ("hedgerow_messages_sent_total", C, &[], "", "Protocol messages handed to the transport.");
    /// `hedgerow_messages_received_total`
    MESSAGES_RECEIVED = ("hedgerow_messages_received_total", C, &[], "", "Protocol messages received.");
    /// `hedgerow_transport_messages_out_total`
    TRANSPORT_MESSAGES_OUT = ("hedgerow_transport_messages_out_total", C, &["kind"], "", "Frames queued on a connection, by message kind.");
    /// `hedgerow_transport_messages_in_total`
    TRANSPORT_MESSAGES_IN = ("hedgerow_transport_messages_in_total", C, &["kind"], "", "Frames read from a connection, by message kind.");
    /// `hedgerow_transport_bytes_out_total`
    TRANSPORT_BYTES_OUT = ("hedgerow_transport_bytes_out_total", C, &["kind"], "bytes", "Encoded bytes queued on a connection, by message kind.");
    /// `hedgerow_transport_bytes_in_total`
    TRANSPORT_BYTES_IN = ("hedgerow_transport_bytes_in_total", C, &["kind"], "bytes", "Frame bytes read from a connection, by message kind.");
    /// `hedgerow_store_ops_total`
    STORE_OPS = ("hedgerow_store_ops_total", C, &[], "", "Lease store operations issued.");
    /// `hedgerow_coord_store_ops_total`
    COORD_STORE_OPS = ("hedgerow_coord_store_ops_total", C, &[], "", "Coordination store operations issued (fenced writes and loads, as leader).");
    /// `hedgerow_store_errors_total`
    STORE_ERRORS = ("hedgerow_store_errors_total", C, &[], "", "Lease store calls that failed or timed out.");
    /// `hedgerow_store_results_total`
    STORE_RESULTS = ("hedgerow_store_results_total", C, &["kind", "outcome"], "", "Store calls by kind and outcome.");
    /// `hedgerow_lease_read_seconds`
    LEASE_READ_SECONDS = ("hedgerow_lease_read_seconds", H, &[], "seconds", "Latency of lease row reads.");
    /// `hedgerow_lease_renew_seconds`
    LEASE_RENEW_SECONDS = ("hedgerow_lease_renew_seconds", H, &[], "seconds", "Latency of lease renewals (compare-and-set by the holder).");
    /// `hedgerow_lease_cas_other_seconds`
    LEASE_CAS_OTHER_SECONDS = ("hedgerow_lease_cas_other_seconds", H, &[], "seconds", "Latency of other lease writes (takeovers, releases).");
    /// `hedgerow_coord_store_op_seconds`
    COORD_STORE_OP_SECONDS = ("hedgerow_coord_store_op_seconds", H, &["kind"], "seconds", "Latency of coordination store calls, by kind.");
    /// `hedgerow_send_seconds`
    SEND_SECONDS = ("hedgerow_send_seconds", H, &[], "seconds", "A send to the leader, from the call to its outcome.");
    /// `hedgerow_sends_total`
    SENDS = ("hedgerow_sends_total", C, &["outcome"], "", "Sends to the leader by outcome.");
    /// `hedgerow_broadcast_seconds`
    BROADCAST_SECONDS = ("hedgerow_broadcast_seconds", H, &[], "seconds", "A broadcast, from the call to its last member's reply.");
    /// `hedgerow_broadcast_replies_total`
    BROADCAST_REPLIES = ("hedgerow_broadcast_replies_total", C, &["outcome"], "", "Per-member broadcast outcomes.");
    /// `hedgerow_stream_bytes_out_total`
    STREAM_BYTES_OUT = ("hedgerow_stream_bytes_out_total", C, &[], "bytes", "Stream bytes written by this node's streams.");
    /// `hedgerow_stream_bytes_in_total`
    STREAM_BYTES_IN = ("hedgerow_stream_bytes_in_total", C, &[], "bytes", "Stream bytes delivered to this node's stream readers.");
    /// `hedgerow_kv_puts_total`
    KV_PUTS = ("hedgerow_kv_puts_total", C, &["outcome"], "", "KV puts by outcome.");
    /// `hedgerow_frame_budget_bytes`
    FRAME_BUDGET = ("hedgerow_frame_budget_bytes", G, &[], "bytes", "The node's budget for bytes of frames being read.");
    /// `hedgerow_frame_bytes_in_flight`
    FRAME_BYTES_IN_FLIGHT = ("hedgerow_frame_bytes_in_flight", G, &[], "bytes", "Bytes of frames being read now.");
    /// `hedgerow_frame_bytes_peak`
    FRAME_BYTES_PEAK = ("hedgerow_frame_bytes_peak", G, &[], "bytes", "Most bytes of frames ever in flight at once.");
    /// `hedgerow_frame_budget_waits_total`
    FRAME_BUDGET_WAITS = ("hedgerow_frame_budget_waits_total", C, &[], "", "Times a connection waited for the frame budget.");
    /// `hedgerow_refused_handshake_slots_total`
    REFUSED_HANDSHAKE_SLOTS = ("hedgerow_refused_handshake_slots_total", C, &[], "", "New connections closed at once: too many handshakes in progress.");
    /// `hedgerow_failed_handshakes_total`
    FAILED_HANDSHAKES = ("hedgerow_failed_handshakes_total", C, &[], "", "Inbound handshakes that failed, timed out or were refused.");
    /// `hedgerow_refused_inbound_total`
    REFUSED_INBOUND = ("hedgerow_refused_inbound_total", C, &[], "", "Peers refused after their hello: too many inbound connections.");
    /// `hedgerow_refused_per_address_total`
    REFUSED_PER_ADDRESS = ("hedgerow_refused_per_address_total", C, &[], "", "Peers refused after their hello: too many inbound connections from their address.");
    /// `hedgerow_replaced_same_id_total`
    REPLACED_SAME_ID = ("hedgerow_replaced_same_id_total", C, &[], "", "Inbound connections closed for a newer one claiming the same node id.");
    /// `hedgerow_closed_slow_frame_total`
    CLOSED_SLOW_FRAME = ("hedgerow_closed_slow_frame_total", C, &[], "", "Connections closed: a frame not complete within the frame timeout.");
    /// `hedgerow_closed_budget_wait_total`
    CLOSED_BUDGET_WAIT = ("hedgerow_closed_budget_wait_total", C, &[], "", "Connections closed: a frame waited for the budget past the frame timeout.");
    /// `hedgerow_closed_bad_frame_total`
    CLOSED_BAD_FRAME = ("hedgerow_closed_bad_frame_total", C, &[], "", "Connections closed for a frame that broke the framing or the codec.");
    /// `hedgerow_closed_idle_total`
    CLOSED_IDLE = ("hedgerow_closed_idle_total", C, &[], "", "Connections closed as idle.");
    /// `hedgerow_refused_plaintext_peer_total`
    REFUSED_PLAINTEXT_PEER = ("hedgerow_refused_plaintext_peer_total", C, &[], "", "Peers refused: this node has TLS on, they spoke plaintext.");
    /// `hedgerow_refused_tls_peer_total`
    REFUSED_TLS_PEER = ("hedgerow_refused_tls_peer_total", C, &[], "", "Peers refused: this node has TLS off, they spoke TLS.");
    /// `hedgerow_refused_untrusted_cert_total`
    REFUSED_UNTRUSTED_CERT = ("hedgerow_refused_untrusted_cert_total", C, &[], "", "TLS peers refused: certificate not from the cluster CA.");
    /// `hedgerow_refused_expired_cert_total`
    REFUSED_EXPIRED_CERT = ("hedgerow_refused_expired_cert_total", C, &[], "", "TLS peers refused: certificate expired or not yet valid.");
    /// `hedgerow_refused_wrong_cluster_total`
    REFUSED_WRONG_CLUSTER = ("hedgerow_refused_wrong_cluster_total", C, &[], "", "TLS peers refused: certificate names no node of this cluster.");
    /// `hedgerow_refused_cert_id_mismatch_total`
    REFUSED_CERT_ID_MISMATCH = ("hedgerow_refused_cert_id_mismatch_total", C, &[], "", "TLS peers refused: hello claims an id the certificate does not name.");
    /// `hedgerow_failed_tls_handshakes_total`
    FAILED_TLS_HANDSHAKES = ("hedgerow_failed_tls_handshakes_total", C, &[], "", "TLS handshakes that failed otherwise (garbage, a peer's alert).");
}

/// How often the published counters and gauges are refreshed when no
/// event asked for it sooner.
const PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// The labels of one node's series, `cluster` and `node`, plus any extra.
#[derive(Clone)]
struct Labels(Vec<Label>);

impl Labels {
    fn with(&self, extra: &[(&'static str, &'static str)]) -> Vec<Label> {
        let mut labels = self.0.clone();
        labels.extend(extra.iter().map(|(k, v)| Label::new(*k, *v)));
        labels
    }

    fn counter(&self, m: Metric, extra: &[(&'static str, &'static str)]) -> Counter {
        if !cfg!(feature = "metrics") {
            return Counter::noop();
        }
        ::metrics::counter!(m.name, self.with(extra))
    }

    fn gauge(&self, m: Metric) -> Gauge {
        if !cfg!(feature = "metrics") {
            return Gauge::noop();
        }
        ::metrics::gauge!(m.name, self.with(&[]))
    }

    fn histogram(&self, m: Metric, extra: &[(&'static str, &'static str)]) -> Histogram {
        if !cfg!(feature = "metrics") {
            return Histogram::noop();
        }
        ::metrics::histogram!(m.name, self.with(extra))
    }
}

/// Tells the installed recorder the help text and unit of every metric
/// (an exporter shows them as `# HELP`); cheap, done once per node.
fn describe_all() {
    if !cfg!(feature = "metrics") {
        return;
    }
    for m in ALL {
        let unit = match m.unit {
            "seconds" => Some(::metrics::Unit::Seconds),
            "bytes" => Some(::metrics::Unit::Bytes),
            _ => None,
        };
        ::metrics::with_recorder(|r| {
            let key = ::metrics::KeyName::from_const_str(m.name);
            let help = ::metrics::SharedString::const_str(m.help);
            match m.kind {
                MetricKind::Counter => r.describe_counter(key, unit, help),
                MetricKind::Gauge => r.describe_gauge(key, unit, help),
                MetricKind::Histogram => r.describe_histogram(key, unit, help),
            }
        });
    }
}

/// Counters keyed by one label whose values are `&'static str`s seen as
/// they come (message kinds, outcomes), each registered the first time
/// its value is seen.
struct Family {
    labels: Labels,
    metric: Metric,
    /// Label values already registered: a handful, so a scan beats a map.
    seen: Vec<(&'static str, Counter)>,
}

impl Family {
    fn new(labels: &Labels, metric: Metric) -> Self {
        Family {
            labels: labels.clone(),
            metric,
            seen: Vec::new(),
        }
    }

    fn get(&mut self, value: &'static str) -> &Counter {
        // Values are string literals, passed again at the same address as
        // a rule: a scan by address first, then by content.
        let at = self
            .seen
            .iter()
            .position(|(v, _)| std::ptr::eq(*v, value))
            .or_else(|| self.seen.iter().position(|(v, _)| *v == value));
        let at = match at {
            Some(at) => at,
            None => {
                let key = self.metric.labels[0];
                let c = self.labels.counter(self.metric, &[(key, value)]);
                self.seen.push((value, c));
                self.seen.len() - 1
            }
        };
        &self.seen[at].1
    }
}

/// Everything one node records through, split into the parts each of
/// the driver's books keeps.
pub(crate) struct NodeMetrics {
    pub(crate) published: Published,
    pub(crate) traffic: Traffic,
    pub(crate) store: StoreMetrics,
    pub(crate) calls: CallMetrics,
    pub(crate) events: EventMetrics,
}

impl NodeMetrics {
    /// The handles of node `node` in cluster `cluster`, registered with
    /// whatever recorder is installed now.
    pub(crate) fn new(cluster: &str, node: &str) -> Self {
        describe_all();
        let labels = Labels(vec![
            Label::new(CLUSTER, cluster.to_owned()),
            Label::new(NODE, node.to_owned()),
        ]);
        NodeMetrics {
            published: Published::new(&labels),
            traffic: Traffic::new(&labels),
            store: StoreMetrics::new(&labels),
            calls: CallMetrics::new(&labels),
            events: EventMetrics::new(&labels),
        }
    }
}

/// What the driver reads off the node and the transport to publish.
pub(crate) struct Snapshot {
    pub(crate) term: Term,
    pub(crate) is_leader: bool,
    pub(crate) members: usize,
    pub(crate) view: (Term, u64),
    pub(crate) stale: bool,
    pub(crate) node: NodeStats,
    pub(crate) net: TransportStats,
}

/// The gauges and counters published from [`NodeStats`] and
/// [`TransportStats`] as absolute values.
pub(crate) struct Published {
    gauges: [Gauge; 11],
    counters: [Counter; 23],
    next: Option<Instant>,
    dirty: bool,
}

impl Published {
    fn new(l: &Labels) -> Self {
        let gauges = [
            TERM,
            IS_LEADER,
            MEMBERS,
            VIEW_TERM,
            VIEW_VERSION,
            VIEW_STALE,
            DEDUPE_ENTRIES,
            PERMITS_HELD,
            FRAME_BUDGET,
            FRAME_BYTES_IN_FLIGHT,
            FRAME_BYTES_PEAK,
        ]
        .map(|m| l.gauge(m));
        let counters = [
            ELECTIONS_WON,
            LEADER_CHANGES,
            MESSAGES_SENT,
            MESSAGES_RECEIVED,
            STORE_OPS,
            COORD_STORE_OPS,
            FRAME_BUDGET_WAITS,
            REFUSED_HANDSHAKE_SLOTS,
            FAILED_HANDSHAKES,
            REFUSED_INBOUND,
            REFUSED_PER_ADDRESS,
            REPLACED_SAME_ID,
            CLOSED_SLOW_FRAME,
            CLOSED_BUDGET_WAIT,
            CLOSED_BAD_FRAME,
            CLOSED_IDLE,
            REFUSED_PLAINTEXT_PEER,
            REFUSED_TLS_PEER,
            REFUSED_UNTRUSTED_CERT,
            REFUSED_EXPIRED_CERT,
            REFUSED_WRONG_CLUSTER,
            REFUSED_CERT_ID_MISMATCH,
            FAILED_TLS_HANDSHAKES,
        ]
        .map(|m| l.counter(m, &[]));
        Published {
            gauges,
            counters,
            next: None,
            dirty: true,
        }
    }

    /// Something the gauges show changed (a leadership or view event):
    /// publish at the next chance rather than at the next second.
    pub(crate) fn touch(&mut self) {
        self.dirty = true;
    }

    /// Whether it is time to publish at runtime instant `now`.
    pub(crate) fn due(&self, now: Instant) -> bool {
        self.dirty || self.next.is_none_or(|next| now >= next)
    }

    /// Whether an event asked for a publish.
    pub(crate) fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Sets every published series from `s`, taken at `now`.
    pub(crate) fn publish(&mut self, now: Instant, s: &Snapshot) {
        self.dirty = false;
        self.next = Some(now + PUBLISH_EVERY);
        let (n, t) = (&s.node, &s.net);
        let gauges = [
            s.term.0 as f64,
            f64::from(u8::from(s.is_leader)),
            s.members as f64,
            s.view.0 .0 as f64,
            s.view.1 as f64,
            f64::from(u8::from(s.stale)),
            n.dedupe_entries as f64,
            n.permits_held as f64,
            t.frame_budget as f64,
            t.frame_bytes_in_flight as f64,
            t.frame_bytes_peak as f64,
        ];
        for (g, v) in self.gauges.iter().zip(gauges) {
            g.set(v);
        }
        let counters = [
            n.elections_won,
            n.leader_changes,
            n.messages_sent,
            n.messages_received,
            n.store_ops,
            n.coord_ops,
            t.frame_budget_waits,
            t.refused_handshake_slots,
            t.failed_handshakes,
            t.refused_inbound,
            t.refused_per_address,
            t.replaced_same_id,
            t.closed_slow_frame,
            t.closed_budget_wait,
            t.closed_bad_frame,
            t.closed_idle,
            t.refused_plaintext_peer,
            t.refused_tls_peer,
            t.refused_untrusted_cert,
            t.refused_expired_cert,
            t.refused_wrong_cluster,
            t.refused_cert_id_mismatch,
            t.failed_tls_handshakes,
        ];
        for (c, v) in self.counters.iter().zip(counters) {
            c.absolute(v);
        }
    }
}

/// Frames and bytes on connections, by message kind.
pub(crate) struct Traffic {
    out: KindPairs,
    inbound: KindPairs,
}

impl Traffic {
    fn new(l: &Labels) -> Self {
        Traffic {
            out: KindPairs::new(l, TRANSPORT_MESSAGES_OUT, TRANSPORT_BYTES_OUT),
            inbound: KindPairs::new(l, TRANSPORT_MESSAGES_IN, TRANSPORT_BYTES_IN),
        }
    }

    /// A frame of `kind` and `bytes` encoded bytes was queued.
    pub(crate) fn sent(&mut self, kind: &'static str, bytes: usize) {
        self.out.count(kind, bytes);
    }

    /// A frame of `kind` and `bytes` bytes was read.
    pub(crate) fn received(&mut self, kind: &'static str, bytes: usize) {
        self.inbound.count(kind, bytes);
    }
}

/// A frame counter and a byte counter by message kind, found together:
/// one lookup per frame instead of one per counter (two frames a request).
struct KindPairs {
    labels: Labels,
    frames: Metric,
    bytes: Metric,
    /// Kinds seen, each with its counters (found as in [`Family::get`]).
    seen: Vec<(&'static str, Counter, Counter)>,
}

impl KindPairs {
    fn new(l: &Labels, frames: Metric, bytes: Metric) -> Self {
        KindPairs {
            labels: l.clone(),
            frames,
            bytes,
            seen: Vec::new(),
        }
    }

    fn count(&mut self, kind: &'static str, bytes: usize) {
        let at = self
            .seen
            .iter()
            .position(|(k, ..)| std::ptr::eq(*k, kind))
            .or_else(|| self.seen.iter().position(|(k, ..)| *k == kind));
        let at = at.unwrap_or_else(|| {
            let counter = |m: Metric| self.labels.counter(m, &[(m.labels[0], kind)]);
            let (f, b) = (counter(self.frames), counter(self.bytes));
            self.seen.push((kind, f, b));
            self.seen.len() - 1
        });
        let (_, f, b) = &self.seen[at];
        f.increment(1);
        b.increment(bytes as u64);
    }
}

/// What kind of store call a [`StoreTimer`] times.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StoreKind {
    Read,
    Renew,
    CasOther,
    Put,
    Grant,
    Free,
    LoadPermits,
    KvRead,
}

impl StoreKind {
    const ALL: [StoreKind; 8] = [
        StoreKind::Read,
        StoreKind::Renew,
        StoreKind::CasOther,
        StoreKind::Put,
        StoreKind::Grant,
        StoreKind::Free,
        StoreKind::LoadPermits,
        StoreKind::KvRead,
    ];

    /// The `kind` label value.
    pub(crate) fn label(self) -> &'static str {
        match self {
            StoreKind::Read => "read",
            StoreKind::Renew => "renew",
            StoreKind::CasOther => "cas_other",
            StoreKind::Put => "put",
            StoreKind::Grant => "grant",
            StoreKind::Free => "free",
            StoreKind::LoadPermits => "load_permits",
            StoreKind::KvRead => "kv_read",
        }
    }

    fn is_lease(self) -> bool {
        matches!(
            self,
            StoreKind::Read | StoreKind::Renew | StoreKind::CasOther
        )
    }
}

/// How a store call ended, as the `outcome` label says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StoreOutcome {
    Ok,
    Conflict,
    Error,
    Timeout,
    Unsupported,
}

impl StoreOutcome {
    const ALL: [StoreOutcome; 5] = [
        StoreOutcome::Ok,
        StoreOutcome::Conflict,
        StoreOutcome::Error,
        StoreOutcome::Timeout,
        StoreOutcome::Unsupported,
    ];

    fn label(self) -> &'static str {
        match self {
            StoreOutcome::Ok => "ok",
            StoreOutcome::Conflict => "conflict",
            StoreOutcome::Error => "error",
            StoreOutcome::Timeout => "timeout",
            StoreOutcome::Unsupported => "unsupported",
        }
    }

    /// The outcome of a failed call.
    pub(crate) fn of_error(e: &hedgerow_core::StoreError) -> Self {
        match e {
            hedgerow_core::StoreError::Timeout => StoreOutcome::Timeout,
            hedgerow_core::StoreError::Unsupported => StoreOutcome::Unsupported,
            _ => StoreOutcome::Error,
        }
    }
}

/// The handles of one kind of store call: its latency and its outcomes.
struct StoreOp {
    kind: StoreKind,
    seconds: Histogram,
    outcomes: [Counter; 5],
    /// Lease calls only: `hedgerow_store_errors_total`.
    errors: Option<Counter>,
}

/// Store call latencies and outcomes, by kind; shared with the tasks that
/// wait on the calls.
#[derive(Clone)]
pub(crate) struct StoreMetrics(Arc<[StoreOp; 8]>);

impl StoreMetrics {
    fn new(l: &Labels) -> Self {
        let errors = l.counter(STORE_ERRORS, &[]);
        StoreMetrics(Arc::new(StoreKind::ALL.map(|kind| {
            let seconds = match kind {
                StoreKind::Read => l.histogram(LEASE_READ_SECONDS, &[]),
                StoreKind::Renew => l.histogram(LEASE_RENEW_SECONDS, &[]),
                StoreKind::CasOther => l.histogram(LEASE_CAS_OTHER_SECONDS, &[]),
                _ => l.histogram(COORD_STORE_OP_SECONDS, &[("kind", kind.label())]),
            };
            let outcomes = StoreOutcome::ALL.map(|o| {
                l.counter(
                    STORE_RESULTS,
                    &[("kind", kind.label()), ("outcome", o.label())],
                )
            });
            StoreOp {
                kind,
                seconds,
                outcomes,
                errors: kind.is_lease().then(|| errors.clone()),
            }
        })))
    }

    /// Starts timing a call of `kind`.
    pub(crate) fn start(&self, kind: StoreKind) -> StoreTimer {
        StoreTimer {
            ops: self.clone(),
            kind,
            started: Instant::now(),
        }
    }
}

/// One store call being timed.
pub(crate) struct StoreTimer {
    ops: StoreMetrics,
    kind: StoreKind,
    started: Instant,
}

impl StoreTimer {
    /// The call's kind.
    pub(crate) fn kind(&self) -> StoreKind {
        self.kind
    }

    /// The call ended with `outcome`.
    pub(crate) fn finish(self, outcome: StoreOutcome) {
        let Some(op) = self.ops.0.iter().find(|op| op.kind == self.kind) else {
            return;
        };
        op.seconds.record(self.started.elapsed());
        if let Some(i) = StoreOutcome::ALL.iter().position(|o| *o == outcome) {
            op.outcomes[i].increment(1);
        }
        if let (Some(errors), StoreOutcome::Error | StoreOutcome::Timeout) = (&op.errors, outcome) {
            errors.increment(1);
        }
    }
}

/// Sends, broadcasts, streams and KV puts the application asked for.
pub(crate) struct CallMetrics {
    send_seconds: Histogram,
    sends: Family,
    broadcast_seconds: Histogram,
    broadcast_replies: Family,
    stream_out: Counter,
    stream_in: Counter,
    kv_puts: Family,
}

impl CallMetrics {
    fn new(l: &Labels) -> Self {
        let mut calls = CallMetrics {
            send_seconds: l.histogram(SEND_SECONDS, &[]),
            sends: Family::new(l, SENDS),
            broadcast_seconds: l.histogram(BROADCAST_SECONDS, &[]),
            broadcast_replies: Family::new(l, BROADCAST_REPLIES),
            stream_out: l.counter(STREAM_BYTES_OUT, &[]),
            stream_in: l.counter(STREAM_BYTES_IN, &[]),
            kv_puts: Family::new(l, KV_PUTS),
        };
        // Shown from the start, so a scrape has the series before the
        // first call (a rate over them needs a zero to start from).
        calls.sends.get("ok");
        calls.kv_puts.get("ok");
        calls
    }

    /// A send started at `started` ended with `result`.
    pub(crate) fn send_done<T>(&mut self, started: Instant, result: &Result<T, SendError>) {
        self.send_seconds.record(started.elapsed());
        self.sends.get(send_outcome(result)).increment(1);
    }

    /// One member's reply to a broadcast (or its error) came.
    pub(crate) fn broadcast_reply<T>(&mut self, result: &Result<T, BroadcastError>) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(BroadcastError::Timeout) => "timeout",
            Err(BroadcastError::NotMember) => "not_member",
            Err(BroadcastError::Left) => "left",
            Err(_) => "failed",
        };
        self.broadcast_replies.get(outcome).increment(1);
    }

    /// A broadcast started at `started` had its last reply.
    pub(crate) fn broadcast_done(&self, started: Instant) {
        self.broadcast_seconds.record(started.elapsed());
    }

    /// `bytes` stream bytes were written by one of this node's streams.
    pub(crate) fn stream_out(&self, bytes: usize) {
        self.stream_out.increment(bytes as u64);
    }

    /// `bytes` stream bytes were delivered to a reader on this node.
    pub(crate) fn stream_in(&self, bytes: usize) {
        self.stream_in.increment(bytes as u64);
    }

    /// A KV put ended in `outcome` (see the module docs for the values).
    pub(crate) fn kv_put(&mut self, outcome: &'static str) {
        self.kv_puts.get(outcome).increment(1);
    }
}

/// The `outcome` label of a send's result.
pub(crate) fn send_outcome<T>(result: &Result<T, SendError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(e) => send_error_label(e),
    }
}

/// The `outcome` label of a send that failed with `e`.
pub(crate) fn send_error_label(e: &SendError) -> &'static str {
    match e {
        SendError::Timeout => "timeout",
        SendError::NoLeader => "no_leader",
        SendError::Overloaded => "overloaded",
        _ => "failed",
    }
}

/// Leadership and membership events counted by reason.
pub(crate) struct EventMetrics {
    step_downs: Family,
    members_left: Family,
}

impl EventMetrics {
    fn new(l: &Labels) -> Self {
        EventMetrics {
            step_downs: Family::new(l, STEP_DOWNS),
            members_left: Family::new(l, MEMBERS_LEFT),
        }
    }

    /// This node stopped leading for `reason`.
    pub(crate) fn stepped_down(&mut self, reason: &StepDownReason) {
        let label = match reason {
            StepDownReason::Expired => "expired",
            StepDownReason::ClockUntrusted => "clock_untrusted",
            StepDownReason::LostRace => "lost_race",
            StepDownReason::Resigned => "resigned",
            StepDownReason::Unreachable => "unreachable",
            _ => "other",
        };
        self.step_downs.get(label).increment(1);
    }

    /// A member left this node's view for `reason`.
    pub(crate) fn member_left(&mut self, reason: &LeaveReason) {
        let label = match reason {
            LeaveReason::Left => "left",
            LeaveReason::Failed => "failed",
            LeaveReason::Replaced => "replaced",
            _ => "unknown",
        };
        self.members_left.get(label).increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions_and_are_unique() {
        let mut names: Vec<_> = ALL.iter().map(|m| m.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL.len(), "a name is listed twice");
        for m in ALL {
            assert!(m.name.starts_with("hedgerow_"), "{}", m.name);
            match m.kind {
                MetricKind::Counter => assert!(m.name.ends_with("_total"), "{}", m.name),
                _ => assert!(!m.name.ends_with("_total"), "{}", m.name),
            }
            if m.unit == "seconds" {
                assert!(m.name.ends_with("_seconds"), "{}", m.name);
            }
            if m.unit == "bytes" {
                assert!(m.name.contains("bytes"), "{}", m.name);
            }
            assert!(!m.help.is_empty(), "{} has no help", m.name);
        }
    }

    #[test]
    fn the_module_table_lists_every_metric() {
        let docs = include_str!("metrics.rs");
        for m in ALL {
            let row = format!("//! | `{}` |", m.name);
            assert!(docs.contains(&row), "{} is not in the table", m.name);
        }
        let rows = docs
            .lines()
            .filter(|l| l.starts_with("//! | `hedgerow_"))
            .count();
        assert_eq!(
            rows,
            ALL.len(),
            "the table has a row for a metric not emitted"
        );
    }
}
