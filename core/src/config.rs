//! Node configuration and its presets. Every timing the protocol uses lives
//! here so that a simulator run and a production node differ only in data.

use alloc::string::String;
use core::fmt;
use core::time::Duration;

/// The default largest frame, 4 MiB.
pub const DEFAULT_MAX_FRAME_LEN: u32 = 4 * 1024 * 1024;

/// How a node behaves. Build one from a preset and adjust fields.
///
/// ```
/// use core::time::Duration;
/// use hedgerow_core::Config;
/// let mut cfg = Config::lan("orders");
/// cfg.lease_duration = Duration::from_secs(15);
/// assert!(cfg.validate().is_ok());
/// assert_eq!(cfg.renew_interval(), Duration::from_secs(5));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Cluster id; peers with another id are refused at the handshake, and
    /// the lease row is keyed by it.
    pub cluster: String,
    /// How long a lease lasts after each renew (default 10 s). Renewed every
    /// third of it.
    pub lease_duration: Duration,
    /// How often a member heartbeats the leader (default 1 s).
    pub heartbeat_interval: Duration,
    /// Silence after which the leader drops a member, and a member thinks
    /// its leader unreachable (default 3 s).
    pub failure_timeout: Duration,
    /// Membership changes within this window go out as one delta (20 ms).
    pub batch_window: Duration,
    /// Whether this node may ever write the lease (default true).
    pub candidate: bool,
    /// Whether a clock whose bound is operator-given
    /// ([`crate::ClockSource::Assumed`]) may hold the lease. Off by default:
    /// only ClockBound-measured bounds lead unless an operator opts in.
    pub lead_on_assumed_clock: bool,
    /// A leader that had members and hears from none of them for
    /// `unreachable_factor × failure_timeout` releases the lease (default 3).
    pub unreachable_factor: u32,
    /// Largest member metadata accepted, in bytes (default 512).
    pub max_meta_len: usize,
    /// Largest frame sent or accepted, in bytes (default 4 MiB).
    pub max_frame_len: u32,
    /// How long a `send` keeps trying before it fails (default 5 s).
    pub request_timeout: Duration,
    /// How long to wait for a reply before re-sending a request (default
    /// 500 ms; a new leader is tried at once on a redirect).
    pub request_retry_interval: Duration,
    /// How long a broadcast waits for each member (default 5 s); parts
    /// not answered are sent again from `request_retry_interval` on. A
    /// member remembers what it was delivered for twice its own
    /// `broadcast_timeout`, so give every member the same value: a retry
    /// from a sender whose timeout is more than twice a member's can reach
    /// that member after it forgot the broadcast, and is then refused with
    /// an error (it may have been handled) rather than handled again.
    pub broadcast_timeout: Duration,
    /// How long the leader remembers a handled request id its sender has
    /// not said it settled (a sender says so with each later request).
    /// Must be at least `request_timeout` so a retry is never handled twice
    /// by one leader (default 10 s).
    pub dedupe_window: Duration,
    /// Most request ids remembered at once; beyond it new requests are
    /// refused with "overloaded" rather than risk handling one twice
    /// (default 100 000). Ids a sender settled are forgotten at once, so
    /// this bounds the requests in flight (and those of senders that
    /// stopped or speak protocol version 1), not the request rate. It
    /// also bounds the broadcasts a member remembers (each for twice
    /// `broadcast_timeout`, so that a retry is never handled twice): a new
    /// broadcast beyond it is answered with an "overloaded" failure.
    pub max_dedupe_entries: usize,
    /// Most requests and broadcasts this node has outstanding at once
    /// (default 10 000).
    pub max_outstanding: usize,
    /// Bytes a stream receiver grants ahead of what the application has
    /// consumed (default 1 MiB).
    pub stream_window: u32,
    /// Bytes a stream sender buffers before `stream_write` pushes back
    /// (default 1 MiB).
    pub stream_send_buffer: usize,
    /// Largest data chunk in one stream frame (default 64 KiB).
    pub stream_chunk: usize,
    /// Most open streams, both directions together (default 1024).
    pub max_streams: usize,
    /// Most members a leader admits to its view besides itself (default
    /// 10 000). A heartbeat from a new id beyond it is ignored (no ack, no
    /// join) until someone leaves, so a flood of fake ids cannot grow the
    /// leader's memory or every member's view without bound; known members
    /// go on heartbeating, and a restarted one (new incarnation) rejoins.
    pub max_members: usize,
    /// Candidates spread their takeover attempts by rank in the view: rank
    /// `r` waits `r × takeover_stagger` (default 5 ms) plus jitter.
    pub takeover_stagger: Duration,
    /// Upper bound of the random jitter added to takeover attempts and to
    /// confirmation reads (default 20 ms).
    pub takeover_jitter: Duration,
    /// Delay before retrying a failed store operation (default 500 ms).
    pub store_retry_interval: Duration,
    /// How long a semaphore permit or lock stays valid without a renewal
    /// (default 5 s). Each heartbeat the leader acknowledges renews the
    /// holder's permits to the leader's `latest` plus this; a holder that
    /// stops heartbeating (paused, partitioned, dead) loses them this long
    /// (plus the clock bound) after its last renewal, and only then may the
    /// leader grant them again. A value below twice `heartbeat_interval` is
    /// raised to that ([`Config::effective_permit_lease`]): shorter, permits
    /// would lapse between renewals. (Not refused: a configuration that
    /// slows heartbeats and never uses permits stays valid.)
    pub permit_lease: Duration,
    /// How the leader's view changes reach the members (default
    /// [`ViewSpread::Relay`] with fanout 32 above 256 members).
    pub view_spread: ViewSpread,
}

/// How a leader's view deltas reach the members.
///
/// Whichever is chosen, a leader sends every member its heartbeat acks and
/// a full snapshot when a term begins or a member asks; a member that
/// shows it is behind in a heartbeat is sent the deltas it lacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ViewSpread {
    /// The leader sends each delta to every member itself: one hop, and
    /// the leader's bytes out grow with members × changes.
    Push,
    /// Above `above` members (below it, as [`ViewSpread::Push`]), the
    /// leader sends each delta to `fanout` members, each of which passes
    /// it on to a `fanout`-th of the id range it was given, and so on: the
    /// leader's bytes out grow with `fanout` × changes, each member's with
    /// `fanout` at most, and a delta takes about log_fanout(members) hops.
    /// A member that misses one asks the member that sent it the next
    /// (every member keeps the last deltas it applied), and the leader
    /// sends it what is missing when its heartbeat shows it still behind.
    /// Used only while every member speaks protocol version 4.
    Relay {
        /// Parts each relay splits its range into (2 to 256).
        fanout: u16,
        /// Views up to this size are pushed.
        above: usize,
    },
    /// Members learn changes only from their heartbeats: the leader
    /// answers a heartbeat that shows an older view with the deltas since.
    /// No bytes for members that are up to date, a heartbeat interval of
    /// delay for the rest; a measuring mode more than a production one.
    Pull,
}

impl ViewSpread {
    /// The default fanout of [`ViewSpread::Relay`].
    pub const DEFAULT_FANOUT: u16 = 32;
    /// The default `above` of [`ViewSpread::Relay`].
    pub const DEFAULT_ABOVE: usize = 256;
    /// The default: relayed above 256 members, fanout 32.
    pub const DEFAULT: ViewSpread = ViewSpread::Relay {
        fanout: Self::DEFAULT_FANOUT,
        above: Self::DEFAULT_ABOVE,
    };

    /// Whether a relay fanout is in range (2 to 256).
    fn fanout_ok(&self) -> bool {
        match self {
            ViewSpread::Relay { fanout, .. } => (2..=crate::spread::MAX_FANOUT).contains(fanout),
            _ => true,
        }
    }
}

impl Default for ViewSpread {
    fn default() -> Self {
        ViewSpread::DEFAULT
    }
}

/// `push`, `pull`, `relay`, `relay:FANOUT` or `relay:FANOUT:ABOVE`, as
/// [`ViewSpread`]'s `FromStr` reads them (the defaults fill what is left
/// out) and its `Display` writes them.
///
/// ```
/// use hedgerow_core::ViewSpread;
/// assert_eq!("relay:16".parse(), Ok(ViewSpread::Relay { fanout: 16, above: 256 }));
/// assert_eq!(ViewSpread::DEFAULT.to_string(), "relay:32:256");
/// assert!("relay:1".parse::<ViewSpread>().is_err());
/// ```
impl core::str::FromStr for ViewSpread {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            alloc::format!(
                "view spread {s:?}: expected push, pull, relay, relay:FANOUT or relay:FANOUT:ABOVE (fanout 2 to 256)"
            )
        };
        let mut parts = s.split(':');
        let spread = match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some("push"), None, ..) => ViewSpread::Push,
            (Some("pull"), None, ..) => ViewSpread::Pull,
            (Some("relay"), fanout, above, None) => ViewSpread::Relay {
                fanout: fanout
                    .map_or(Ok(Self::DEFAULT_FANOUT), str::parse)
                    .map_err(|_| bad())?,
                above: above
                    .map_or(Ok(Self::DEFAULT_ABOVE), str::parse)
                    .map_err(|_| bad())?,
            },
            _ => return Err(bad()),
        };
        if !spread.fanout_ok() {
            return Err(bad());
        }
        Ok(spread)
    }
}

impl fmt::Display for ViewSpread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ViewSpread::Push => f.write_str("push"),
            ViewSpread::Pull => f.write_str("pull"),
            ViewSpread::Relay { fanout, above } => write!(f, "relay:{fanout}:{above}"),
        }
    }
}

impl Config {
    /// Defaults for one data centre: lease 10 s, heartbeat 1 s, failure
    /// timeout 3 s.
    pub fn lan(cluster: impl Into<String>) -> Self {
        Config {
            cluster: cluster.into(),
            lease_duration: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(1),
            failure_timeout: Duration::from_secs(3),
            batch_window: Duration::from_millis(20),
            candidate: true,
            lead_on_assumed_clock: false,
            unreachable_factor: 3,
            max_meta_len: 512,
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            request_timeout: Duration::from_secs(5),
            request_retry_interval: Duration::from_millis(500),
            broadcast_timeout: Duration::from_secs(5),
            dedupe_window: Duration::from_secs(10),
            max_dedupe_entries: 100_000,
            max_outstanding: 10_000,
            stream_window: 1024 * 1024,
            stream_send_buffer: 1024 * 1024,
            stream_chunk: 64 * 1024,
            max_streams: 1024,
            max_members: 10_000,
            takeover_stagger: Duration::from_millis(5),
            takeover_jitter: Duration::from_millis(20),
            store_retry_interval: Duration::from_millis(500),
            permit_lease: Duration::from_secs(5),
            view_spread: ViewSpread::DEFAULT,
        }
    }

    /// Fast timings for one machine (tests, demos): lease 2 s, heartbeat
    /// 200 ms, failure timeout 600 ms.
    pub fn local(cluster: impl Into<String>) -> Self {
        Config {
            lease_duration: Duration::from_secs(2),
            heartbeat_interval: Duration::from_millis(200),
            failure_timeout: Duration::from_millis(600),
            batch_window: Duration::from_millis(5),
            request_timeout: Duration::from_secs(3),
            request_retry_interval: Duration::from_millis(200),
            broadcast_timeout: Duration::from_secs(2),
            dedupe_window: Duration::from_secs(6),
            takeover_stagger: Duration::from_millis(2),
            takeover_jitter: Duration::from_millis(5),
            store_retry_interval: Duration::from_millis(100),
            permit_lease: Duration::from_secs(1),
            ..Config::lan(cluster)
        }
    }

    /// Slow links: lease 30 s (hedge's default), heartbeat 3 s, failure
    /// timeout 10 s.
    pub fn wan(cluster: impl Into<String>) -> Self {
        Config {
            lease_duration: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(3),
            failure_timeout: Duration::from_secs(10),
            batch_window: Duration::from_millis(100),
            request_timeout: Duration::from_secs(15),
            request_retry_interval: Duration::from_secs(2),
            broadcast_timeout: Duration::from_secs(15),
            dedupe_window: Duration::from_secs(30),
            takeover_stagger: Duration::from_millis(20),
            takeover_jitter: Duration::from_millis(100),
            store_retry_interval: Duration::from_secs(1),
            permit_lease: Duration::from_secs(15),
            ..Config::lan(cluster)
        }
    }

    /// The permit lease in force: `permit_lease`, at least twice
    /// `heartbeat_interval`.
    pub fn effective_permit_lease(&self) -> Duration {
        self.permit_lease.max(self.heartbeat_interval * 2)
    }

    /// How often the leader renews: a third of the lease.
    pub fn renew_interval(&self) -> Duration {
        self.lease_duration / 3
    }

    /// Checks the relations the protocol relies on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |what: &'static str| Err(ConfigError(what));
        if self.cluster.is_empty() || self.cluster.len() > crate::MAX_NODE_ID_LEN {
            return fail("cluster id must be 1 to 128 bytes");
        }
        if self.lease_duration < Duration::from_millis(30) {
            return fail("lease_duration must be at least 30 ms");
        }
        if self.heartbeat_interval.is_zero() {
            return fail("heartbeat_interval must be positive");
        }
        if self.failure_timeout <= self.heartbeat_interval {
            return fail("failure_timeout must exceed heartbeat_interval (3x is usual)");
        }
        if self.dedupe_window < self.request_timeout {
            return fail(
                "dedupe_window must be at least request_timeout, or retries could be handled twice",
            );
        }
        if self.unreachable_factor < 2 {
            return fail("unreachable_factor must be at least 2");
        }
        if self.max_frame_len < 1024 {
            return fail("max_frame_len must be at least 1024 bytes");
        }
        if self.stream_chunk == 0 || self.stream_chunk + 256 > self.max_frame_len as usize {
            return fail("stream_chunk must be positive and fit a frame with room for the header");
        }
        if self.stream_window < crate::wire::INITIAL_STREAM_CREDIT {
            return fail("stream_window must be at least the initial stream credit (64 KiB)");
        }
        if self.max_members == 0 {
            return fail("max_members must be at least 1");
        }
        if self.max_meta_len > 64 * 1024 {
            return fail("max_meta_len must be at most 64 KiB");
        }
        if !self.view_spread.fanout_ok() {
            return fail("view_spread's relay fanout must be 2 to 256");
        }
        Ok(())
    }
}

impl Default for Config {
    fn default() -> Self {
        Config::lan("default")
    }
}

/// A configuration that breaks a relation the protocol relies on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError(pub &'static str);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration: {}", self.0)
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid() {
        for cfg in [Config::lan("a"), Config::local("a"), Config::wan("a")] {
            assert_eq!(cfg.validate(), Ok(()));
        }
    }

    #[test]
    fn bad_relations_are_named() {
        let mut cfg = Config::lan("a");
        cfg.dedupe_window = Duration::from_secs(1);
        assert!(cfg.validate().is_err());
        let mut cfg = Config::lan("a");
        cfg.failure_timeout = cfg.heartbeat_interval;
        assert!(cfg.validate().is_err());
    }
}
