//! The bounds that make the state space finite, the discretisation of
//! time, and the node configuration every modelled node runs with.

use std::time::Duration;

use hedgerow_core::{Config, SeededBug};

/// One step of true time, the unit in which the checker advances it.
pub const STEP_NS: u64 = 10_000_000;
/// Every reading's error bound: a reading is `[m - BOUND_NS, m + BOUND_NS]`
/// for a midpoint `m` the checker picks, always containing true time.
pub const BOUND_NS: u64 = 5_000_000;
/// True time at step 0 (Unix ns), so that readings look like real ones.
pub const EPOCH_NS: u64 = 1_700_000_000_000_000_000;

/// How far the checker may go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// The last step of true time.
    pub max_time: u64,
    /// Faults in one run: drops, duplicates, store answers lost or failed,
    /// crashes and restarts, together.
    pub max_faults: u8,
    /// Crashes in one run (each is also a fault).
    pub max_crashes: u8,
    /// Messages in flight at once; a send into a full network is lost
    /// (and counts as a disturbance for liveness, not as a fault).
    pub max_in_flight: usize,
    /// The offsets of a reading's midpoint from true time (ns) the checker
    /// chooses among, per node and per step; each within `±BOUND_NS`.
    pub offsets: Vec<i64>,
    /// The starting offsets, one per node; `None`: every combination of
    /// `offsets`. Fixing them narrows a run to one clock layout, which is
    /// how the seeded-bug tests reach several steps deep in seconds.
    pub start: Option<Vec<i64>>,
    /// How often in one run a node's clock offset may change.
    pub max_skews: u8,
    /// The longest path explored, in actions; `None`: as long as the other
    /// bounds allow. Needed where a node can loop within one step (each
    /// store answer asking for the next operation), which no time bound
    /// stops.
    pub max_depth: Option<usize>,
    /// Liveness: a cluster left alone this many steps has a leader.
    pub calm_steps: u64,
    /// How many `acquire` calls the nodes make in one run (each node at
    /// most one per process), for the permit properties; 0 leaves the
    /// coordination services idle.
    pub max_acquires: u8,
    /// A deliberate bug every node carries, or none.
    pub bug: Option<SeededBug>,
    /// A fault-free run played before the checker starts, so that it
    /// starts where a permit or a failover is a few steps away; `None`:
    /// the checker starts at step 0. `max_time` counts from its end.
    pub prelude: Option<Prelude>,
    /// Shorter heartbeats (20 ms) and permit lease (45 ms, off the 10 ms
    /// grid as the lease is), so that a permit can lapse and be granted
    /// again within a few steps.
    pub short_permits: bool,
}

/// A directed start: a calm run (every message delivered and every store
/// operation answered at once, in a fixed order) from step 0 until a
/// situation, the checker's starting state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prelude {
    /// Until a member other than the leader holds the permit, granted by
    /// the leader, and nothing is in flight.
    PermitHeld,
    /// Until some node leads, every node has its view and nothing is in
    /// flight; then the leader crashes. The crash is not counted against
    /// `max_faults` or `max_crashes`.
    LeaderCrashed,
}

impl Bounds {
    /// The run `cargo test` makes: a few minutes on two cores at opt-level 1.
    pub fn quick() -> Bounds {
        Bounds {
            max_time: 2,
            max_faults: 1,
            max_crashes: 1,
            max_in_flight: 1,
            offsets: vec![-(BOUND_NS as i64), 0, BOUND_NS as i64],
            start: None,
            max_skews: 0,
            max_depth: None,
            calm_steps: 4,
            max_acquires: 0,
            bug: None,
            prelude: None,
            short_permits: false,
        }
    }

    /// The deeper run, `HEDGEROW_MODEL_DEPTH=deep`: one step further with
    /// the same faults and all 27 clock layouts, about ten minutes and
    /// 5.4 GB here (BENCHMARKS.md, "Model check").
    pub fn deep() -> Bounds {
        Bounds {
            max_time: 3,
            ..Bounds::quick()
        }
    }

    /// The permit run `cargo test` makes: one node calls `acquire` (a
    /// lock, waiting) at any point, with the quick faults, for one clock
    /// layout. A promise lasts the `local` preset's 1 s permit lease,
    /// beyond this horizon: the run covers grants under
    /// faults, crashes and failovers of the call, not a lapse.
    pub fn permits() -> Bounds {
        Bounds {
            start: Some(vec![0, 0, 0]),
            max_acquires: 1,
            ..Bounds::quick()
        }
    }

    /// The permit lapse run `cargo test` makes: from a permit held by a
    /// member (the leader reading 5 ms ahead, the holder 5 ms behind, the
    /// third node too), `max_time` steps in which the third node or the
    /// leader may ask for the permit, every message and answer may be
    /// delayed and a full network loses what is sent into it: the
    /// holder's renewals can stop, its permit lapse and the leader grant it
    /// again, under the short timings.
    pub fn permit_lapse() -> Bounds {
        let b = BOUND_NS as i64;
        Bounds {
            max_time: 6,
            max_faults: 0,
            max_crashes: 0,
            start: Some(vec![b, -b, -b]),
            max_acquires: 1,
            prelude: Some(Prelude::PermitHeld),
            short_permits: true,
            ..Bounds::quick()
        }
    }

    /// The failover run `cargo test` makes: a leader elected calmly and
    /// then crashed, with the clock layout that fails over slowest (the
    /// taker that wins reads 5 ms behind); after it no fault, but every
    /// order of deliveries and answers and every delay of up to a step.
    /// Within `calm_steps` calm steps some node must have led again.
    pub fn failover() -> Bounds {
        let b = BOUND_NS as i64;
        Bounds {
            max_time: 10,
            max_faults: 0,
            max_crashes: 0,
            max_in_flight: 2,
            start: Some(vec![0, b, -b]),
            calm_steps: 9,
            prelude: Some(Prelude::LeaderCrashed),
            ..Bounds::quick()
        }
    }

    /// The bounds `HEDGEROW_MODEL_DEPTH` names (`quick`, the default, or
    /// `deep`), or an error naming the accepted values.
    pub fn from_env() -> Result<Bounds, String> {
        match std::env::var("HEDGEROW_MODEL_DEPTH").as_deref() {
            Err(_) | Ok("") | Ok("quick") => Ok(Bounds::quick()),
            Ok("deep") => Ok(Bounds::deep()),
            Ok(other) => Err(format!(
                "HEDGEROW_MODEL_DEPTH={other:?}: use `quick` (the default) or `deep`"
            )),
        }
    }

    /// These bounds with every node carrying `bug`.
    pub fn with_bug(self, bug: SeededBug) -> Bounds {
        Bounds {
            bug: Some(bug),
            ..self
        }
    }
}

/// The configuration of every modelled node within `bounds`:
/// [`node_config`], with the short permit timings if `bounds` asks.
pub fn node_config_for(bounds: &Bounds) -> Config {
    let cfg = node_config();
    if !bounds.short_permits {
        return cfg;
    }
    Config {
        heartbeat_interval: Duration::from_millis(20),
        permit_lease: Duration::from_millis(45),
        ..cfg
    }
}

/// The configuration of every modelled node: the `local` preset with its
/// timings scaled to a few steps, so that a lease, a failover and a
/// heartbeat round fit in the bounded horizon. Its permit lease is the
/// preset's 1 s, far beyond the horizon: only
/// [`Bounds::short_permits`] lets a permit lapse.
pub fn node_config() -> Config {
    Config {
        lease_duration: Duration::from_millis(45),
        heartbeat_interval: Duration::from_millis(50),
        failure_timeout: Duration::from_millis(120),
        batch_window: Duration::from_millis(1),
        takeover_stagger: Duration::from_millis(1),
        takeover_jitter: Duration::from_millis(1),
        store_retry_interval: Duration::from_millis(10),
        ..Config::local("model")
    }
}
