//! foca (a sans-IO SWIM library) run inside turmoil under a hedgerow
//! [`Scenario`], recorded as a [`MembershipTrace`] so that it can be set
//! beside hedgerow's own runs.
//!
//! Each node is a turmoil host running one `Foca` over turmoil UDP. The
//! driver outside the simulation replays the scenario's steps with the same
//! seed-derived choices as `hedgerow_sim::scenario::run` (same generator,
//! same draws over the same sorted live list), so the same nodes crash and
//! leave in each wave. foca has no leader: `crash leader` / `leave leader`
//! take the oldest live node, which draws nothing and so keeps the choices
//! that follow aligned. Steps about the lease store, clocks or sends have no
//! foca counterpart and are skipped (and reported).
//!
//! This file lives beside the examples, not in the library: foca is a
//! dev-dependency only.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::rc::Rc;
use std::time::Duration;

use foca::{Config, Foca, Identity, Notification, PostcardCodec, Runtime, Timer};
use hedgerow_core::Rng;
use hedgerow_sim::compare::{MembershipTrace, NodeName};
use hedgerow_sim::scenario::{Scenario, Step, Target};
use rand::SeedableRng;
use tokio::sync::Notify;
use tokio::time::Instant;

/// The UDP port every foca node listens on.
const PORT: u16 = 7946;

/// How the simulated network and foca are set up.
#[derive(Clone, Debug)]
pub struct Opts {
    /// turmoil's tick: every host runs this long per simulation step.
    pub tick: Duration,
    /// One-way latency range (turmoil draws from an exponential
    /// distribution between them).
    pub latency: (Duration, Duration),
    /// The cluster size foca's LAN preset is computed for; `None`: the
    /// largest size the scenario reaches.
    pub cluster_size: Option<u32>,
}

impl Default for Opts {
    fn default() -> Self {
        // hedgerow-sim's default network: 0.2–2 ms one way.
        Opts {
            tick: Duration::from_millis(1),
            latency: (Duration::from_micros(200), Duration::from_millis(2)),
            cluster_size: None,
        }
    }
}

/// What a foca run produced.
#[derive(Debug)]
pub struct Report {
    /// The membership record.
    pub trace: MembershipTrace,
    /// The foca configuration every node used.
    pub config: Config,
    /// Steps that have no foca counterpart and were skipped.
    pub skipped: Vec<String>,
}

/// A foca identity: the node's socket address plus a bump that a restarted
/// or wrongly declared-down node increases to rejoin (foca's auto-rejoin).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct NodeIdentity {
    addr: SocketAddr,
    bump: u16,
}

impl Identity for NodeIdentity {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(NodeIdentity {
            addr: self.addr,
            bump: self.bump.wrapping_add(1),
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.bump > adversary.bump
    }
}

/// One node as the driver sees it.
struct Slot {
    name: NodeName,
    ip: IpAddr,
    live: bool,
    /// Set when the node was asked to leave gracefully: its later "down"
    /// verdicts are the expected outcome, not failure reports.
    left: bool,
    bump: u16,
    /// Members this node was told to announce to (a headless service's
    /// answer when it started: the live nodes then).
    seeds: Vec<SocketAddr>,
    leave: Rc<Notify>,
    /// The node's view: the members it believes alive, itself included.
    view: BTreeSet<NodeName>,
}

/// What the driver and every host share. Hosts run on this thread, one at
/// a time, inside `Sim::step`.
#[derive(Default)]
struct World {
    slots: Vec<Slot>,
    by_ip: BTreeMap<IpAddr, usize>,
    trace: MembershipTrace,
}

impl World {
    fn live(&self) -> Vec<usize> {
        (0..self.slots.len())
            .filter(|s| self.slots[*s].live)
            .collect()
    }

    fn live_names(&self) -> BTreeSet<NodeName> {
        self.slots
            .iter()
            .filter(|s| s.live)
            .map(|s| s.name.clone())
            .collect()
    }

    fn record_live(&mut self, at: Duration) {
        let live = self.live_names();
        self.trace.live.push((at, live));
    }

    fn agreed(&self) -> bool {
        let live = self.live_names();
        self.slots.iter().filter(|s| s.live).all(|s| s.view == live)
    }

    fn member_changed(&mut self, at: Duration, slot: usize, member: SocketAddr, up: bool) {
        let Some(&m) = self.by_ip.get(&member.ip()) else {
            return;
        };
        let subject = self.slots[m].name.clone();
        let me = &mut self.slots[slot];
        if !me.live {
            // A node that has left or crashed still runs until it stops;
            // what it believes no longer counts.
            return;
        }
        let changed = if up {
            me.view.insert(subject.clone())
        } else {
            me.view.remove(&subject)
        };
        if changed {
            self.trace
                .views
                .push((at, me.name.clone(), me.view.clone()));
        }
        if !up && (!self.slots[m].left || self.slots[m].live) {
            let reporter = self.slots[slot].name.clone();
            self.trace.failed_reports.push((at, reporter, subject));
        }
    }
}

/// A timer foca asked for, ordered soonest first.
struct Due {
    at: Instant,
    seq: u64,
    timer: Timer<NodeIdentity>,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// foca's `Runtime` for one host: sends go straight to the turmoil socket,
/// timers into the host's heap, notifications into the shared world.
struct HostIo<'a> {
    slot: usize,
    socket: &'a turmoil::net::UdpSocket,
    world: &'a RefCell<World>,
    timers: &'a mut BinaryHeap<Due>,
    seq: &'a mut u64,
    idle: bool,
}

impl Runtime<NodeIdentity> for HostIo<'_> {
    fn notify(&mut self, notification: Notification<'_, NodeIdentity>) {
        let at = turmoil::sim_elapsed().unwrap_or_default();
        match notification {
            Notification::MemberUp(id) => {
                self.world
                    .borrow_mut()
                    .member_changed(at, self.slot, id.addr, true);
            }
            Notification::MemberDown(id) => {
                self.world
                    .borrow_mut()
                    .member_changed(at, self.slot, id.addr, false);
            }
            Notification::Idle => self.idle = true,
            Notification::Active => self.idle = false,
            _ => {}
        }
    }

    fn send_to(&mut self, to: NodeIdentity, data: &[u8]) {
        // UDP: a send to a stopped host is lost, as on a real network.
        if self.socket.try_send_to(data, to.addr).is_ok() {
            let mut w = self.world.borrow_mut();
            let name = w.slots[self.slot].name.clone();
            *w.trace.bytes_sent.entry(name).or_default() += data.len() as u64;
        }
    }

    fn submit_after(&mut self, timer: Timer<NodeIdentity>, after: Duration) {
        *self.seq += 1;
        self.timers.push(Due {
            at: Instant::now() + after,
            seq: *self.seq,
            timer,
        });
    }
}

type NodeFoca = Foca<NodeIdentity, PostcardCodec, rand::rngs::SmallRng, foca::NoCustomBroadcast>;

/// The software of one host: join through a seed, then run foca until
/// asked to leave.
async fn node_main(
    world: Rc<RefCell<World>>,
    slot: usize,
    config: Config,
    seed: u64,
) -> turmoil::Result {
    let socket = turmoil::net::UdpSocket::bind((IpAddr::V4(Ipv4Addr::UNSPECIFIED), PORT)).await?;
    let (me, seeds, leave) = {
        let w = world.borrow();
        let s = &w.slots[slot];
        (
            NodeIdentity {
                addr: SocketAddr::new(s.ip, PORT),
                bump: s.bump,
            },
            s.seeds.clone(),
            s.leave.clone(),
        )
    };
    let rng = rand::rngs::SmallRng::seed_from_u64(seed ^ u64::from(me.bump));
    let mut foca: NodeFoca = Foca::new(me, config, rng, PostcardCodec);
    let mut timers = BinaryHeap::new();
    let mut seq = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    // A joiner retries its announce, to the next address of the list each
    // time, until someone answers — as a pod would behind a headless
    // service. An idle node (every member gone) starts over.
    let mut attempt = 0usize;
    let mut idle = true;
    let mut next_announce = Instant::now();
    const ANNOUNCE_RETRY: Duration = Duration::from_secs(1);
    loop {
        let now = Instant::now();
        let mut io = HostIo {
            slot,
            socket: &socket,
            world: &world,
            timers: &mut timers,
            seq: &mut seq,
            idle,
        };
        if idle && !seeds.is_empty() && now >= next_announce {
            let to = seeds[attempt % seeds.len()];
            attempt += 1;
            next_announce = now + ANNOUNCE_RETRY;
            let _ = foca.announce(NodeIdentity { addr: to, bump: 0 }, &mut io);
        }
        idle = io.idle;
        // Nothing foca asked for is due before the next timer, and an idle
        // joiner's next announce.
        let far = now + Duration::from_secs(3600);
        let mut wake = timers.peek().map_or(far, |d| d.at);
        if idle && !seeds.is_empty() {
            wake = wake.min(next_announce);
        }
        tokio::select! {
            got = socket.recv_from(&mut buf) => {
                let (len, _from) = got?;
                let mut io = HostIo { slot, socket: &socket, world: &world, timers: &mut timers, seq: &mut seq, idle };
                // A malformed or stale packet is foca's to judge; it never
                // stops the node.
                let _ = foca.handle_data(&buf[..len], &mut io);
                idle = io.idle;
            }
            () = tokio::time::sleep_until(wake) => {
                let now = Instant::now();
                while timers.peek().is_some_and(|d| d.at <= now) {
                    let Some(due) = timers.pop() else { break };
                    let mut io = HostIo { slot, socket: &socket, world: &world, timers: &mut timers, seq: &mut seq, idle };
                    let _ = foca.handle_timer(due.timer, &mut io);
                    idle = io.idle;
                }
            }
            () = leave.notified() => {
                let mut io = HostIo { slot, socket: &socket, world: &world, timers: &mut timers, seq: &mut seq, idle };
                let _ = foca.leave_cluster(&mut io);
                return Ok(());
            }
        }
    }
}

/// The hedgerow-sim seed mixer, so that per-node seeds differ.
fn mix(seed: u64, slot: usize) -> u64 {
    let mut z = seed ^ (slot as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The largest live count a scenario asks for.
pub fn peak_size(scenario: &Scenario) -> u32 {
    let mut live = 0usize;
    let mut peak = 0usize;
    for step in &scenario.steps {
        match step {
            Step::Nodes(n) => live += n,
            Step::ScaleTo { n, .. } => live = *n,
            Step::Crash(_) | Step::Leave(_) => live = live.saturating_sub(1),
            _ => {}
        }
        peak = peak.max(live);
    }
    peak.max(1) as u32
}

/// The driver: owns the turmoil simulation and the shared world.
struct Driver<'a> {
    sim: turmoil::Sim<'a>,
    world: Rc<RefCell<World>>,
    config: Config,
    seed: u64,
}

impl Driver<'_> {
    fn now(&self) -> Duration {
        self.sim.elapsed()
    }

    fn step(&mut self) {
        if let Err(e) = self.sim.step() {
            panic!("turmoil step failed: {e}");
        }
    }

    fn run_for(&mut self, d: Duration) {
        let end = self.now() + d;
        while self.now() < end {
            self.step();
        }
    }

    /// Runs until every live view is the live set; how long that took.
    fn run_until_agreed(&mut self, limit: Duration) -> Option<Duration> {
        let start = self.now();
        loop {
            if self.world.borrow().agreed() {
                return Some(self.now() - start);
            }
            if self.now() - start >= limit {
                return None;
            }
            self.step();
        }
    }

    fn add_node(&mut self) -> usize {
        let at = self.now();
        let slot = self.world.borrow().slots.len();
        let name = format!("n{}", slot + 1);
        let seed = mix(self.seed, slot);
        let config = self.config.clone();
        let world = self.world.clone();
        self.sim.host(name.as_str(), move || {
            node_main(world.clone(), slot, config.clone(), seed)
        });
        let ip = self.sim.lookup(name.as_str());
        let mut w = self.world.borrow_mut();
        let seeds = w
            .live()
            .iter()
            .map(|s| SocketAddr::new(w.slots[*s].ip, PORT))
            .collect();
        w.by_ip.insert(ip, slot);
        w.slots.push(Slot {
            name: name.clone(),
            ip,
            live: true,
            left: false,
            bump: 0,
            seeds,
            leave: Rc::new(Notify::new()),
            view: [name.clone()].into(),
        });
        w.trace.views.push((at, name.clone(), [name].into()));
        w.record_live(at);
        slot
    }

    fn crash(&mut self, slot: usize) {
        let at = self.now();
        let name = {
            let mut w = self.world.borrow_mut();
            if !w.slots[slot].live {
                return;
            }
            w.slots[slot].live = false;
            w.record_live(at);
            w.slots[slot].name.clone()
        };
        self.sim.crash(name.as_str());
    }

    fn leave(&mut self, slot: usize) {
        let at = self.now();
        let mut w = self.world.borrow_mut();
        if !w.slots[slot].live {
            return;
        }
        w.slots[slot].live = false;
        w.slots[slot].left = true;
        w.slots[slot].leave.notify_one();
        w.record_live(at);
    }

    /// A crash and a start with a renewed identity, at the same instant.
    fn restart(&mut self, slot: usize) {
        self.crash(slot);
        let at = self.now();
        let name = {
            let mut w = self.world.borrow_mut();
            let seeds = w
                .live()
                .iter()
                .map(|s| SocketAddr::new(w.slots[*s].ip, PORT))
                .collect();
            let s = &mut w.slots[slot];
            s.live = true;
            s.bump += 1;
            s.seeds = seeds;
            s.view = [s.name.clone()].into();
            let (name, view) = (s.name.clone(), s.view.clone());
            w.trace.views.push((at, name.clone(), view));
            w.record_live(at);
            name
        };
        self.sim.bounce(name.as_str());
    }

    fn mark(&mut self, label: String) {
        let at = self.now();
        self.world.borrow_mut().trace.marks.push((at, label));
    }
}

/// Runs `scenario` with foca from `seed`.
pub fn run(scenario: &Scenario, seed: u64, opts: &Opts) -> Report {
    let size = opts.cluster_size.unwrap_or_else(|| peak_size(scenario));
    let config = Config::new_lan(NonZeroU32::new(size).unwrap_or(NonZeroU32::MIN));
    let mut latency = opts.latency;
    let mut drop = 0.0;
    for step in &scenario.steps {
        match step {
            Step::NetLatency(a, b) => latency = (*a, *b),
            Step::NetDrop(p) => drop = *p,
            _ => {}
        }
    }
    let sim = turmoil::Builder::new()
        .simulation_duration(Duration::from_secs(100_000))
        .tick_duration(opts.tick)
        .min_message_latency(latency.0)
        .max_message_latency(latency.1)
        .fail_rate(drop)
        .udp_capacity(1 << 16)
        .rng_seed(seed)
        .build();
    let mut d = Driver {
        sim,
        world: Rc::new(RefCell::new(World::default())),
        config: config.clone(),
        seed,
    };
    let mut skipped = Vec::new();
    // The same generator and draws as hedgerow_sim::scenario::run_with.
    let mut rng = Rng::new(seed ^ 0x5CE7_A210);
    let pick = |d: &Driver<'_>, rng: &mut Rng, t: Target| -> Option<usize> {
        let live = d.world.borrow().live();
        match t {
            // No leader in SWIM: the oldest live node, drawing nothing.
            Target::Leader => live.first().copied(),
            Target::Random if live.is_empty() => None,
            Target::Random => Some(live[rng.below(live.len() as u64) as usize]),
            Target::Slot(s) => live.contains(&s).then_some(s),
        }
    };
    for step in &scenario.steps {
        match step {
            Step::Nodes(n) => {
                for _ in 0..*n {
                    d.add_node();
                }
                d.mark(format!("nodes {n}"));
            }
            Step::Run(t) => d.run_for(*t),
            Step::ScaleTo { n, waves, over } => {
                let pause = *over / *waves as u32;
                for w in 0..*waves {
                    let live = d.world.borrow().live().len();
                    let left = *waves - w;
                    if live < *n {
                        for _ in 0..(*n - live).div_ceil(left) {
                            d.add_node();
                        }
                    } else {
                        for _ in 0..(live - *n).div_ceil(left) {
                            let l = d.world.borrow().live();
                            let s = l[rng.below(l.len() as u64) as usize];
                            if rng.below(4) == 0 {
                                d.crash(s);
                            } else {
                                d.leave(s);
                            }
                        }
                    }
                    let now = d.world.borrow().live().len();
                    d.mark(format!("scale-to {n} wave {}/{waves} ({now} live)", w + 1));
                    d.run_for(pause);
                }
            }
            Step::Crash(t) => {
                if let Some(s) = pick(&d, &mut rng, *t) {
                    d.crash(s);
                    d.mark(format!("crash {t:?}"));
                }
            }
            Step::Leave(t) => {
                if let Some(s) = pick(&d, &mut rng, *t) {
                    d.leave(s);
                    d.mark(format!("leave {t:?}"));
                }
            }
            Step::Restart(t) => {
                if let Some(s) = pick(&d, &mut rng, *t) {
                    d.restart(s);
                    d.mark(format!("restart {t:?}"));
                }
            }
            Step::Converge(limit) => {
                let _ = d.run_until_agreed(*limit);
            }
            Step::NetDrop(_) | Step::NetDup(_) | Step::NetLatency(..) => {}
            Step::Isolate(t) | Step::CutStore(t, _) | Step::ClockUnknown(t) => {
                // Keep the draws aligned with hedgerow's runner.
                let _ = pick(&d, &mut rng, *t);
                skipped.push(format!("{step:?}"));
            }
            Step::Send(k) => {
                for _ in 0..*k {
                    let _ = pick(&d, &mut rng, Target::Random);
                }
                skipped.push(format!("{step:?}"));
            }
            Step::Split | Step::Heal | Step::StoreDown(_) | Step::StoreSpike(..) => {
                skipped.push(format!("{step:?}"));
            }
        }
    }
    let end = d.now();
    let mut trace = std::mem::take(&mut d.world.borrow_mut().trace);
    trace.duration = end;
    Report {
        trace,
        config,
        skipped,
    }
}
