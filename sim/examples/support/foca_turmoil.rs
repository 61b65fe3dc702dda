//! foca (a sans-IO SWIM library) run inside turmoil under a hedgerow
//! [`Scenario`], recorded as a [`MembershipTrace`] so that it can be set
//! beside hedgerow's own runs.
//!
//! Each node is a turmoil host `n1`, `n2`, … running one `Foca` over
//! turmoil UDP. The driver outside the simulation replays the scenario's
//! steps exactly as hedgerow's turmoil runner (`hedgerow_sim::turmoil::run`)
//! does: the same generator and the same draws (including the two clock
//! draws it makes for every new host), the same sorted live list, the same
//! reuse of the lowest stopped host when growing, the same marks and the
//! same `converge` polling — so the same nodes crash and leave in each
//! wave. foca has no leader: `crash leader` / `leave leader` take the host
//! named in [`Opts::leader_hosts`] (the side-by-side passes the leaders
//! hedgerow's run acted on) or else the oldest live node; neither draws, so
//! the choices that follow stay aligned. Steps about the lease store or clocks have no foca
//! counterpart and only mark (and are reported as skipped).
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
use hedgerow_sim::scenario::{scale_to, Resizable, Scenario, Step, Target};
use hedgerow_sim::turmoil::TurmoilOptions;
use rand::SeedableRng;
use tokio::sync::Notify;
use tokio::time::Instant;

/// The UDP port every foca node listens on.
const PORT: u16 = 7946;

/// How the simulated network and foca are set up.
#[derive(Clone, Debug, Default)]
pub struct Opts {
    /// The hedgerow turmoil run this one mirrors: its tick, `converge`
    /// polling and the clock draws it makes per new host.
    pub mirror: TurmoilOptions,
    /// The cluster size foca's LAN preset is computed for; `None`: the
    /// largest size the scenario reaches.
    pub cluster_size: Option<u32>,
    /// The hosts to act on for `leader` targets, in step order (e.g. the
    /// leaders hedgerow's run crashed), so both runs churn the same hosts;
    /// once used up, or when one is not live, the oldest live node.
    pub leader_hosts: Vec<String>,
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
    /// "Down" verdicts about an earlier incarnation of a host that has
    /// since started again: true about that identity, but the trace names
    /// hosts, so they are left out of its failure reports and counted here.
    pub stale_incarnation_reports: usize,
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
    stale_incarnation_reports: usize,
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

    fn member_changed(&mut self, at: Duration, slot: usize, member: NodeIdentity, up: bool) {
        let Some(&m) = self.by_ip.get(&member.addr.ip()) else {
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
        if !up && member.bump < self.slots[m].bump {
            self.stale_incarnation_reports += 1;
        } else if !up && (!self.slots[m].left || self.slots[m].live) {
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
                    .member_changed(at, self.slot, *id, true);
            }
            Notification::MemberDown(id) => {
                self.world
                    .borrow_mut()
                    .member_changed(at, self.slot, *id, false);
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
        // `biased`: tokio's default random branch order would draw from an
        // unseeded source and make runs differ.
        tokio::select! {
            biased;
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

/// splitmix64 of the run's seed and a slot: each node's foca gets its own
/// generator, all from the one seed.
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
    rng: Rng,
    opts: TurmoilOptions,
    leader_hosts: std::collections::VecDeque<String>,
    held: BTreeSet<(usize, usize)>,
}

/// Foca's run marks each wave in the trace, as hedgerow's does.
impl Resizable for Driver<'_> {
    type Error = std::convert::Infallible;
    fn live(&self) -> Vec<usize> {
        Driver::live(self)
    }
    fn add_node(&mut self) {
        Driver::add_node(self);
    }
    fn crash(&mut self, slot: usize) {
        Driver::crash(self, slot);
    }
    fn leave(&mut self, slot: usize) {
        Driver::leave(self, slot);
    }
    fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }
    fn wave_done(&mut self, wave: String, pause: Duration) -> Result<(), Self::Error> {
        self.mark(wave);
        self.run_for(pause);
        Ok(())
    }
}

impl Driver<'_> {
    fn now(&self) -> Duration {
        self.sim.elapsed()
    }

    fn name(slot: usize) -> String {
        format!("n{}", slot + 1)
    }

    fn run_for(&mut self, d: Duration) {
        let end = self.now() + d;
        while self.now() < end {
            if let Err(e) = self.sim.step() {
                panic!("turmoil step failed: {e}");
            }
        }
    }

    /// Runs until every live view is the live set, looking as often as
    /// hedgerow's runner does.
    fn run_until_agreed(&mut self, limit: Duration) -> Option<Duration> {
        let start = self.now();
        loop {
            if self.world.borrow().agreed() {
                return Some(self.now() - start);
            }
            if self.now() - start >= limit {
                return None;
            }
            self.run_for(self.opts.check_every);
        }
    }

    fn live(&self) -> Vec<usize> {
        self.world.borrow().live()
    }

    fn pick(&mut self, t: Target) -> Option<usize> {
        let live = self.live();
        match t {
            // No leader in SWIM: the host the caller names, else the
            // oldest live node; neither draws, so later choices stay
            // aligned.
            Target::Leader => {
                let named = self.leader_hosts.pop_front().and_then(|h| {
                    let n: usize = h.strip_prefix('n')?.parse().ok()?;
                    live.contains(&n.checked_sub(1)?).then(|| n - 1)
                });
                named.or_else(|| live.first().copied())
            }
            Target::Random if live.is_empty() => None,
            Target::Random => Some(live[self.rng.below(live.len() as u64) as usize]),
            // Slots in scenarios are host numbers (`n<slot>`).
            Target::Slot(s) => live.contains(&(s.wrapping_sub(1))).then(|| s - 1),
        }
    }

    /// Starts a node on the lowest stopped host, or on a new one.
    fn add_node(&mut self) {
        let at = self.now();
        let free = {
            let w = self.world.borrow();
            (0..w.slots.len()).find(|s| !w.slots[*s].live)
        };
        let free = free.filter(|s| !self.sim.is_host_running(Self::name(*s).as_str()));
        let seeds = {
            let w = self.world.borrow();
            w.live()
                .iter()
                .map(|s| SocketAddr::new(w.slots[*s].ip, PORT))
                .collect()
        };
        let slot = match free {
            Some(slot) => {
                {
                    let mut w = self.world.borrow_mut();
                    let s = &mut w.slots[slot];
                    s.live = true;
                    s.left = false;
                    s.bump = s.bump.wrapping_add(1);
                    s.seeds = seeds;
                    s.leave = Rc::new(Notify::new());
                }
                self.sim.bounce(Self::name(slot).as_str());
                slot
            }
            None => {
                // hedgerow's runner draws a clock offset and drift for
                // every new host; draw the same to keep choices aligned.
                let bound = u64::try_from(self.opts.bound.as_nanos()).unwrap_or(u64::MAX);
                let span = (bound as f64 * self.opts.offset_fraction) as u64;
                let _ = self.rng.below(2 * span + 1);
                let _ = self.rng.below(2 * self.opts.drift_ppm * 1000 + 1);
                let slot = self.world.borrow().slots.len();
                let name = Self::name(slot);
                let seed = mix(self.seed, slot);
                let config = self.config.clone();
                let world = self.world.clone();
                self.sim.host(name.as_str(), move || {
                    node_main(world.clone(), slot, config.clone(), seed)
                });
                let ip = self.sim.lookup(name.as_str());
                let mut w = self.world.borrow_mut();
                w.by_ip.insert(ip, slot);
                w.slots.push(Slot {
                    name,
                    ip,
                    live: true,
                    left: false,
                    bump: 0,
                    seeds,
                    leave: Rc::new(Notify::new()),
                    view: BTreeSet::new(),
                });
                slot
            }
        };
        let mut w = self.world.borrow_mut();
        let s = &mut w.slots[slot];
        s.view = [s.name.clone()].into();
        let (name, view) = (s.name.clone(), s.view.clone());
        w.trace.views.push((at, name, view));
        w.record_live(at);
    }

    fn crash(&mut self, slot: usize) {
        let at = self.now();
        {
            let mut w = self.world.borrow_mut();
            if !w.slots[slot].live {
                return;
            }
            w.slots[slot].live = false;
            w.record_live(at);
        }
        self.sim.crash(Self::name(slot).as_str());
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
        {
            let mut w = self.world.borrow_mut();
            let seeds = w
                .live()
                .iter()
                .map(|s| SocketAddr::new(w.slots[*s].ip, PORT))
                .collect();
            let s = &mut w.slots[slot];
            s.live = true;
            s.bump = s.bump.wrapping_add(1);
            s.seeds = seeds;
            s.leave = Rc::new(Notify::new());
            s.view = [s.name.clone()].into();
            let (name, view) = (s.name.clone(), s.view.clone());
            w.trace.views.push((at, name, view));
            w.record_live(at);
        }
        self.sim.bounce(Self::name(slot).as_str());
    }

    fn hold(&mut self, a: usize, b: usize) {
        let pair = (a.min(b), a.max(b));
        if a != b && self.held.insert(pair) {
            self.sim
                .hold(Self::name(pair.0).as_str(), Self::name(pair.1).as_str());
        }
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
    let mut b = turmoil::Builder::new();
    b.tick_duration(opts.mirror.tick)
        .simulation_duration(Duration::from_secs(1_000_000))
        .rng_seed(seed)
        // A host takes every datagram of a busy tick.
        .udp_capacity(1 << 16);
    for step in &scenario.steps {
        match step {
            Step::NetLatency(lo, hi) => {
                b.min_message_latency(*lo).max_message_latency(*hi);
            }
            Step::NetDrop(p) => {
                b.fail_rate(*p);
            }
            _ => {}
        }
    }
    let mut d = Driver {
        sim: b.build(),
        world: Rc::new(RefCell::new(World::default())),
        config: config.clone(),
        seed,
        rng: Rng::new(seed ^ 0x7u64.rotate_left(40)),
        opts: opts.mirror.clone(),
        leader_hosts: opts.leader_hosts.iter().cloned().collect(),
        held: BTreeSet::new(),
    };
    let mut skipped = Vec::new();
    for (i, step) in scenario.steps.iter().enumerate() {
        match step {
            Step::Nodes(n) => {
                for _ in 0..*n {
                    d.add_node();
                }
                d.mark(format!("nodes {n}"));
            }
            Step::Run(t) => {
                d.run_for(*t);
                d.mark(format!("run {t:?}"));
            }
            Step::ScaleTo { n, waves, over } => {
                let Ok(()) = scale_to(&mut d, *n, *waves, *over);
            }
            Step::Crash(t) => {
                if let Some(s) = d.pick(*t) {
                    d.crash(s);
                    d.mark(format!("crash {}", Driver::name(s)));
                }
            }
            Step::Leave(t) => {
                if let Some(s) = d.pick(*t) {
                    d.leave(s);
                    d.mark(format!("leave {}", Driver::name(s)));
                }
            }
            Step::Restart(t) => {
                if let Some(s) = d.pick(*t) {
                    d.restart(s);
                    d.mark(format!("restart {}", Driver::name(s)));
                }
            }
            Step::Isolate(t) => {
                if let Some(s) = d.pick(*t) {
                    let all = d.world.borrow().slots.len();
                    for o in 0..all {
                        d.hold(s, o);
                    }
                    d.mark(format!("isolate {}", Driver::name(s)));
                }
            }
            Step::Split => {
                let live = d.live();
                let (a, b) = live.split_at(live.len() / 2);
                for x in a {
                    for y in b {
                        d.hold(*x, *y);
                    }
                }
                d.mark("split".into());
            }
            Step::Heal => {
                for (a, b) in std::mem::take(&mut d.held) {
                    d.sim
                        .release(Driver::name(a).as_str(), Driver::name(b).as_str());
                }
                d.mark("heal".into());
            }
            Step::Converge(limit) => {
                let _ = d.run_until_agreed(*limit);
                d.mark(format!("converged #{}", i + 1));
            }
            Step::NetDrop(_) | Step::NetDup(_) | Step::NetLatency(..) => {}
            // No store and no clocks in SWIM: only the time passes and the
            // marks and draws stay aligned with hedgerow's runner.
            Step::StoreDown(t) => {
                skipped.push(format!("{step:?}"));
                d.mark("store down".into());
                d.run_for(*t);
                d.mark("store up".into());
            }
            Step::StoreSpike(extra, t) => {
                skipped.push(format!("{step:?}"));
                d.mark(format!("store spike {extra:?}"));
                d.run_for(*t);
                d.mark("store spike over".into());
            }
            Step::CutStore(t, dur) => {
                skipped.push(format!("{step:?}"));
                if let Some(s) = d.pick(*t) {
                    d.mark(format!("cut-store {}", Driver::name(s)));
                    d.run_for(*dur);
                    d.mark(format!("uncut-store {}", Driver::name(s)));
                }
            }
            Step::Clock(status, t) => {
                skipped.push(format!("{step:?}"));
                if let Some(s) = d.pick(*t) {
                    d.mark(format!(
                        "clock {} {}",
                        hedgerow_sim::scenario::clock_word(*status),
                        Driver::name(s)
                    ));
                }
            }
            Step::Send(k) => {
                skipped.push(format!("{step:?}"));
                for _ in 0..*k {
                    if d.pick(Target::Random).is_some() {
                        let _ = d.rng.next_u64();
                    }
                }
                d.mark(format!("send {k}"));
            }
            // SWIM carries no application streams: skipped, with the same
            // draws as hedgerow's runner so the schedules stay aligned.
            Step::Stream(k, bytes) => {
                skipped.push(format!("{step:?}"));
                for _ in 0..*k {
                    if d.pick(Target::Random).is_some() {
                        let _ = d.rng.next_u64();
                    }
                }
                d.mark(format!("stream {k} {bytes}"));
            }
            // SWIM has no coordination services (and hedgerow's turmoil
            // runner refuses these steps): skipped.
            Step::Put(_) | Step::Acquire(..) | Step::Release(_) => {
                skipped.push(format!("{step:?}"));
            }
        }
    }
    let end = d.now();
    let mut w = d.world.borrow_mut();
    let mut trace = std::mem::take(&mut w.trace);
    trace.duration = end;
    Report {
        trace,
        config,
        skipped,
        stale_incarnation_reports: w.stale_incarnation_reports,
    }
}
