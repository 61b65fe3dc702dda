//! The in-process cluster: many [`hedgerow_core::Node`]s driven over a
//! simulated network, store and clocks from one seed. It plays the driver
//! for every node (executes outputs, feeds results back, fires timers) and
//! a simple application (answers requests and broadcasts, consumes
//! streams), and feeds every checker as it goes.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;

use hedgerow_core::{
    BroadcastHandle, BroadcastId, ClockStatus, Config, Event, Identity, Input, LeaseOp, LeaseReply,
    Message, Node, NodeId, Now, OpId, Output, Payload, RequestHandle, RequestId, Rng, SendError,
    SendReply, StoreError, StreamId, StreamTarget, Term,
};

use hedgerow_core::coord::{CoordAnswer, CoordOp, CoordReply, Origin};

use crate::check::broadcasts::BroadcastOnce;
use crate::check::convergence::{self, NodeReport};
use crate::check::kv::Puts;
use crate::check::leadership::Leadership;
use crate::check::permits::Permits;
use crate::check::requests::{Handling, Requests};
use crate::check::streams::{pattern_byte, StreamOrder};
use crate::check::views::ViewOrder;
use crate::check::{tokens, Violation};
use crate::clock::SimClock;
use crate::net::{Net, NetConfig};
use crate::report::{FaultKind, Life, Record, Recorder};
use crate::store::{SimStore, StoreConfig};

/// How a run is set up.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// The one seed everything derives from.
    pub seed: u64,
    /// The node configuration every node starts from.
    pub node: Config,
    /// Each clock's error bound.
    pub bound: Duration,
    /// Clock offsets are drawn uniformly in `±offset_fraction × bound`
    /// (1.0: anywhere inside the bound).
    pub offset_fraction: f64,
    /// Clock rate errors are drawn uniformly in `±max_drift_ppb`; each
    /// offset drifts at its rate and turns back at the edge of the bound.
    pub max_drift_ppb: u64,
    /// The network.
    pub net: NetConfig,
    /// The store.
    pub store: StoreConfig,
    /// How long the application takes to answer a request or broadcast.
    pub reply_delay: Duration,
    /// Delay before the application consumes each stream chunk (a slow
    /// receiver when large).
    pub consume_delay: Duration,
    /// Lines of event trace kept for violation reports.
    pub trace_len: usize,
    /// Count encoded bytes of every message sent (costs an encode each).
    pub measure_bytes: bool,
    /// Record the run's change points for a report ([`Cluster::record`]).
    pub record: bool,
}

impl ClusterConfig {
    /// Defaults: `Config::lan`, 50 ms clock bounds with offsets anywhere
    /// inside them, sub-ms to 2 ms network, 0.5 to 3 ms store.
    pub fn new(seed: u64) -> Self {
        ClusterConfig {
            seed,
            node: Config::lan("sim"),
            bound: Duration::from_millis(50),
            offset_fraction: 1.0,
            // 50 ppm, a common crystal oscillator tolerance.
            max_drift_ppb: 50_000,
            net: NetConfig::default(),
            store: StoreConfig::default(),
            reply_delay: Duration::ZERO,
            consume_delay: Duration::ZERO,
            trace_len: 48,
            measure_bytes: false,
            record: false,
        }
    }
}

#[derive(Debug)]
enum Ev {
    Deliver {
        to: usize,
        inc: u64,
        from: NodeId,
        msg: Message,
    },
    StoreArrive {
        slot: usize,
        inc: u64,
        op: LeaseOp,
        refused: bool,
    },
    StoreReply {
        slot: usize,
        inc: u64,
        op: OpId,
        result: Result<LeaseReply, StoreError>,
    },
    StoreTimeout {
        slot: usize,
        inc: u64,
        op: OpId,
    },
    CoordArrive {
        slot: usize,
        inc: u64,
        op: CoordOp,
    },
    CoordAnswer {
        slot: usize,
        inc: u64,
        op: OpId,
        result: Result<CoordReply, StoreError>,
    },
    AppReply {
        slot: usize,
        inc: u64,
        handle: RequestHandle,
    },
    AppBroadcastReply {
        slot: usize,
        inc: u64,
        handle: BroadcastHandle,
    },
    Consume {
        slot: usize,
        inc: u64,
        from: NodeId,
        sid: u64,
        n: usize,
    },
}

struct Scheduled {
    at: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Scheduled {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

/// One member's answer to a broadcast.
pub type BroadcastResult = Result<Payload, hedgerow_core::BroadcastError>;

/// What the simulated application saw at one node.
#[derive(Debug, Default)]
pub struct AppLog {
    /// Results of this node's sends, by request id.
    pub sends: BTreeMap<RequestId, Result<SendReply, SendError>>,
    /// Per-member broadcast results, by broadcast id.
    pub broadcasts: BTreeMap<BroadcastId, Vec<(NodeId, BroadcastResult)>>,
    /// Broadcasts that completed.
    pub broadcasts_done: BTreeSet<BroadcastId>,
    /// Streams this node sent in full.
    pub streams_sent: BTreeSet<StreamId>,
    /// Streams of ours that failed, with why.
    pub streams_failed: BTreeMap<StreamId, String>,
    /// Inbound streams finished: (from, sid).
    pub streams_finished: BTreeSet<(NodeId, u64)>,
    /// Largest unconsumed inbound bytes seen on any stream.
    pub peak_unconsumed: u64,
    /// Largest buffered outbound bytes seen on any stream.
    pub peak_buffered: usize,
    /// Leaders this node was told about.
    pub leader_changes: u64,
    /// Messages this node sent.
    pub sent_msgs: u64,
    /// Bytes this node sent, frame prefix included (with
    /// [`ClusterConfig::measure_bytes`]).
    pub sent_bytes: u64,
    /// [`AppLog::sent_bytes`] by message kind.
    pub sent_bytes_by_kind: BTreeMap<&'static str, u64>,
    /// Messages this node received.
    pub recv_msgs: u64,
    /// Results of this node's coordination calls, by id.
    pub coord: BTreeMap<RequestId, Result<CoordAnswer, SendError>>,
    /// This node's puts, by id: key and value.
    pub puts: BTreeMap<RequestId, (String, Payload)>,
    /// Permits this node was told it lost: ticket, name, token.
    pub permits_lost: Vec<(RequestId, String, u64)>,
}

struct Writer {
    slot: usize,
    sid: StreamId,
    total: u64,
    written: u64,
    finished: bool,
}

/// One simulated process.
pub struct SimNode {
    /// The state machine.
    pub node: Node,
    /// Its clock.
    pub clock: SimClock,
    /// Whether the process runs.
    pub alive: bool,
    /// Whether the process is frozen (SIGSTOP): it handles nothing, and
    /// what is sent to it is lost.
    pub paused: bool,
    /// Whether the process is shutting down gracefully (waiting for its
    /// lease release to be answered).
    pub leaving: bool,
    /// The application's log.
    pub app: AppLog,
    gen: u64,
    pending_store: Option<OpId>,
    pending_coord: Option<OpId>,
    /// Store answers that came while the process was paused: a real
    /// driver's channel holds them until it runs again.
    deferred: Vec<Input>,
}

/// A deterministic in-process cluster.
pub struct Cluster {
    cfg: ClusterConfig,
    t: u64,
    seq: u64,
    rng: Rng,
    nodes: Vec<SimNode>,
    index: HashMap<NodeId, usize>,
    queue: BinaryHeap<Scheduled>,
    timers: BinaryHeap<Reverse<(u64, usize, u64)>>,
    net: Net,
    store: SimStore,
    store_cut: BTreeSet<usize>,
    writers: Vec<Writer>,
    pending_pumps: Vec<usize>,
    leadership: Leadership,
    permits: Permits,
    puts: Puts,
    views: ViewOrder,
    requests: Requests,
    broadcasts: BroadcastOnce,
    streams: StreamOrder,
    violations: Vec<Violation>,
    trace: VecDeque<String>,
    hash: DefaultHasher,
    first_leader_at: Option<u64>,
    events: u64,
    spin: (usize, u64, u32),
    recorder: Option<Recorder>,
}

impl Cluster {
    /// An empty cluster; add nodes with [`Cluster::add_node`].
    pub fn new(cfg: ClusterConfig) -> Self {
        let rng = Rng::new(cfg.seed);
        Cluster {
            net: Net::new(cfg.net.clone()),
            store: SimStore::new(cfg.store.clone()),
            t: 0,
            seq: 0,
            rng,
            nodes: Vec::new(),
            index: HashMap::new(),
            queue: BinaryHeap::new(),
            timers: BinaryHeap::new(),
            store_cut: BTreeSet::new(),
            writers: Vec::new(),
            pending_pumps: Vec::new(),
            leadership: Leadership::default(),
            permits: Permits::default(),
            puts: Puts::default(),
            views: ViewOrder::default(),
            requests: Requests::default(),
            broadcasts: BroadcastOnce::default(),
            streams: StreamOrder::default(),
            violations: Vec::new(),
            trace: VecDeque::new(),
            hash: DefaultHasher::new(),
            first_leader_at: None,
            events: 0,
            spin: (usize::MAX, 0, 0),
            recorder: cfg.record.then(Recorder::default),
            cfg,
        }
    }

    /// A cluster with `n` nodes started at time zero.
    pub fn with_nodes(cfg: ClusterConfig, n: usize) -> Self {
        let mut c = Cluster::new(cfg);
        for _ in 0..n {
            c.add_node();
        }
        c
    }

    // ---- scenario controls -------------------------------------------------

    /// Starts a new node (id `n<slot>`) now; returns its slot.
    pub fn add_node(&mut self) -> usize {
        let cfg = self.cfg.node.clone();
        self.add_node_with(cfg)
    }

    /// Starts a new node with its own configuration.
    pub fn add_node_with(&mut self, config: Config) -> usize {
        let slot = self.nodes.len();
        let id =
            NodeId::new(format!("n{slot:04}")).unwrap_or_else(|_| unreachable!("ids are short"));
        let bound = self.cfg.bound.as_nanos() as u64;
        let spread = (bound as f64 * self.cfg.offset_fraction) as u64;
        let offset = self.rng.below(2 * spread + 1) as i64 - spread as i64;
        let drift = self.cfg.max_drift_ppb;
        let clock = SimClock {
            drift_ppb: self.rng.below(2 * drift + 1) as i64 - drift as i64,
            since_ns: self.t,
            ..SimClock::fixed(offset, bound)
        };
        let node = self.make_node(&id, config);
        let t = self.t;
        self.rec(|r| r.started(slot, id.to_string(), t));
        self.index.insert(id, slot);
        self.nodes.push(SimNode {
            node,
            clock,
            alive: true,
            paused: false,
            leaving: false,
            app: AppLog::default(),
            gen: 0,
            pending_store: None,
            pending_coord: None,
            deferred: Vec::new(),
        });
        self.note(format!("start {slot}"));
        self.input(slot, Input::Tick);
        slot
    }

    fn make_node(&mut self, id: &NodeId, config: Config) -> Node {
        let incarnation = self.rng.next_u64();
        let identity = Identity {
            id: id.clone(),
            addr: format!("{id}:7946"),
            incarnation,
        };
        let seed = self.rng.next_u64();
        Node::new(config, identity, seed)
            .unwrap_or_else(|e| panic!("simulation config invalid: {e}"))
    }

    /// Kills a process without a goodbye.
    pub fn crash(&mut self, slot: usize) {
        let t = self.t;
        let n = &mut self.nodes[slot];
        if !n.alive {
            return;
        }
        n.alive = false;
        n.pending_coord = None;
        if n.pending_store.take().is_some() {
            self.store.in_flight = self.store.in_flight.saturating_sub(1);
        }
        self.leadership.end(slot, t);
        self.permits.end(slot, t);
        self.net.forget_links_of(slot);
        self.rec(|r| r.life(slot, t, Life::Crashed));
        self.note(format!("crash {slot}"));
        // The kernel closes a dead process's connections: peers see them drop.
        let peer = self.nodes[slot].node.identity().id.clone();
        for other in self.live() {
            self.input(other, Input::PeerLost { peer: peer.clone() });
        }
    }

    /// Starts a crashed or left process again with a new incarnation.
    pub fn restart(&mut self, slot: usize) {
        self.crash(slot);
        let id = self.nodes[slot].node.identity().id.clone();
        let cfg = self.nodes[slot].node.config().clone();
        let node = self.make_node(&id, cfg);
        let n = &mut self.nodes[slot];
        n.node = node;
        n.alive = true;
        n.leaving = false;
        n.deferred.clear();
        n.gen += 1;
        let t = self.t;
        self.rec(|r| r.life(slot, t, Life::Restarted));
        self.note(format!("restart {slot}"));
        self.input(slot, Input::Tick);
    }

    /// A graceful leave: the node releases the lease if it holds it, tells
    /// the leader, and its process exits.
    pub fn leave(&mut self, slot: usize) {
        if !self.nodes[slot].alive || self.nodes[slot].leaving {
            return;
        }
        let now = self.now_of(slot);
        self.nodes[slot].node.leave(now);
        self.after(slot);
        self.note(format!("leave {slot}"));
        // A graceful shutdown waits for its release (if any) to be
        // answered, as the driver does, then the process exits.
        if self.nodes[slot].pending_store.is_some() {
            self.nodes[slot].leaving = true;
        } else {
            self.exit(slot);
        }
    }

    fn exit(&mut self, slot: usize) {
        let t = self.t;
        self.nodes[slot].alive = false;
        self.nodes[slot].leaving = false;
        self.nodes[slot].pending_coord = None;
        if self.nodes[slot].pending_store.take().is_some() {
            self.store.in_flight = self.store.in_flight.saturating_sub(1);
        }
        self.leadership.end(slot, t);
        self.permits.end(slot, t);
        self.rec(|r| r.life(slot, t, Life::Left));
    }

    /// Freezes a process (SIGSTOP): no timers, no messages, no store
    /// answers until [`Cluster::resume`].
    pub fn pause(&mut self, slot: usize) {
        self.nodes[slot].paused = true;
        let t = self.t;
        self.rec(|r| r.fault(FaultKind::Paused, "paused".into(), Some(slot), t));
        self.note(format!("pause {slot}"));
    }

    /// Thaws a paused process. It gets no input yet: ask it something
    /// first (as an application would), then [`Cluster::wake`] it.
    pub fn resume(&mut self, slot: usize) {
        self.nodes[slot].paused = false;
        let t = self.t;
        self.rec(|r| r.fault_over(FaultKind::Paused, Some(slot), t));
        self.note(format!("resume {slot}"));
    }

    /// Wakes a node now (a timer or any input).
    pub fn wake(&mut self, slot: usize) {
        self.input(slot, Input::Tick);
    }

    /// Delivers a message to a node as if a peer with id `from` had sent
    /// it (a forged or buggy peer).
    pub fn inject(&mut self, slot: usize, from: &str, msg: Message) {
        let from = NodeId::new(from).unwrap_or_else(|e| panic!("bad injected id: {e}"));
        self.note(format!("inject {} from {from} to {slot}", msg.kind()));
        self.input(slot, Input::Message { from, msg });
    }

    /// Cuts the links between two nodes both ways.
    pub fn partition(&mut self, a: usize, b: usize) {
        self.net.cut(a, b);
        self.cut_band(format!("cut from {b}"), Some(a));
        self.cut_band(format!("cut from {a}"), Some(b));
        self.note(format!("partition {a} <-> {b}"));
    }

    /// Cuts messages from `from` to `to` only.
    pub fn partition_one_way(&mut self, from: usize, to: usize) {
        self.net.cut_one_way(from, to);
        self.cut_band(format!("cannot reach {to}"), Some(from));
    }

    /// Cuts a node from every other node (not from the store).
    pub fn isolate(&mut self, slot: usize) {
        for other in 0..self.nodes.len() {
            if other != slot {
                self.net.cut(slot, other);
            }
        }
        self.cut_band("isolated".into(), Some(slot));
        self.note(format!("isolate {slot}"));
    }

    /// Splits the cluster into two sides that cannot talk to each other.
    pub fn split(&mut self, side_a: &[usize]) {
        let a: BTreeSet<usize> = side_a.iter().copied().collect();
        for x in 0..self.nodes.len() {
            for y in 0..self.nodes.len() {
                if a.contains(&x) && !a.contains(&y) {
                    self.net.cut(x, y);
                }
            }
        }
        self.cut_band(format!("split: {} nodes cut from the rest", a.len()), None);
        self.note(format!("split {side_a:?}"));
    }

    /// Restores every node-to-node link.
    pub fn heal(&mut self) {
        self.net.heal();
        let t = self.t;
        self.rec(|r| r.fault_over(FaultKind::Partition, None, t));
        self.note("heal".into());
    }

    /// Restores one node's links.
    pub fn heal_node(&mut self, slot: usize) {
        self.net.heal_node(slot);
        let t = self.t;
        self.rec(|r| r.fault_over(FaultKind::Partition, Some(slot), t));
    }

    /// Cuts or restores a node's path to the store.
    pub fn cut_store(&mut self, slot: usize, cut: bool) {
        if cut {
            self.store_cut.insert(slot);
        } else {
            self.store_cut.remove(&slot);
        }
        self.band(FaultKind::StoreCut, "cut from the store", Some(slot), cut);
        self.note(format!("store cut {slot}: {cut}"));
    }

    /// Takes the store down or brings it back.
    pub fn store_down(&mut self, down: bool) {
        self.store.down = down;
        self.band(FaultKind::StoreDown, "store down", None, down);
        self.note(format!("store down: {down}"));
    }

    /// Loses the lease row, as an operator who recreates the table would.
    pub fn store_wipe(&mut self) {
        self.store.row = None;
        self.note("store row wiped".into());
    }

    /// Loses the coordination tables (a restore from an old backup): a
    /// deliberately broken store, for showing that the put checker fails.
    pub fn store_lose_coord(&mut self) {
        self.store.coord = Default::default();
        self.note("store coordination tables lost".into());
    }

    /// Adds extra one-way latency to every store operation (a spike).
    pub fn store_spike(&mut self, extra: Duration) {
        self.store.spike = extra;
        let label = format!("store +{extra:?}");
        self.band(FaultKind::StoreSpike, &label, None, false);
        self.band(FaultKind::StoreSpike, &label, None, !extra.is_zero());
    }

    /// Replaces a node's clock (offset, drift, bound, status) from now on.
    /// A clock whose offset or drift differs from the current one starts
    /// from that offset now; a change of status, bound or source alone
    /// keeps the current course of the offset.
    pub fn set_clock(&mut self, slot: usize, mut clock: SimClock) {
        let old = self.nodes[slot].clock;
        if (clock.offset_ns, clock.drift_ppb) != (old.offset_ns, old.drift_ppb) {
            clock.since_ns = self.t;
        }
        self.nodes[slot].clock = clock;
        if !clock.status.may_lead() {
            let t = self.t;
            self.leadership.end(slot, t);
        }
        let status = clock.status;
        self.band(FaultKind::Clock, "", Some(slot), false);
        if status != ClockStatus::Synchronized {
            let label = format!("clock {}", crate::scenario::clock_word(status));
            self.band(FaultKind::Clock, &label, Some(slot), true);
        }
        self.note(format!("clock {slot}: {clock:?}"));
        self.input(slot, Input::Tick);
    }

    /// Sends from a node to the leader; the result lands in its [`AppLog`].
    pub fn send(&mut self, slot: usize, payload: &[u8]) -> RequestId {
        let now = self.now_of(slot);
        let id = self.nodes[slot].node.send(now, payload);
        self.after(slot);
        id
    }

    /// Broadcasts from a node; results land in its [`AppLog`].
    pub fn broadcast(&mut self, slot: usize, payload: &[u8]) -> BroadcastId {
        let now = self.now_of(slot);
        let id = self.nodes[slot].node.broadcast(now, payload);
        self.after(slot);
        id
    }

    /// Opens a stream from `slot` and writes `total` pattern bytes into it
    /// as fast as flow control allows, then finishes it.
    pub fn stream(
        &mut self,
        slot: usize,
        target: StreamTarget,
        total: u64,
    ) -> Result<StreamId, hedgerow_core::StreamError> {
        let now = self.now_of(slot);
        let sid = self.nodes[slot].node.open_stream(now, target)?;
        self.writers.push(Writer {
            slot,
            sid,
            total,
            written: 0,
            finished: false,
        });
        self.after(slot);
        self.pump_writer(self.writers.len() - 1);
        Ok(sid)
    }

    /// Puts `key = value` from a node through the leader; `None` if the
    /// node refused the call (bad key or value). The result lands in its
    /// [`AppLog::coord`] and, when acknowledged, in the put checker.
    pub fn kv_put(&mut self, slot: usize, key: &str, value: &[u8]) -> Option<RequestId> {
        let now = self.now_of(slot);
        let id = self.nodes[slot]
            .node
            .kv_put(now, key, value.to_vec())
            .ok()?;
        self.nodes[slot]
            .app
            .puts
            .insert(id, (key.into(), Payload::from(value.to_vec())));
        self.note(format!("put {slot} {key}"));
        self.after(slot);
        Some(id)
    }

    /// Asks for a permit of `name` from a node (a lock: `limit` 1).
    pub fn acquire(
        &mut self,
        slot: usize,
        name: &str,
        limit: u32,
        wait: bool,
        timeout: Duration,
    ) -> Option<RequestId> {
        let now = self.now_of(slot);
        let id = self.nodes[slot]
            .node
            .acquire(now, name, limit, wait, timeout)
            .ok()?;
        self.permits.limit(name, limit);
        self.note(format!("acquire {slot} {name} limit {limit}"));
        self.after(slot);
        Some(id)
    }

    /// Releases a permit (or a pending acquire) of a node.
    pub fn release(&mut self, slot: usize, ticket: RequestId) -> bool {
        if !self.nodes[slot].alive {
            return false;
        }
        let now = self.now_of(slot);
        let released = self.nodes[slot].node.release(now, ticket);
        self.note(format!("release {slot} ticket {}", ticket.0));
        self.after(slot);
        released
    }

    /// Permit intervals granted so far.
    pub fn permits_granted(&self) -> u64 {
        self.permits.grants
    }

    /// Puts acknowledged so far.
    pub fn puts_acked(&self) -> usize {
        self.puts.count()
    }

    // ---- running ------------------------------------------------------------

    /// Runs until true time `t_end` (ns since start).
    pub fn run_until(&mut self, t_end: u64) {
        loop {
            let next_ev = self.queue.peek().map(|s| s.at).unwrap_or(u64::MAX);
            let next_timer = self.timers.peek().map(|r| r.0 .0).unwrap_or(u64::MAX);
            let next = next_ev.min(next_timer);
            if next > t_end {
                self.t = self.t.max(t_end);
                return;
            }
            self.t = self.t.max(next);
            if next_ev <= next_timer {
                if let Some(s) = self.queue.pop() {
                    self.dispatch(s.ev);
                }
            } else if let Some(Reverse((_, slot, gen))) = self.timers.pop() {
                if self.nodes[slot].alive && self.nodes[slot].gen == gen {
                    self.tick(slot);
                }
            }
            while let Some(w) = self.pending_pumps.pop() {
                self.pump_writer(w);
            }
        }
    }

    /// Runs for `d` more simulated time.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.t + d.as_nanos() as u64;
        self.run_until(end);
    }

    /// Runs in steps of `step` until `done` holds or `limit` passes; returns
    /// the time it first held.
    pub fn run_until_true(
        &mut self,
        limit: Duration,
        step: Duration,
        mut done: impl FnMut(&Cluster) -> bool,
    ) -> Option<u64> {
        let end = self.t + limit.as_nanos() as u64;
        loop {
            if done(self) {
                return Some(self.t);
            }
            if self.t >= end {
                return None;
            }
            let next = (self.t + step.as_nanos() as u64).min(end);
            self.run_until(next);
        }
    }

    /// Runs until the cluster converges (see [`Cluster::divergence`]),
    /// checking every `step`; returns the time it did.
    pub fn run_until_converged(&mut self, limit: Duration) -> Option<u64> {
        self.run_until_true(limit, Duration::from_millis(10), |c| {
            c.divergence().is_none()
        })
    }

    // ---- observations -----------------------------------------------------------

    /// True time now, ns since start.
    pub fn now_ns(&self) -> u64 {
        self.t
    }

    /// The nodes.
    pub fn nodes(&self) -> &[SimNode] {
        &self.nodes
    }

    /// One node.
    pub fn node(&self, slot: usize) -> &SimNode {
        &self.nodes[slot]
    }

    /// One node, to call its commands directly (then [`Cluster::flush`]).
    pub fn node_mut(&mut self, slot: usize) -> &mut SimNode {
        &mut self.nodes[slot]
    }

    /// Carries out a node's pending outputs after a direct command.
    pub fn flush(&mut self, slot: usize) {
        self.after(slot);
    }

    /// The store.
    pub fn store(&self) -> &SimStore {
        &self.store
    }

    /// Live slots.
    pub fn live(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|s| self.nodes[*s].alive && !self.nodes[*s].leaving)
            .collect()
    }

    /// The slot that leads now by its own clock, if exactly one does.
    pub fn leader(&self) -> Option<usize> {
        let leaders = self.leaders();
        (leaders.len() == 1).then(|| leaders[0])
    }

    /// Every live slot whose node says it leads now.
    pub fn leaders(&self) -> Vec<usize> {
        self.live()
            .into_iter()
            .filter(|s| {
                let n = &self.nodes[*s];
                n.node.is_leader(&n.clock.now(self.t))
            })
            .collect()
    }

    /// The term of the lease claim the node in `slot` holds, if it holds
    /// one: its fencing token. Holding a claim is not leading ([`Cluster::leader`]
    /// says who leads now).
    pub fn lease_term(&self, slot: usize) -> Option<Term> {
        self.nodes[slot].node.lease_claim().map(|(term, _)| term)
    }

    /// The reading a node's clock gives now.
    pub fn now_of(&self, slot: usize) -> Now {
        self.nodes[slot].clock.now(self.t)
    }

    /// When the first leader was elected (ns).
    pub fn first_leader_at(&self) -> Option<u64> {
        self.first_leader_at
    }

    /// Invariant violations so far, plus the interval checks run now.
    pub fn violations(&self) -> Vec<Violation> {
        let mut v = self.violations.clone();
        let intervals = self.leadership.intervals(self.t);
        v.extend(self.leadership.check(self.t).map(|x| self.with_trace(x)));
        v.extend(tokens::check(&intervals).map(|x| self.with_trace(x)));
        v.extend(self.permits.check(self.t).map(|x| self.with_trace(x)));
        v.extend(
            self.puts
                .check(self.store.coord())
                .map(|x| self.with_trace(x)),
        );
        v
    }

    /// Panics with every violation, the seed and a replay hint if any.
    pub fn assert_no_violations(&self) {
        let v = self.violations();
        if !v.is_empty() {
            let mut msg = format!(
                "seed {} broke {} invariant(s); replay with HEDGEROW_SEED={}\n",
                self.cfg.seed,
                v.len(),
                self.cfg.seed
            );
            for x in v.iter().take(3) {
                msg.push_str(&x.to_string());
            }
            panic!("{msg}");
        }
    }

    /// Every leadership interval so far.
    pub fn leadership_intervals(&self) -> Vec<crate::check::leadership::Interval> {
        self.leadership.intervals(self.t)
    }

    /// Requests handled by leaders so far.
    pub fn handlings(&self) -> u64 {
        self.requests.handlings
    }

    /// Broadcasts handed to applications so far (each checked to be the
    /// first of its kind at its receiver).
    pub fn broadcast_deliveries(&self) -> u64 {
        self.broadcasts.deliveries
    }

    /// Bytes of stream data checked in order.
    pub fn stream_bytes_checked(&self) -> u64 {
        self.streams.bytes
    }

    /// Events processed.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// A hash of everything the nodes did, for determinism checks.
    pub fn trace_hash(&self) -> u64 {
        self.hash.finish()
    }

    /// Reports of every live node for the convergence checkers.
    pub fn reports(&self) -> Vec<NodeReport> {
        let leader = self.leader();
        self.live()
            .into_iter()
            .map(|s| self.report(s, leader))
            .collect()
    }

    /// Whether `slot` and the leader `leader` (if any) reach each other.
    fn reaches(&self, slot: usize, leader: Option<usize>) -> bool {
        match leader {
            Some(l) => l == slot || (!self.net.is_cut(slot, l) && !self.net.is_cut(l, slot)),
            None => true,
        }
    }

    /// One live node's report, with `leader` the slot that leads now.
    fn report(&self, s: usize, leader: Option<usize>) -> NodeReport {
        let n = &self.nodes[s];
        let now = n.clock.now(self.t);
        NodeReport {
            slot: s,
            me: (n.node.identity().id.clone(), n.node.identity().incarnation),
            reachable: self.reaches(s, leader),
            leads: n.node.is_leader(&now),
            leader: n.node.leader().map(|l| (l.id.clone(), l.term)),
            stamp: n.node.view().stamp(),
            members: n
                .node
                .view()
                .members()
                .map(|m| (m.id.clone(), m.incarnation))
                .collect(),
            stale: n.node.view_is_stale(),
        }
    }

    /// Why the cluster has not converged, or `None` once it has
    /// (invariants 4 and 5).
    pub fn divergence(&self) -> Option<String> {
        // Cheap necessary conditions first (this runs every few simulated
        // milliseconds on large clusters); the exact check runs only when
        // they all hold.
        let Some(l) = self.leader() else {
            return Some(format!("{} nodes lead", self.leaders().len()));
        };
        let lv = self.nodes[l].node.view();
        let (stamp, digest) = (lv.stamp(), lv.digest());
        let live = self.live();
        for &s in &live {
            let v = self.nodes[s].node.view();
            if self.reaches(s, Some(l)) && (v.stamp() != stamp || v.digest() != digest) {
                return Some(format!(
                    "node {s} has view {:?}, leader has {stamp:?}",
                    v.stamp()
                ));
            }
        }
        // The exact check of [`convergence::diverged`] on the same reports,
        // one node's at a time: ten thousand nodes' member lists at once
        // would be ten thousand squared entries.
        let ids: Vec<(bool, (NodeId, u64))> = live
            .iter()
            .map(|&s| {
                let me = self.nodes[s].node.identity();
                (self.reaches(s, Some(l)), (me.id.clone(), me.incarnation))
            })
            .collect();
        let expected = convergence::expected(ids.iter().map(|(r, me)| (*r, me)));
        let leader = &self.nodes[l].node.identity().id;
        live.iter().find_map(|&s| {
            convergence::diverged_one(&self.report(s, Some(l)), leader, stamp, &expected)
        })
    }

    // ---- the report ---------------------------------------------------------

    /// Marks the end of a scenario step in the record (see
    /// [`Recorder::mark`]); nothing when the run does not record.
    pub fn mark(&mut self, label: String, converge: Option<Option<u64>>) {
        let t = self.t;
        self.rec(|r| r.mark(t, label, converge));
    }

    /// The run so far as a [`Record`], if [`ClusterConfig::record`] was
    /// set: its change points with the checkers' intervals and violations.
    pub fn record(&self) -> Option<Record> {
        let r = self.recorder.clone()?;
        let mut rec = r.finish(
            self.t,
            &self.leadership.intervals(self.t),
            &self.permits.intervals(self.t),
            &self.violations(),
        );
        rec.runner = "in-process".into();
        rec.seed = self.cfg.seed;
        // A scenario run also fails on a phase that did not converge; its
        // runner knows, and overrides this.
        rec.passed = rec.violations.is_empty();
        Some(rec)
    }

    fn rec(&mut self, f: impl FnOnce(&mut Recorder)) {
        if let Some(r) = &mut self.recorder {
            f(r);
        }
    }

    /// Begins (`on`) or ends a fault band.
    fn band(&mut self, kind: FaultKind, label: &str, slot: Option<usize>, on: bool) {
        let t = self.t;
        if on {
            self.rec(|r| r.fault(kind, label.into(), slot, t));
        } else {
            self.rec(|r| r.fault_over(kind, slot, t));
        }
    }

    fn cut_band(&mut self, label: String, slot: Option<usize>) {
        let t = self.t;
        self.rec(|r| r.fault(FaultKind::Partition, label, slot, t));
    }

    // ---- the driver -----------------------------------------------------------

    fn note(&mut self, line: String) {
        if self.cfg.trace_len == 0 {
            return;
        }
        if self.trace.len() >= self.cfg.trace_len {
            self.trace.pop_front();
        }
        self.trace
            .push_back(format!("t={:.6}s {line}", self.t as f64 / 1e9));
    }

    fn with_trace(&self, mut v: Violation) -> Violation {
        v.trace = self.trace.iter().cloned().collect();
        v
    }

    fn violation(&mut self, v: Option<Violation>) {
        if let Some(v) = v {
            if self.violations.len() < 16 {
                let v = self.with_trace(v);
                self.violations.push(v);
            }
        }
    }

    fn schedule(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Scheduled {
            at,
            seq: self.seq,
            ev,
        });
    }

    fn input(&mut self, slot: usize, input: Input) {
        if !self.nodes[slot].alive {
            return;
        }
        if self.nodes[slot].paused {
            if matches!(input, Input::Lease { .. } | Input::Coord { .. }) {
                self.nodes[slot].deferred.push(input);
            }
            return;
        }
        let now = self.now_of(slot);
        self.nodes[slot].node.handle(now, input);
        self.after(slot);
        for input in std::mem::take(&mut self.nodes[slot].deferred) {
            let now = self.now_of(slot);
            self.nodes[slot].node.handle(now, input);
            self.after(slot);
        }
    }

    /// A timer fired. A node that asks to be woken at the same instant
    /// over and over is spinning: that is a bug, reported as a violation
    /// (and its timer dropped for that instant) instead of hanging the run.
    fn tick(&mut self, slot: usize) {
        if self.spin.0 == slot && self.spin.1 == self.t {
            self.spin.2 += 1;
            if self.spin.2 > 1000 {
                let v = Violation {
                    invariant: "7 (no busy loop: a timer that never advances)",
                    at_ns: self.t,
                    what: format!("node {slot} asked to be woken at the same instant 1000 times"),
                    trace: Vec::new(),
                };
                self.violation(Some(v));
                return;
            }
        } else {
            self.spin = (slot, self.t, 0);
        }
        self.input(slot, Input::Tick);
    }

    fn dispatch(&mut self, ev: Ev) {
        self.events += 1;
        match ev {
            Ev::Deliver { to, inc, from, msg } => {
                if self.is_current(to, inc) {
                    self.nodes[to].app.recv_msgs += 1;
                    self.input(to, Input::Message { from, msg });
                }
            }
            Ev::StoreArrive {
                slot,
                inc,
                op,
                refused,
            } => {
                let result = if refused {
                    Err(StoreError::Unavailable("too many connections".into()))
                } else {
                    let r = self.store.execute(&op);
                    if let (
                        Ok(LeaseReply::Cas(hedgerow_core::CasOutcome::Applied(row))),
                        LeaseOp::CompareAndSet { .. },
                    ) = (&r, &op)
                    {
                        row.token.hash(&mut self.hash);
                        row.version.hash(&mut self.hash);
                        let who = row
                            .holder
                            .as_ref()
                            .map(|h| h.id.to_string())
                            .unwrap_or_else(|| "none".into());
                        self.note(format!(
                            "store write by {slot}: holder {who} token {} v{}",
                            row.token, row.version
                        ));
                    }
                    r
                };
                let lat = self.store_latency();
                self.schedule(
                    self.t + lat,
                    Ev::StoreReply {
                        slot,
                        inc,
                        op: op.id(),
                        result,
                    },
                );
            }
            Ev::StoreReply {
                slot,
                inc,
                op,
                result,
            } => self.store_answer(slot, inc, op, result),
            Ev::StoreTimeout { slot, inc, op } => {
                self.store_answer(slot, inc, op, Err(StoreError::Timeout))
            }
            Ev::CoordArrive { slot, inc, op } => {
                let result = self.store.execute_coord(&op);
                if let Ok(r) = &result {
                    format!("{r:?}").hash(&mut self.hash);
                    self.note(format!("store {} by {slot}: {r:?}", op.kind()));
                }
                let lat = self.store_latency();
                let op = op.id();
                self.schedule(
                    self.t + lat,
                    Ev::CoordAnswer {
                        slot,
                        inc,
                        op,
                        result,
                    },
                );
            }
            Ev::CoordAnswer {
                slot,
                inc,
                op,
                result,
            } => {
                if self.is_current(slot, inc) && self.nodes[slot].pending_coord == Some(op) {
                    self.nodes[slot].pending_coord = None;
                    self.input(slot, Input::Coord { op, result });
                }
            }
            Ev::AppReply { slot, inc, handle } => self.on_current(slot, inc, |node, now| {
                let body = format!("handled by {} term {}", node.identity().id, handle.term);
                node.reply(now, handle, Ok(Payload::from(body.as_str())));
            }),
            Ev::AppBroadcastReply { slot, inc, handle } => {
                self.on_current(slot, inc, |node, now| {
                    let body = node.identity().id.to_string();
                    node.reply_broadcast(now, handle, Ok(Payload::from(body.as_str())));
                })
            }
            Ev::Consume {
                slot,
                inc,
                from,
                sid,
                n,
            } => self.on_current(slot, inc, |node, now| {
                node.stream_consumed(now, &from, sid, n);
            }),
        }
    }

    fn store_answer(
        &mut self,
        slot: usize,
        inc: u64,
        op: OpId,
        result: Result<LeaseReply, StoreError>,
    ) {
        if !self.is_current(slot, inc) || self.nodes[slot].pending_store != Some(op) {
            return; // a late answer the driver already gave up on
        }
        self.nodes[slot].pending_store = None;
        self.store.in_flight = self.store.in_flight.saturating_sub(1);
        self.input(slot, Input::Lease { op, result });
        if self.nodes[slot].leaving && self.nodes[slot].pending_store.is_none() {
            self.exit(slot);
        }
    }

    fn incarnation(&self, slot: usize) -> Option<u64> {
        let n = &self.nodes[slot];
        n.alive.then(|| n.node.identity().incarnation)
    }

    /// Whether the process in `slot` is still the incarnation `inc` an
    /// event was scheduled for: a message, reply or store answer meant for
    /// a process that has since crashed or restarted is dropped.
    fn is_current(&self, slot: usize, inc: u64) -> bool {
        self.incarnation(slot) == Some(inc)
    }

    /// Hands the node in `slot` to `act` with its clock's reading, if it
    /// is still the incarnation `inc`, then carries out what it produced.
    fn on_current(&mut self, slot: usize, inc: u64, act: impl FnOnce(&mut Node, Now)) {
        if self.is_current(slot, inc) {
            let now = self.now_of(slot);
            act(&mut self.nodes[slot].node, now);
            self.after(slot);
        }
    }

    fn store_latency(&mut self) -> u64 {
        let lo = self.cfg.store.latency_min.as_nanos() as u64;
        let hi = (self.cfg.store.latency_max.as_nanos() as u64).max(lo);
        lo + self.rng.below(hi - lo + 1) + self.store.spike.as_nanos() as u64
    }

    /// Drains a node's outputs, carries them out, runs the checkers and
    /// re-arms its timer.
    fn after(&mut self, slot: usize) {
        let t = self.t;
        let inc = self.nodes[slot].node.identity().incarnation;
        while let Some(out) = self.nodes[slot].node.poll() {
            match out {
                Output::Transmit { to, msg, .. } => {
                    (t, slot, msg.kind()).hash(&mut self.hash);
                    self.nodes[slot].app.sent_msgs += 1;
                    if self.cfg.measure_bytes {
                        let len = hedgerow_core::wire::encoded_len(&msg)
                            + hedgerow_core::wire::LEN_PREFIX;
                        let app = &mut self.nodes[slot].app;
                        app.sent_bytes += len as u64;
                        *app.sent_bytes_by_kind.entry(msg.kind()).or_insert(0) += len as u64;
                    }
                    let Some(&dst) = self.index.get(&to) else {
                        continue;
                    };
                    let Some(dst_inc) = self.incarnation(dst) else {
                        continue;
                    };
                    let arrivals = self.net.arrivals(slot, dst, t, &mut self.rng);
                    let from = self.nodes[slot].node.identity().id.clone();
                    for at in arrivals {
                        self.schedule(
                            at,
                            Ev::Deliver {
                                to: dst,
                                inc: dst_inc,
                                from: from.clone(),
                                msg: msg.clone(),
                            },
                        );
                    }
                }
                Output::Lease(op) => {
                    (t, slot, "lease").hash(&mut self.hash);
                    self.nodes[slot].pending_store = Some(op.id());
                    let timeout = self.cfg.store.op_timeout.as_nanos() as u64;
                    self.schedule(
                        t + timeout,
                        Ev::StoreTimeout {
                            slot,
                            inc,
                            op: op.id(),
                        },
                    );
                    if self.store_cut.contains(&slot) {
                        continue;
                    }
                    let refused = self.store.in_flight >= self.store.cfg.max_connections;
                    if refused {
                        self.store.refused += 1;
                    } else {
                        self.store.in_flight += 1;
                        self.store.peak_in_flight =
                            self.store.peak_in_flight.max(self.store.in_flight);
                    }
                    let lat = self.store_latency();
                    self.schedule(
                        t + lat,
                        Ev::StoreArrive {
                            slot,
                            inc,
                            op,
                            refused,
                        },
                    );
                }
                Output::Coord(op) => {
                    (t, slot, op.kind()).hash(&mut self.hash);
                    self.nodes[slot].pending_coord = Some(op.id());
                    let timeout = self.cfg.store.op_timeout.as_nanos() as u64;
                    let id = op.id();
                    self.schedule(
                        t + timeout,
                        Ev::CoordAnswer {
                            slot,
                            inc,
                            op: id,
                            result: Err(StoreError::Timeout),
                        },
                    );
                    if self.store_cut.contains(&slot) {
                        continue;
                    }
                    let lat = self.store_latency();
                    self.schedule(t + lat, Ev::CoordArrive { slot, inc, op });
                }
                Output::Event(e) => self.on_event(slot, inc, e),
                _ => {}
            }
        }
        self.check_node(slot);
        if let Some(at) = self.nodes[slot].node.poll_timeout() {
            let n = &mut self.nodes[slot];
            n.gen += 1;
            self.timers
                .push(Reverse((at.as_nanos().max(t), slot, n.gen)));
        }
    }

    fn check_node(&mut self, slot: usize) {
        let t = self.t;
        let n = &self.nodes[slot];
        if !n.alive {
            return;
        }
        let now = n.clock.now(t);
        let inc = n.node.identity().incarnation;
        let claim = n.node.lease_claim().filter(|_| now.clock.status.may_lead());
        let end = claim.map_or(0, |(_, expires)| n.clock.true_time_latest_reaches(expires));
        let leads = n.node.is_leader(&now);
        let stamp = n.node.view().stamp();
        self.leadership
            .observe(slot, inc, claim.map(|c| c.0), end, t);
        if leads && self.first_leader_at.is_none() {
            self.first_leader_at = Some(t);
        }
        if leads && !self.leadership.leaders_at(t).iter().any(|o| o.slot == slot) {
            let v = Violation {
                invariant: "1 (the API's answer matches the leadership interval)",
                at_ns: t,
                what: format!("node {slot} says it leads outside its recorded interval"),
                trace: Vec::new(),
            };
            self.violation(Some(v));
        }
        // The boundary itself, asked ahead without a step in between (a
        // process paused until then and resuming there): at the first
        // instant its `latest` reaches the expiry it holds, a node already
        // says no.
        if let Some((term, expires)) = claim.filter(|_| end > t) {
            let at_end = self.nodes[slot].clock.now(end);
            if self.nodes[slot].node.is_leader(&at_end) {
                let v = Violation {
                    invariant: "1 (a leader says no once its latest reaches the expiry)",
                    at_ns: t,
                    what: format!(
                        "node {slot} (term {term}) would still say it leads at t={:.6}s, \
                         when its latest reaches its expiry {expires}",
                        end as f64 / 1e9
                    ),
                    trace: Vec::new(),
                };
                self.violation(Some(v));
            }
        }
        let v = self.views.observe(slot, inc, stamp, t);
        self.violation(v);
        if let Some(r) = &mut self.recorder {
            r.view(slot, t, self.nodes[slot].node.view().len());
        }
        let n = &self.nodes[slot];
        let held: Vec<_> = n
            .node
            .permits()
            .filter(|(ticket, _)| n.node.permit_valid(&now, *ticket))
            .map(|(ticket, p)| {
                let end = n.clock.true_time_latest_reaches(p.expires_ns);
                (ticket.0, p.name.clone(), p.token, end)
            })
            .collect();
        if !held.is_empty() || self.permits.holds_any(slot) {
            self.permits.observe(slot, inc, held, t);
        }
    }

    fn on_event(&mut self, slot: usize, inc: u64, e: Event) {
        let t = self.t;
        match e {
            Event::Elected { term } => {
                self.note(format!("{slot} elected term {term}"));
            }
            Event::SteppedDown { term, reason } => {
                self.note(format!("{slot} stepped down from term {term}: {reason:?}"));
            }
            Event::LeaderChanged { .. } => self.nodes[slot].app.leader_changes += 1,
            Event::Request { handle, .. } => self.on_request(slot, inc, handle),
            Event::SendDone { id, result } => self.on_send_done(slot, id, result),
            Event::Broadcast { handle, .. } => {
                let v = self.broadcasts.delivered(
                    (slot, inc),
                    &handle.from,
                    handle.incarnation,
                    handle.id,
                    t,
                );
                self.violation(v);
                let at = t + self.cfg.reply_delay.as_nanos() as u64;
                self.schedule(at, Ev::AppBroadcastReply { slot, inc, handle });
            }
            Event::BroadcastReply { id, from, result } => {
                self.nodes[slot]
                    .app
                    .broadcasts
                    .entry(id)
                    .or_default()
                    .push((from, result));
            }
            Event::BroadcastDone { id } => {
                self.nodes[slot].app.broadcasts_done.insert(id);
            }
            Event::StreamData {
                from,
                sid,
                offset,
                data,
            } => self.on_stream_data(slot, inc, from, sid, offset, &data),
            Event::StreamFinished { from, sid } => {
                self.nodes[slot].app.streams_finished.insert((from, sid));
            }
            Event::StreamWritable { id } => {
                if let Some(w) = self
                    .writers
                    .iter()
                    .position(|w| w.slot == slot && w.sid == id)
                {
                    self.pump_writer_later(w);
                }
            }
            Event::StreamSent { id } => {
                self.nodes[slot].app.streams_sent.insert(id);
            }
            Event::StreamFailed { id, reason } => {
                self.nodes[slot].app.streams_failed.insert(id, reason);
            }
            Event::Coord { id, result } => self.on_coord_done(slot, id, result),
            Event::PermitLost {
                ticket,
                name,
                token,
            } => {
                self.note(format!("{slot} lost {name} token {token}"));
                self.nodes[slot]
                    .app
                    .permits_lost
                    .push((ticket, name, token));
            }
            _ => {}
        }
    }

    /// The app handles a request as leader: the request checker sees the
    /// handling now, the reply goes back after `reply_delay`.
    fn on_request(&mut self, slot: usize, inc: u64, handle: RequestHandle) {
        let t = self.t;
        let id = self.nodes[slot].node.identity().id.clone();
        let key = (handle.from.clone(), handle.incarnation, handle.id);
        let leading = self
            .leadership
            .leaders_at(t)
            .iter()
            .any(|o| o.slot == slot && o.term == handle.term);
        let h = Handling {
            slot,
            incarnation: inc,
            id,
            term: handle.term,
            leading,
        };
        let v = self.requests.handled(h, key, t);
        self.violation(v);
        let at = t + self.cfg.reply_delay.as_nanos() as u64;
        self.schedule(at, Ev::AppReply { slot, inc, handle });
    }

    /// A coordination call finished: an acknowledged put goes to the put
    /// checker.
    fn on_coord_done(
        &mut self,
        slot: usize,
        id: RequestId,
        result: Result<CoordAnswer, SendError>,
    ) {
        self.note(format!("{slot} coord {} -> {result:?}", id.0));
        if let Ok(CoordAnswer::Put { revision }) = &result {
            if let Some((key, value)) = self.nodes[slot].app.puts.get(&id) {
                let me = self.nodes[slot].node.identity();
                let origin = Origin {
                    node: me.id.clone(),
                    incarnation: me.incarnation,
                    request: id.0,
                };
                self.puts
                    .acked(origin, key, value.clone(), *revision, self.t);
            }
        }
        self.nodes[slot].app.coord.insert(id, result);
    }

    /// A send finished: an Ok reply is checked against the handlings.
    fn on_send_done(&mut self, slot: usize, id: RequestId, result: Result<SendReply, SendError>) {
        if let Ok(r) = &result {
            let me = self.nodes[slot].node.identity();
            let key = (me.id.clone(), me.incarnation, id.0);
            let v = self.requests.replied_ok(&r.leader, r.term, &key, self.t);
            self.violation(v);
        }
        self.nodes[slot].app.sends.insert(id, result);
    }

    /// Stream bytes reached the app: checked byte by byte, and consumed
    /// after `consume_delay` (the slow-reader lever).
    fn on_stream_data(
        &mut self,
        slot: usize,
        inc: u64,
        from: NodeId,
        sid: u64,
        offset: u64,
        data: &[u8],
    ) {
        let t = self.t;
        let v = self.streams.data(slot, &from, sid, offset, data, t);
        self.violation(v);
        let pending = self.nodes[slot]
            .node
            .stream_unconsumed(&from, sid)
            .unwrap_or(0);
        let app = &mut self.nodes[slot].app;
        app.peak_unconsumed = app.peak_unconsumed.max(pending);
        let at = t + self.cfg.consume_delay.as_nanos() as u64;
        self.schedule(
            at,
            Ev::Consume {
                slot,
                inc,
                from,
                sid,
                n: data.len(),
            },
        );
    }

    fn pump_writer_later(&mut self, w: usize) {
        // Writing from inside an event drain would re-enter the node; the
        // writer resumes once the drain is over.
        self.pending_pumps.push(w);
    }

    fn pump_writer(&mut self, w: usize) {
        let (slot, sid) = (self.writers[w].slot, self.writers[w].sid);
        if !self.nodes[slot].alive || self.writers[w].finished {
            return;
        }
        loop {
            let left = self.writers[w].total - self.writers[w].written;
            if left == 0 {
                let now = self.now_of(slot);
                let _ = self.nodes[slot].node.stream_finish(now, sid);
                self.writers[w].finished = true;
                self.after(slot);
                return;
            }
            let n = left.min(64 * 1024) as usize;
            let start = self.writers[w].written;
            let chunk: Vec<u8> = (0..n as u64)
                .map(|i| pattern_byte(sid.0, start + i))
                .collect();
            let now = self.now_of(slot);
            let took = match self.nodes[slot].node.stream_write(now, sid, &chunk) {
                Ok(n) => n,
                Err(_) => return,
            };
            self.writers[w].written += took as u64;
            let buffered = self.nodes[slot].node.stream_buffered(sid).unwrap_or(0);
            let app = &mut self.nodes[slot].app;
            app.peak_buffered = app.peak_buffered.max(buffered);
            self.after(slot);
            if took < n {
                return; // wait for StreamWritable
            }
        }
    }
}
