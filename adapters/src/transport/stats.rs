//! What the transport counts: every connection it refused or closed, by
//! reason, and the frame budget's use. Connection tasks bump the counters;
//! [`TransportStats`] is the snapshot the API hands out (the CLI renders it
//! under `GET /metrics`).

use std::sync::atomic::{AtomicU64, Ordering};

use super::budget::FrameBudget;

/// A snapshot of the transport's counters; see
/// [`Hedgerow::transport_stats`](crate::Hedgerow::transport_stats).
///
/// Every count is since the node started. Each refusal is also logged
/// with its reason and the peer's address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransportStats {
    /// The frame budget ([`Builder::frame_budget`](crate::Builder::frame_budget)).
    pub frame_budget: usize,
    /// Bytes of frames being read right now.
    pub frame_bytes_in_flight: usize,
    /// The most bytes of frames ever in flight at once; never above
    /// `frame_budget`.
    pub frame_bytes_peak: usize,
    /// Times a connection had to wait for the budget before reading on.
    pub frame_budget_waits: u64,
    /// New connections closed at once: too many handshakes in progress,
    /// in all or from one address.
    pub refused_handshake_slots: u64,
    /// Handshakes that failed, timed out or were refused (another
    /// cluster, no common version).
    pub failed_handshakes: u64,
    /// Peers refused after their hello: too many established inbound
    /// connections.
    pub refused_inbound: u64,
    /// Peers refused after their hello: too many established inbound
    /// connections from their address.
    pub refused_per_address: u64,
    /// Inbound connections closed because a newer one claimed the same
    /// node id.
    pub replaced_same_id: u64,
    /// Connections closed because a frame, once started, was not complete
    /// within the frame timeout.
    pub closed_slow_frame: u64,
    /// Connections closed because a frame waited for the budget longer
    /// than the frame timeout.
    pub closed_budget_wait: u64,
    /// Connections closed for a frame that broke the framing or the codec.
    pub closed_bad_frame: u64,
    /// Connections closed as idle.
    pub closed_idle: u64,
    /// Peers refused because this node has TLS on and they spoke
    /// plaintext.
    pub refused_plaintext_peer: u64,
    /// Peers refused because this node has TLS off and they spoke TLS.
    pub refused_tls_peer: u64,
    /// TLS peers refused for a certificate that does not chain to the CA
    /// (or no certificate).
    pub refused_untrusted_cert: u64,
    /// TLS peers refused for an expired (or not yet valid) certificate.
    pub refused_expired_cert: u64,
    /// TLS peers refused for a certificate that names no node of this
    /// cluster.
    pub refused_wrong_cluster: u64,
    /// TLS peers refused because their hello claims a node id their
    /// certificate does not name.
    pub refused_cert_id_mismatch: u64,
    /// TLS handshakes that failed otherwise (garbage, a peer's alert, a
    /// cut connection).
    pub failed_tls_handshakes: u64,
}

/// The live counters behind [`TransportStats`].
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) refused_handshake_slots: AtomicU64,
    pub(crate) failed_handshakes: AtomicU64,
    pub(crate) refused_inbound: AtomicU64,
    pub(crate) refused_per_address: AtomicU64,
    pub(crate) replaced_same_id: AtomicU64,
    pub(crate) closed_slow_frame: AtomicU64,
    pub(crate) closed_budget_wait: AtomicU64,
    pub(crate) closed_bad_frame: AtomicU64,
    pub(crate) closed_idle: AtomicU64,
    pub(crate) refused_plaintext_peer: AtomicU64,
    pub(crate) refused_tls_peer: AtomicU64,
    pub(crate) refused_untrusted_cert: AtomicU64,
    pub(crate) refused_expired_cert: AtomicU64,
    pub(crate) refused_wrong_cluster: AtomicU64,
    pub(crate) refused_cert_id_mismatch: AtomicU64,
    pub(crate) failed_tls_handshakes: AtomicU64,
}

/// Adds one to `counter`.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    pub(crate) fn snapshot(&self, budget: &FrameBudget) -> TransportStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        TransportStats {
            frame_budget: budget.limit(),
            frame_bytes_in_flight: budget.used(),
            frame_bytes_peak: budget.peak(),
            frame_budget_waits: budget.waits() as u64,
            refused_handshake_slots: get(&self.refused_handshake_slots),
            failed_handshakes: get(&self.failed_handshakes),
            refused_inbound: get(&self.refused_inbound),
            refused_per_address: get(&self.refused_per_address),
            replaced_same_id: get(&self.replaced_same_id),
            closed_slow_frame: get(&self.closed_slow_frame),
            closed_budget_wait: get(&self.closed_budget_wait),
            closed_bad_frame: get(&self.closed_bad_frame),
            closed_idle: get(&self.closed_idle),
            refused_plaintext_peer: get(&self.refused_plaintext_peer),
            refused_tls_peer: get(&self.refused_tls_peer),
            refused_untrusted_cert: get(&self.refused_untrusted_cert),
            refused_expired_cert: get(&self.refused_expired_cert),
            refused_wrong_cluster: get(&self.refused_wrong_cluster),
            refused_cert_id_mismatch: get(&self.refused_cert_id_mismatch),
            failed_tls_handshakes: get(&self.failed_tls_handshakes),
        }
    }
}
