//! The world the checker explores: three real [`Node`]s, the lease row,
//! the coordination tables, the messages in flight, the store operations not answered yet, and the
//! facts the properties need from the past. [`World::after`] is the one
//! transition: it feeds a node exactly as a driver would (the reading the
//! checker chose for it this step, outputs drained after every call) and
//! applies store operations with [`execute_on_row`] and [`execute_coord`],
//! the definitions every real store is held to.

use std::collections::BTreeMap;
use std::fmt;
use std::hash::{Hash, Hasher};

use hedgerow_core::coord::{execute_coord_seeded, CoordAnswer, CoordOp, CoordTables};
use hedgerow_core::wire::{decode_frame, encode_frame, Frame};
use hedgerow_core::{
    execute_on_row, ClockReading, Event, Identity, Input, LeaseOp, LeaseRow, Message, MonoTime,
    Node, NodeId, Now, OpId, Output, RequestId, SeededBug, StoreError, Term,
};

use crate::bounds::{node_config_for, Bounds, Prelude, BOUND_NS, EPOCH_NS, STEP_NS};

/// How many nodes the model runs.
pub const NODES: usize = 3;
const NAMES: [&str; NODES] = ["a", "b", "c"];
const MAX_FRAME: u32 = 1 << 20;

/// One node's place in the cluster: a running process or a crashed one.
#[derive(Clone, Debug)]
pub enum Slot {
    /// A running process.
    Up(Box<Node>),
    /// A crashed process and the incarnation it had.
    Down(u64),
}

/// A message in flight, encoded as the wire would carry it (so the
/// network is a canonical multiset of byte strings).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Envelope {
    /// Sender slot.
    pub from: usize,
    /// Receiver slot.
    pub to: usize,
    /// The receiver's incarnation when it was sent: a restarted process
    /// has new connections and never gets its predecessor's messages.
    pub to_incarnation: u64,
    /// The frame, length prefix included.
    pub frame: Vec<u8>,
    /// The step it was sent in: a message still in flight a step later
    /// was delayed, which the liveness property does not promise to
    /// survive.
    pub sent_at: u64,
}

impl Envelope {
    /// The message inside.
    pub fn message(&self) -> Option<Message> {
        match decode_frame(&self.frame, MAX_FRAME) {
            Ok(Some((Frame::Msg(m), _))) => Some(m),
            _ => None,
        }
    }
}

/// The name of the one semaphore the model's nodes acquire.
pub const PERMIT: &str = "p";
/// Its limit: a lock.
pub const PERMIT_LIMIT: usize = 1;

/// An operation on the store: the lease row or the coordination tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreOp {
    /// On the lease row.
    Lease(LeaseOp),
    /// On the coordination tables, fenced by the lease row.
    Coord(CoordOp),
}

/// A store operation sent and not answered. Its incarnation tells a
/// crashed process's operation (it may still land) from a live one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingOp {
    /// The node that sent it.
    pub slot: usize,
    /// The incarnation that sent it.
    pub incarnation: u64,
    /// The operation.
    pub op: StoreOp,
    /// The step it was sent in.
    pub sent_at: u64,
}

impl PendingOp {
    fn key(&self) -> OpKey {
        let (coord, op) = match &self.op {
            StoreOp::Lease(op) => (false, op.id()),
            StoreOp::Coord(op) => (true, op.id()),
        };
        OpKey {
            slot: self.slot,
            incarnation: self.incarnation,
            coord,
            op,
        }
    }
}

/// Names a pending store operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpKey {
    /// The node that sent it.
    pub slot: usize,
    /// The incarnation that sent it.
    pub incarnation: u64,
    /// Whether it is a coordination operation (its ids are counted apart
    /// from the lease's).
    pub coord: bool,
    /// Its id.
    pub op: OpId,
}

/// What the checker may do next.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Deliver one copy of a message.
    Deliver(Envelope),
    /// Lose one copy (a fault).
    Drop(Envelope),
    /// Add a copy (a fault).
    Duplicate(Envelope),
    /// Apply a store operation and answer it.
    Answer(OpKey),
    /// Apply a store operation and answer "timeout" (a fault).
    AppliedButTimedOut(OpKey),
    /// Answer "timeout" without applying (a fault).
    TimedOut(OpKey),
    /// Apply a crashed process's operation (nobody hears the answer).
    LandOrphan(OpKey),
    /// Forget a crashed process's operation: it never reached the store.
    ForgetOrphan(OpKey),
    /// Kill a process without a goodbye (a fault).
    Crash(usize),
    /// Start a crashed node again with a new incarnation (a fault).
    Restart(usize),
    /// Move a node's readings to a new offset from true time (within the
    /// bound, so not a fault; limited by `Bounds::max_skews`).
    Skew(usize, i64),
    /// A node asks for the permit, waiting in the leader's queue
    /// (limited by `Bounds::max_acquires`).
    Acquire(usize),
    /// Advance true time one step; due timers fire.
    Advance,
}

/// Who led, under which token: the last leadership anyone won.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Leadership {
    /// The node.
    pub slot: usize,
    /// Its incarnation.
    pub incarnation: u64,
    /// The token it won.
    pub term: Term,
}

/// One state of the model.
#[derive(Clone, Debug)]
pub struct World {
    /// True time, in steps.
    pub now: u64,
    /// The step the checker started at: 0, or the end of a prelude.
    pub origin: u64,
    /// Each node's reading offset (ns from true time): every reading is
    /// `[t + o - bound, t + o + bound]`.
    pub offsets: Vec<i64>,
    /// Skews so far.
    pub skews: u8,
    /// The nodes.
    pub slots: Vec<Slot>,
    /// The lease row in the store.
    pub row: Option<LeaseRow>,
    /// The network: each message in flight and how many copies.
    pub net: BTreeMap<Envelope, u8>,
    /// Store operations not answered, ordered by [`OpKey`].
    pub ops: Vec<PendingOp>,
    /// Faults so far.
    pub faults: u8,
    /// Crashes so far.
    pub crashes: u8,
    /// Steps passed calmly, counted up to `Bounds::calm_steps`: no fault
    /// since, and every message and store answer arrived within one step
    /// of being sent. Capped so that calm worlds merge.
    pub calm: u64,
    /// The last leadership won.
    pub last_leadership: Option<Leadership>,
    /// A leadership won with a token not above the previous one's.
    pub token_regressed: Option<String>,
    /// A node whose view moved back.
    pub view_regressed: Option<String>,
    /// The coordination tables in the store.
    pub coord: CoordTables,
    /// Acquires so far.
    pub acquires: u8,
    /// Each node's tickets: the acquires its current process made.
    pub tickets: Vec<Vec<RequestId>>,
    /// The last permit granted: to which process, under which token.
    pub last_permit: Option<(usize, u64, u64)>,
    /// A permit granted with a token not above the previous one's.
    pub permit_regressed: Option<String>,
    /// A permit was granted to a process after another had one.
    pub regranted: bool,
    /// Some node led at some instant since the checker started (for the
    /// failover run: since the crash).
    pub led_since_origin: bool,
}

/// True time at `step`, Unix ns.
pub fn true_ns(step: u64) -> u64 {
    EPOCH_NS + step * STEP_NS
}

fn mono(step: u64) -> MonoTime {
    MonoTime::from_nanos(step * STEP_NS)
}

/// The node id of `slot`.
pub fn node_id(slot: usize) -> NodeId {
    NodeId::new(NAMES[slot]).unwrap_or_else(|e| panic!("model node name: {e}"))
}

/// The name of `slot`.
pub fn name(slot: usize) -> &'static str {
    NAMES[slot]
}

fn slot_of(id: &NodeId) -> usize {
    NAMES
        .iter()
        .position(|n| *n == id.as_str())
        .unwrap_or_else(|| panic!("a node sent to {id}, which the model does not run"))
}

impl World {
    /// Three nodes started at step 0 with readings at `offsets`.
    pub fn initial(offsets: Vec<i64>, bounds: &Bounds) -> World {
        let mut w = World {
            now: 0,
            origin: 0,
            offsets,
            skews: 0,
            slots: (0..NODES).map(|_| Slot::Down(0)).collect(),
            row: None,
            net: BTreeMap::new(),
            ops: Vec::new(),
            faults: 0,
            crashes: 0,
            calm: 0,
            last_leadership: None,
            token_regressed: None,
            view_regressed: None,
            coord: CoordTables::default(),
            acquires: 0,
            tickets: vec![Vec::new(); NODES],
            last_permit: None,
            permit_regressed: None,
            regranted: false,
            led_since_origin: false,
        };
        for slot in 0..NODES {
            w.start(slot, 1, bounds);
        }
        w
    }

    /// The checker's starting state for `offsets` within `bounds`: three
    /// nodes at step 0, then the prelude `bounds` asks for, if any.
    pub fn start_state(offsets: Vec<i64>, bounds: &Bounds) -> World {
        let mut w = World::initial(offsets, bounds);
        if let Some(prelude) = bounds.prelude {
            w.play(prelude, bounds);
        }
        w
    }

    /// Plays `prelude` calmly: every message delivered and every store
    /// operation answered at once, oldest first, time advanced only when
    /// nothing is left to do. Panics if the situation is not reached
    /// within a generous horizon: that is a liveness bug of its own, or a
    /// seeded one that leaves nothing to explore.
    fn play(&mut self, prelude: Prelude, bounds: &Bounds) {
        // Calm means nothing is lost to a full network either.
        let calm = Bounds {
            max_in_flight: usize::MAX,
            ..bounds.clone()
        };
        let mut holder = None;
        for _ in 0..10_000 {
            let leader =
                (0..NODES).find(|&s| self.node(s).is_some_and(|n| n.is_leader(&self.reading(s))));
            let idle = self.net.is_empty() && self.ops.is_empty();
            let action = match (prelude, leader) {
                (Prelude::LeaderCrashed, Some(l)) if idle && self.views_agree() => {
                    self.crash(l, &calm);
                    break;
                }
                (Prelude::PermitHeld, Some(l)) if holder.is_none() => {
                    let member = (l + 1) % NODES;
                    holder = Some(member);
                    Action::Acquire(member)
                }
                (Prelude::PermitHeld, _) if idle && holder.is_some_and(|h| self.holds(h)) => break,
                _ => self.calm_action(),
            };
            if self.now > 30 {
                panic!("the prelude {prelude:?} was not reached in 30 calm steps");
            }
            self.apply(&calm, action);
        }
        self.faults = 0;
        self.crashes = 0;
        self.acquires = 0;
        self.origin = self.now;
        self.led_since_origin = false;
    }

    /// The first of the calm actions: deliver, answer, else advance time.
    fn calm_action(&self) -> Action {
        if let Some(env) = self.net.keys().next() {
            return Action::Deliver(env.clone());
        }
        match self.ops.iter().find(|p| self.is_up(p.slot, p.incarnation)) {
            Some(p) => Action::Answer(p.key()),
            None => Action::Advance,
        }
    }

    fn views_agree(&self) -> bool {
        let stamps: Vec<_> = (0..NODES)
            .filter_map(|s| self.node(s).map(|n| n.view().stamp()))
            .collect();
        stamps.windows(2).all(|p| p[0] == p[1])
    }

    /// Whether `slot` holds a permit by its own reading now.
    fn holds(&self, slot: usize) -> bool {
        let now = self.reading(slot);
        self.node(slot).is_some_and(|n| {
            self.tickets[slot]
                .iter()
                .any(|&ticket| n.permit_valid(&now, ticket))
        })
    }

    /// The reading at `offset` from true time this step.
    pub fn reading_at(&self, offset: i64) -> Now {
        let mid = true_ns(self.now).saturating_add_signed(offset);
        Now {
            mono: mono(self.now),
            clock: ClockReading::synchronized(mid, BOUND_NS),
        }
    }

    /// The reading `slot` gets now.
    pub fn reading(&self, slot: usize) -> Now {
        self.reading_at(self.offsets[slot])
    }

    /// The node in `slot`, if it runs.
    pub fn node(&self, slot: usize) -> Option<&Node> {
        match &self.slots[slot] {
            Slot::Up(n) => Some(n),
            Slot::Down(_) => None,
        }
    }

    fn incarnation(&self, slot: usize) -> u64 {
        match &self.slots[slot] {
            Slot::Up(n) => n.identity().incarnation,
            Slot::Down(i) => *i,
        }
    }

    fn is_up(&self, slot: usize, incarnation: u64) -> bool {
        self.node(slot)
            .is_some_and(|n| n.identity().incarnation == incarnation)
    }

    /// The nodes that may lead at this instant: each asked with the
    /// reading most favourable to "yes" that true time allows, the one
    /// whose `latest` is true time itself. Between two steps nothing
    /// changes and "yes" only turns to "no" as time passes, so asking at
    /// the step covers the whole step.
    pub fn possible_leaders(&self) -> Vec<usize> {
        let best = self.best_reading();
        (0..NODES)
            .filter(|&s| self.node(s).is_some_and(|n| n.is_leader(&best)))
            .collect()
    }

    /// The nodes that may hold the permit at this instant: each asked with
    /// the reading most favourable to "yes", as for [`Self::possible_leaders`].
    pub fn possible_holders(&self) -> Vec<usize> {
        let best = self.best_reading();
        (0..NODES)
            .filter(|&s| {
                self.node(s).is_some_and(|n| {
                    self.tickets[s]
                        .iter()
                        .any(|&ticket| n.permit_valid(&best, ticket))
                })
            })
            .collect()
    }

    fn best_reading(&self) -> Now {
        Now {
            mono: mono(self.now),
            clock: ClockReading::synchronized(true_ns(self.now) - BOUND_NS, BOUND_NS),
        }
    }

    /// Whether some node leads whatever its reading at this instant: asked
    /// with the reading least favourable to "yes", `earliest` at true time.
    pub fn has_leader(&self) -> bool {
        let worst = self.reading_at(BOUND_NS as i64);
        (0..NODES).any(|s| self.node(s).is_some_and(|n| n.is_leader(&worst)))
    }

    fn due(&self, slot: usize) -> bool {
        self.node(slot)
            .and_then(|n| n.poll_timeout())
            .is_some_and(|at| at <= mono(self.now))
    }

    fn in_flight(&self) -> usize {
        self.net.values().map(|c| usize::from(*c)).sum()
    }

    /// Every action the checker may take from here within `bounds`.
    pub fn actions(&self, bounds: &Bounds, out: &mut Vec<Action>) {
        let may_fault = self.faults < bounds.max_faults;
        for env in self.net.keys() {
            out.push(Action::Deliver(env.clone()));
            if may_fault {
                out.push(Action::Drop(env.clone()));
                if self.in_flight() < bounds.max_in_flight {
                    out.push(Action::Duplicate(env.clone()));
                }
            }
        }
        for p in &self.ops {
            let key = p.key();
            if self.is_up(p.slot, p.incarnation) {
                out.push(Action::Answer(key));
                if may_fault {
                    out.push(Action::AppliedButTimedOut(key));
                    out.push(Action::TimedOut(key));
                }
            } else {
                out.push(Action::LandOrphan(key));
                out.push(Action::ForgetOrphan(key));
            }
        }
        for slot in 0..NODES {
            match self.slots[slot] {
                Slot::Up(_) => {
                    if may_fault && self.crashes < bounds.max_crashes {
                        out.push(Action::Crash(slot));
                    }
                }
                Slot::Down(_) if may_fault => out.push(Action::Restart(slot)),
                Slot::Down(_) => {}
            }
        }
        if self.acquires < bounds.max_acquires {
            for slot in (0..NODES).filter(|&s| self.node(s).is_some() && self.tickets[s].is_empty())
            {
                out.push(Action::Acquire(slot));
            }
        }
        if self.skews < bounds.max_skews {
            for slot in 0..NODES {
                for &o in bounds.offsets.iter().filter(|&&o| o != self.offsets[slot]) {
                    out.push(Action::Skew(slot, o));
                }
            }
        }
        if self.now < self.origin + bounds.max_time {
            out.push(Action::Advance);
        }
    }

    /// The world after `action`.
    pub fn after(&self, bounds: &Bounds, action: Action) -> World {
        let mut w = self.clone();
        w.apply(bounds, action);
        w.led_since_origin |= w.has_leader();
        w
    }

    fn apply(&mut self, bounds: &Bounds, action: Action) {
        match action {
            Action::Deliver(env) => {
                self.take(&env);
                self.deliver(env, bounds);
            }
            Action::Drop(env) => {
                self.take(&env);
                self.fault();
            }
            Action::Duplicate(env) => {
                *self.net.entry(env).or_default() += 1;
                self.fault();
            }
            Action::Answer(key) => {
                let op = self.take_op(key);
                let answer = self.execute(&op, bounds.bug);
                self.feed(key.slot, answer, bounds);
            }
            Action::AppliedButTimedOut(key) => {
                let op = self.take_op(key);
                self.execute(&op, bounds.bug);
                self.fault();
                self.feed(key.slot, store_timeout(key), bounds);
            }
            Action::TimedOut(key) => {
                self.take_op(key);
                self.fault();
                self.feed(key.slot, store_timeout(key), bounds);
            }
            Action::LandOrphan(key) => {
                let op = self.take_op(key);
                self.execute(&op, bounds.bug);
                self.disturb();
            }
            Action::ForgetOrphan(key) => {
                self.take_op(key);
            }
            Action::Crash(slot) => self.crash(slot, bounds),
            Action::Restart(slot) => {
                let incarnation = self.incarnation(slot) + 1;
                self.fault();
                self.start(slot, incarnation, bounds);
            }
            Action::Acquire(slot) => {
                self.acquires += 1;
                let now = self.reading(slot);
                let timeout = node_config_for(bounds).request_timeout;
                let Slot::Up(node) = &mut self.slots[slot] else {
                    return;
                };
                let ticket = node
                    .acquire(now, PERMIT, PERMIT_LIMIT as u32, true, timeout)
                    .unwrap_or_else(|e| panic!("the model's acquire was refused: {e}"));
                self.tickets[slot].push(ticket);
                self.drain(slot, bounds);
            }
            Action::Skew(slot, o) => {
                self.offsets[slot] = o;
                self.skews += 1;
            }
            Action::Advance => {
                // Anything still undone a whole step after it was sent is a
                // delay the liveness property does not promise to survive.
                let late = self.now;
                let busy = self.net.keys().any(|e| e.sent_at < late)
                    || self
                        .ops
                        .iter()
                        .any(|p| p.sent_at < late && self.is_up(p.slot, p.incarnation));
                self.now += 1;
                self.calm = if busy {
                    0
                } else {
                    (self.calm + 1).min(bounds.calm_steps)
                };
                for slot in 0..NODES {
                    self.wake(slot, bounds);
                }
            }
        }
    }

    fn fault(&mut self) {
        self.faults += 1;
        self.disturb();
    }

    fn disturb(&mut self) {
        self.calm = 0;
    }

    fn take(&mut self, env: &Envelope) {
        if let Some(c) = self.net.get_mut(env) {
            *c -= 1;
            if *c == 0 {
                self.net.remove(env);
            }
        }
    }

    /// Applies `op` as every store must, and the input that answers it.
    fn execute(&mut self, op: &StoreOp, bug: Option<SeededBug>) -> Input {
        match op {
            StoreOp::Lease(op) => Input::Lease {
                op: op.id(),
                result: Ok(execute_on_row(&mut self.row, op)),
            },
            StoreOp::Coord(op) => Input::Coord {
                op: op.id(),
                result: Ok(execute_coord_seeded(
                    &mut self.coord,
                    self.row.as_ref(),
                    op,
                    bug,
                )),
            },
        }
    }

    fn take_op(&mut self, key: OpKey) -> StoreOp {
        let i = self
            .ops
            .iter()
            .position(|p| p.key() == key)
            .unwrap_or_else(|| panic!("no pending store operation {key:?}"));
        self.ops.remove(i).op
    }

    fn deliver(&mut self, env: Envelope, bounds: &Bounds) {
        if !self.is_up(env.to, env.to_incarnation) {
            return;
        }
        let msg = env
            .message()
            .unwrap_or_else(|| panic!("a node sent a frame that does not decode: {env:?}"));
        let from = node_id(env.from);
        self.feed(env.to, Input::Message { from, msg }, bounds);
    }

    fn start(&mut self, slot: usize, incarnation: u64, bounds: &Bounds) {
        let identity = Identity {
            id: node_id(slot),
            addr: format!("{}:7946", name(slot)),
            incarnation,
        };
        let seed = slot as u64 * 1_000 + incarnation;
        self.tickets[slot].clear();
        let mut node = Node::new(node_config_for(bounds), identity, seed)
            .unwrap_or_else(|e| panic!("model node config: {e}"));
        node.seed_bug(bounds.bug);
        self.slots[slot] = Slot::Up(Box::new(node));
        self.feed(slot, Input::Tick, bounds);
    }

    fn crash(&mut self, slot: usize, bounds: &Bounds) {
        let incarnation = self.incarnation(slot);
        self.slots[slot] = Slot::Down(incarnation);
        self.crashes += 1;
        self.fault();
        self.net.retain(|e, _| e.to != slot);
        for other in (0..NODES).filter(|&o| o != slot) {
            if self.node(other).is_some() {
                let peer = node_id(slot);
                self.feed(other, Input::PeerLost { peer }, bounds);
            }
        }
    }

    /// Hands `input` to `slot` at its reading and carries out what it
    /// asks for, as a driver does.
    fn feed(&mut self, slot: usize, input: Input, bounds: &Bounds) {
        self.feed_once(slot, input, bounds);
        self.wake(slot, bounds);
    }

    /// Ticks `slot` while a timer of it is due: a driver wakes a node at
    /// its deadline, and timers that fire at one instant on different
    /// nodes commute (each only adds to the network and the pending
    /// operations), so they need no interleaving of their own.
    fn wake(&mut self, slot: usize, bounds: &Bounds) {
        // Bounded: a timer that stays due after a tick would be a core
        // bug, and the model must not spin on it.
        for _ in 0..8 {
            if !self.due(slot) {
                return;
            }
            self.feed_once(slot, Input::Tick, bounds);
        }
    }

    fn feed_once(&mut self, slot: usize, input: Input, bounds: &Bounds) {
        let now = self.reading(slot);
        let Slot::Up(node) = &mut self.slots[slot] else {
            return;
        };
        let before = node.view().stamp();
        node.handle(now, input);
        let after = node.view().stamp();
        let incarnation = node.identity().incarnation;
        if after < before {
            self.view_regressed.get_or_insert_with(|| {
                format!(
                    "{}#{incarnation} went from view {before:?} to {after:?}",
                    name(slot)
                )
            });
        }
        self.drain(slot, bounds);
    }

    /// Carries out everything `slot` asked for, as a driver does after
    /// every call.
    fn drain(&mut self, slot: usize, bounds: &Bounds) {
        let Slot::Up(node) = &mut self.slots[slot] else {
            return;
        };
        let incarnation = node.identity().incarnation;
        let mut outputs = Vec::new();
        while let Some(out) = node.poll() {
            outputs.push(out);
        }
        for out in outputs {
            self.carry(slot, incarnation, out, bounds.max_in_flight);
        }
    }

    fn carry(&mut self, slot: usize, incarnation: u64, out: Output, max_in_flight: usize) {
        match out {
            Output::Transmit { to, msg, .. } => self.send(slot, &to, msg, max_in_flight),
            Output::Lease(op) => self.pend(slot, incarnation, StoreOp::Lease(op)),
            Output::Coord(op) => self.pend(slot, incarnation, StoreOp::Coord(op)),
            Output::Event(Event::Elected { term }) => self.elected(slot, incarnation, term),
            Output::Event(Event::Coord {
                result: Ok(CoordAnswer::Granted { token, .. }),
                ..
            }) => self.granted(slot, incarnation, token),
            _ => {}
        }
    }

    fn pend(&mut self, slot: usize, incarnation: u64, op: StoreOp) {
        self.ops.push(PendingOp {
            slot,
            incarnation,
            op,
            sent_at: self.now,
        });
        self.ops.sort_by_key(PendingOp::key);
    }

    fn granted(&mut self, slot: usize, incarnation: u64, token: u64) {
        if let Some((s, i, last)) = self.last_permit {
            // A grant retried for the same process answers its token again.
            let again = s == slot && i == incarnation && token == last;
            self.regranted |= (s, i) != (slot, incarnation);
            if token <= last && !again {
                self.permit_regressed.get_or_insert_with(|| {
                    format!(
                        "{}#{incarnation} was granted permit token {token} after {}#{i} had token {last}",
                        name(slot),
                        name(s)
                    )
                });
            }
        }
        self.last_permit = Some((slot, incarnation, token));
    }

    fn send(&mut self, from: usize, to: &NodeId, msg: Message, max_in_flight: usize) {
        let to = slot_of(to);
        let Slot::Up(target) = &self.slots[to] else {
            // Nobody listens at a crashed node's address.
            return;
        };
        if self.in_flight() >= max_in_flight {
            self.disturb();
            return;
        }
        let mut frame = Vec::new();
        encode_frame(&Frame::Msg(msg), MAX_FRAME, &mut frame)
            .unwrap_or_else(|e| panic!("a node's message does not encode: {e:?}"));
        let env = Envelope {
            from,
            to,
            to_incarnation: target.identity().incarnation,
            frame,
            sent_at: self.now,
        };
        *self.net.entry(env).or_default() += 1;
    }

    fn elected(&mut self, slot: usize, incarnation: u64, term: Term) {
        let won = Leadership {
            slot,
            incarnation,
            term,
        };
        if let Some(prev) = self.last_leadership {
            let same = prev.slot == slot && prev.incarnation == incarnation;
            // The same process may win its own term back (its write landed
            // after it stopped counting on it); anyone else must go higher.
            let regressed = if same {
                term < prev.term
            } else {
                term <= prev.term
            };
            if regressed {
                self.token_regressed.get_or_insert_with(|| {
                    format!(
                        "{}#{incarnation} won token {} after {}#{} had won token {}",
                        name(slot),
                        term.0,
                        name(prev.slot),
                        prev.incarnation,
                        prev.term.0
                    )
                });
            }
        }
        self.last_leadership = Some(won);
    }
}

fn store_timeout(key: OpKey) -> Input {
    let op = key.op;
    if key.coord {
        Input::Coord {
            op,
            result: Err(StoreError::Timeout),
        }
    } else {
        Input::Lease {
            op,
            result: Err(StoreError::Timeout),
        }
    }
}

/// Every vector of one offset per node.
pub fn offset_vectors(choices: &[i64]) -> Vec<Vec<i64>> {
    let mut all = vec![Vec::new()];
    for _ in 0..NODES {
        all = all
            .into_iter()
            .flat_map(|v| {
                choices.iter().map(move |o| {
                    let mut v = v.clone();
                    v.push(*o);
                    v
                })
            })
            .collect();
    }
    all
}

/// Feeds `Debug`/`fingerprint` text straight into a hasher, without
/// building the string.
struct HashWriter<'a, H: Hasher>(&'a mut H);

impl<H: Hasher> fmt::Write for HashWriter<'_, H> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.write(s.as_bytes());
        Ok(())
    }
}

impl World {
    /// The canonical encoding of this state: every node's
    /// [`Node::fingerprint`] and the rest in `Debug` form, all of it
    /// ordered (the network and the pending operations are sorted).
    /// States with one encoding behave alike, so the checker merges them.
    pub fn canonical(&self, w: &mut dyn fmt::Write) -> fmt::Result {
        write!(
            w,
            "{} {} {:?} {}",
            self.now, self.origin, self.offsets, self.skews
        )?;
        for slot in &self.slots {
            match slot {
                Slot::Up(node) => {
                    w.write_str("|up ")?;
                    node.fingerprint(w)?;
                }
                Slot::Down(incarnation) => write!(w, "|down {incarnation}")?,
            }
        }
        write!(w, "|{:?}|{:?}|{:?}", self.row, self.net, self.ops)?;
        write!(
            w,
            "|{} {} {}|{:?}|{:?}|{:?}",
            self.faults,
            self.crashes,
            self.calm,
            self.last_leadership,
            self.token_regressed,
            self.view_regressed
        )?;
        write!(
            w,
            "|{:?}|{} {:?}|{:?} {:?} {} {}",
            self.coord,
            self.acquires,
            self.tickets,
            self.last_permit,
            self.permit_regressed,
            self.regranted,
            self.led_since_origin
        )
    }

    fn canonical_string(&self) -> String {
        let mut s = String::new();
        self.canonical(&mut s)
            .unwrap_or_else(|e| panic!("canonical encoding: {e}"));
        s
    }
}

impl Hash for World {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.canonical(&mut HashWriter(state))
            .unwrap_or_else(|e| panic!("canonical encoding: {e}"));
    }
}

impl PartialEq for World {
    fn eq(&self, other: &World) -> bool {
        self.canonical_string() == other.canonical_string()
    }
}

impl Eq for World {}
