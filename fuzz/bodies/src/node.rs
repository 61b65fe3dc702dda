//! Target 3: one [`Node`] fed an arbitrary sequence of inputs and checked
//! after every one of them.
//!
//! The harness plays the driver: it keeps a simulated lease store, a true
//! clock and the node's clock reading, and chooses from the fuzzer's bytes
//! what happens next: time passes (or the driver's mono time goes back), the
//! clock turns Unknown/Disrupted/assumed/malformed or drifts outside its
//! bound, a store operation is executed and answered, answered late,
//! answered with an error after it applied (a write that lands later), or
//! refused; another node writes the row; a peer sends any message with any
//! term; the application sends, broadcasts, streams, resigns, leaves or sets
//! metadata.
//!
//! In *honest* runs the store is a real compare-and-set row and every peer's
//! lease claims match a row that existed; there the node's leadership is
//! checked against the store and against true time. In *adversarial* runs
//! the store answers anything (results for unknown ops, contradicting CAS
//! outcomes, rows from nowhere) and only the invariants the core must keep
//! whatever it is told are checked.
//!
//! Checked after every input (panics with the step's description if not):
//!
//! * `is_leader(now)` ⇒ a claim exists, `now.latest < expires`, the reading
//!   is well-formed and its status and source may lead, the events said
//!   `Elected` for that term and no `SteppedDown` since, `leader()` is this
//!   node, and the view is authored under that term;
//! * `Elected`/`SteppedDown` alternate and name the same term;
//! * the view stamp `(term, version)` never decreases (honest runs: a store
//!   whose tokens go back can drag it back, see `check_state`);
//! * outputs per input are bounded (by the view size, not by history);
//! * no `Transmit` to the node itself; every transmitted message encodes
//!   within `max_frame_len` and decodes to itself (a peer accepts it);
//! * a `LeaseOp` is emitted only when none is outstanding;
//! * inbound stream data arrives in order without gaps; each send and each
//!   broadcast finishes at most once, each member answers a broadcast once;
//! * memory stays within configuration: dedupe entries, outstanding
//!   requests, open streams;
//! * honest runs: while leading on a truthful reading, the store row names
//!   this node under the claimed term; a takeover issued on a truthful
//!   reading lands only after the previous lease expired in true time; a
//!   new holder always writes a higher token.

use std::collections::{BTreeMap, BTreeSet};

use hedgerow_core::wire::{decode_body, encode_frame, Frame};
use hedgerow_core::{
    BroadcastHandle, BroadcastId, CasOutcome, ClockReading, ClockSource, ClockStatus, Config,
    Event, Holder, Identity, Input, LeaseOp, LeaseReply, LeaseRow, MonoTime, Node, NodeId, Now,
    OpId, Output, Payload, RequestHandle, RequestId, StoreError, StreamId, StreamTarget, Term,
    TimeInterval,
};

use crate::gen::{self, Pools};
use crate::input::Unstructured;

/// Unix time at the start of a run.
const EPOCH_NS: u64 = 1_767_225_600_000_000_000;
const MS: u64 = 1_000_000;
/// Inputs per run at most, so one input cannot run for minutes.
const MAX_STEPS: usize = 4096;

/// Runs the node target on `data`; panics when an invariant breaks.
pub fn node(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Some(mut h) = Harness::new(&mut u) else {
        return;
    };
    let mut steps = 0;
    while !u.is_empty() && steps < MAX_STEPS {
        h.step(&mut u);
        steps += 1;
    }
    h.finish();
}

#[derive(Debug)]
struct Pending {
    op: LeaseOp,
    /// Whether the reading was truthful when the op was issued.
    truthful_at_issue: bool,
    /// The store already executed it; the answer is held back.
    answer: Option<Result<LeaseReply, StoreError>>,
}

#[derive(Debug)]
struct Harness {
    node: Node,
    cfg: Config,
    me: Identity,
    honest: bool,
    /// True time, ns since the run's start.
    t: u64,
    /// The driver's monotonic clock.
    mono: u64,
    /// How far back the driver's mono time goes on this input (a broken
    /// driver); the node must clamp it.
    mono_back: u64,
    offset: i64,
    bound_lo: u64,
    bound_hi: u64,
    status: ClockStatus,
    source: ClockSource,
    malformed: bool,
    /// The lease store's row (honest runs).
    row: Option<LeaseRow>,
    /// Every row the store ever held, for peers' acks.
    history: Vec<LeaseRow>,
    foreign: Holder,
    pending: Option<Pending>,
    /// Writes the node was told failed that may still land.
    zombies: Vec<(LeaseOp, bool)>,
    answered: Vec<OpId>,
    issued: BTreeSet<OpId>,
    // What the events said.
    leading: Option<Term>,
    stamp: (Term, u64),
    requests: Vec<RequestHandle>,
    broadcasts_in: Vec<BroadcastHandle>,
    sends_done: BTreeSet<RequestId>,
    broadcasts_done: BTreeSet<BroadcastId>,
    broadcast_replies: BTreeSet<(BroadcastId, NodeId)>,
    my_streams: Vec<StreamId>,
    inbound: BTreeMap<(NodeId, u64), u64>,
    sent_requests: BTreeSet<u64>,
    peers: Vec<NodeId>,
    step_no: usize,
    what: String,
    /// Print every step (`HEDGEROW_FUZZ_TRACE=1`), to read a failing input.
    trace: bool,
}

fn id(s: &str) -> NodeId {
    NodeId::new(s).expect("harness id")
}

impl Harness {
    fn new(u: &mut Unstructured) -> Option<Harness> {
        let flags = u.u8();
        let mut cfg = match flags % 3 {
            0 => Config::local("fz"),
            1 => Config::lan("fz"),
            _ => Config::wan("fz"),
        };
        cfg.candidate = flags & 0x04 == 0;
        cfg.lead_on_assumed_clock = flags & 0x08 != 0;
        let honest = flags & 0x10 == 0;
        if flags & 0x20 != 0 {
            cfg.max_frame_len = [1024, 4096, 64 * 1024][u.index(3)];
            cfg.stream_chunk = (cfg.max_frame_len as usize / 2).min(cfg.stream_chunk);
            cfg.max_meta_len = [0, 16, 300, 512][u.index(4)];
        }
        if flags & 0x40 != 0 {
            cfg.max_dedupe_entries = 1 + u.index(8);
            cfg.max_outstanding = 1 + u.index(8);
            cfg.max_streams = 1 + u.index(8);
        }
        let me = Identity {
            id: id("n0"),
            addr: "n0:7000".into(),
            incarnation: 1 + u.below(3),
        };
        let node = Node::new(cfg.clone(), me.clone(), u.u64()).ok()?;
        let peers = vec![id("n0"), id("n1"), id("n2"), id("n3")];
        Some(Harness {
            node,
            cfg,
            me,
            honest,
            t: 0,
            mono: 1_000 * MS,
            mono_back: 0,
            offset: 0,
            bound_lo: 5 * MS,
            bound_hi: 5 * MS,
            status: ClockStatus::Synchronized,
            source: ClockSource::ClockBound,
            malformed: false,
            row: None,
            history: Vec::new(),
            foreign: Holder {
                id: id("n1"),
                nonce: 77,
                addr: "n1:7000".into(),
            },
            pending: None,
            zombies: Vec::new(),
            answered: Vec::new(),
            issued: BTreeSet::new(),
            leading: None,
            stamp: (Term(0), 0),
            requests: Vec::new(),
            broadcasts_in: Vec::new(),
            sends_done: BTreeSet::new(),
            broadcasts_done: BTreeSet::new(),
            broadcast_replies: BTreeSet::new(),
            my_streams: Vec::new(),
            inbound: BTreeMap::new(),
            sent_requests: BTreeSet::new(),
            peers,
            step_no: 0,
            what: String::new(),
            trace: std::env::var_os("HEDGEROW_FUZZ_TRACE").is_some(),
        })
    }

    fn true_unix(&self) -> u64 {
        EPOCH_NS + self.t
    }

    fn now(&self) -> Now {
        let centre = self.true_unix().saturating_add_signed(self.offset);
        let (mut earliest, mut latest) = (
            centre.saturating_sub(self.bound_lo),
            centre.saturating_add(self.bound_hi),
        );
        if self.malformed {
            core::mem::swap(&mut earliest, &mut latest);
            latest = latest.min(earliest.saturating_sub(1));
        }
        Now {
            mono: MonoTime::from_nanos(self.mono.saturating_sub(self.mono_back)),
            clock: ClockReading {
                interval: TimeInterval { earliest, latest },
                status: self.status,
                source: self.source,
            },
        }
    }

    /// Whether the reading contains true time.
    fn truthful(&self, now: &Now) -> bool {
        let t = self.true_unix();
        now.clock.interval.earliest <= t && t <= now.clock.interval.latest
    }

    fn pools(&self) -> Pools {
        let mut terms = vec![self.node.term(), self.node.view().term()];
        if let Some(l) = self.node.leader() {
            terms.push(l.term);
        }
        if let Some(r) = &self.row {
            terms.push(r.token);
        }
        let mut nums = vec![
            self.node.view().version(),
            self.node.view().digest(),
            self.now().clock.interval.latest,
        ];
        nums.extend(self.sent_requests.iter().rev().take(2));
        nums.extend(self.my_streams.iter().rev().take(2).map(|s| s.0));
        nums.extend(
            self.inbound
                .iter()
                .take(2)
                .flat_map(|((_, sid), off)| [*sid, *off]),
        );
        nums.extend(self.broadcasts_done.iter().rev().take(1).map(|b| b.0));
        if let Some(r) = &self.row {
            nums.extend([r.version, r.expires_ns]);
        }
        let mut ids = self.peers.clone();
        if let Some(l) = self.node.leader() {
            ids.push(l.id.clone());
            ids.push(l.id.clone());
        }
        Pools { ids, terms, nums }
    }

    /// A peer id to send from: mostly another node, the leader often, the
    /// node itself rarely (a driver must not, but the core must survive).
    fn sender(&self, u: &mut Unstructured) -> NodeId {
        match u.below(16) {
            0 => self.me.id.clone(),
            1..=6 => self
                .node
                .leader()
                .map(|l| l.id.clone())
                .unwrap_or_else(|| id("n1")),
            7..=12 => self.peers[1 + u.index(self.peers.len() - 1)].clone(),
            _ => gen::fresh_id(u.below(64)),
        }
    }

    fn step(&mut self, u: &mut Unstructured) {
        self.step_no += 1;
        self.mono_back = 0;
        match u.below(32) {
            0..=7 => {
                self.advance(u);
                self.what = format!("tick at t={}ms", self.t / MS);
                self.handle(Input::Tick);
            }
            8..=13 => self.store_action(u),
            14..=22 => {
                let from = self.sender(u);
                let pools = self.pools();
                let mut msg = gen::message(u, &pools);
                if self.honest {
                    self.make_ack_truthful(u, &from, &mut msg);
                }
                // A driver only delivers what its decoder accepts.
                let mut buf = Vec::new();
                let frame = Frame::Msg(msg);
                if encode_frame(&frame, self.cfg.max_frame_len, &mut buf).is_err() {
                    return;
                }
                let Ok(Frame::Msg(msg)) = decode_body(&buf[4..]) else {
                    return;
                };
                self.what = format!("message {} from {from}: {msg:?}", msg.kind());
                self.handle(Input::Message { from, msg });
            }
            23..=27 => self.command(u),
            28 => {
                self.change_clock(u);
                self.what = format!(
                    "clock now {:?} {:?} off {} bounds {}/{} malformed {}",
                    self.status,
                    self.source,
                    self.offset,
                    self.bound_lo,
                    self.bound_hi,
                    self.malformed
                );
                self.handle(Input::Tick);
            }
            29 => {
                let peer = self.sender(u);
                self.what = format!("peer {peer} lost");
                self.handle(Input::PeerLost { peer });
            }
            30 => {
                self.mono_back = u.below(10_000) * MS;
                self.what = format!("tick with mono {}ms back", self.mono_back / MS);
                self.handle(Input::Tick);
            }
            _ => {
                // Jump to the node's own deadline, as a driver would.
                if let Some(at) = self.node.poll_timeout() {
                    let at = at.as_nanos();
                    if at > self.mono && at - self.mono < 120_000 * MS {
                        let dt = at - self.mono;
                        self.mono += dt;
                        self.t += dt;
                    }
                }
                self.what = format!("timer at t={}ms", self.t / MS);
                self.handle(Input::Tick);
            }
        }
    }

    fn advance(&mut self, u: &mut Unstructured) {
        let dt = match u.below(8) {
            0 => 0,
            1 => u.below(1_000) * 1_000,
            2 | 3 => u.below(100) * MS,
            4 | 5 => u.below(2_000) * MS,
            6 => u.below(20_000) * MS,
            _ => u.below(120_000) * MS,
        };
        self.mono += dt;
        self.t += dt;
    }

    fn change_clock(&mut self, u: &mut Unstructured) {
        self.malformed = false;
        match u.below(10) {
            0 => self.status = ClockStatus::Unknown,
            1 => self.status = ClockStatus::Disrupted,
            2 => self.status = ClockStatus::FreeRunning,
            3 => self.status = ClockStatus::Synchronized,
            4 => {
                self.source = if u.chance(128) {
                    ClockSource::ClockBound
                } else {
                    ClockSource::Assumed {
                        bound_ns: self.bound_hi,
                    }
                }
            }
            5 => self.malformed = true,
            6 => {
                let b = [0, MS, 50 * MS, 500 * MS, u.below(5_000) * MS][u.index(5)];
                self.bound_lo = b;
                self.bound_hi = b;
                self.offset = self.offset.clamp(-(b as i64), b as i64);
            }
            7 => {
                // Anywhere inside the bound: readings jump back and forth.
                let b = self.bound_lo.min(self.bound_hi) as i64;
                self.offset = if b == 0 {
                    0
                } else {
                    (u.u64() % (2 * b as u64 + 1)) as i64 - b
                };
            }
            8 => {
                // A clock that lies: outside its bound (the node cannot
                // know; honest checks skip untruthful readings).
                self.offset = (u.below(20_000) as i64 - 10_000) * MS as i64;
            }
            _ => {
                self.bound_lo = u.below(1_000) * MS;
                self.bound_hi = u.below(1_000) * MS;
            }
        }
    }

    /// In honest runs a peer's ack carries the lease numbers of a row it
    /// really held (a stale one at worst), as a real leader's ack does: term,
    /// version and expiry from one row.
    fn make_ack_truthful(
        &self,
        u: &mut Unstructured,
        from: &NodeId,
        msg: &mut hedgerow_core::Message,
    ) {
        if let hedgerow_core::Message::HeartbeatAck(ack) = msg {
            let held: Vec<&LeaseRow> = self
                .history
                .iter()
                .filter(|r| r.holder.as_ref().is_some_and(|h| &h.id == from))
                .collect();
            if held.is_empty() {
                ack.lease_version = 0;
                ack.lease_expires_ns = 0;
            } else {
                let r = held[u.index(held.len())];
                ack.term = r.token;
                ack.lease_version = r.version;
                ack.lease_expires_ns = r.expires_ns;
                if let Some(h) = &r.holder {
                    ack.leader_incarnation = h.nonce;
                }
            }
        }
    }

    // ---- the store -------------------------------------------------------

    fn store_action(&mut self, u: &mut Unstructured) {
        match u.below(12) {
            0..=3 => {
                // Execute and answer at once.
                if let Some(p) = self.pending.take() {
                    let result = match p.answer {
                        Some(a) => a,
                        None => self.execute(u, &p.op, p.truthful_at_issue),
                    };
                    self.answer(p.op.id(), result, "store answers");
                }
            }
            4 => {
                // Execute now, answer later.
                if let Some(p) = &self.pending {
                    if p.answer.is_none() {
                        let (op, truthful) = (p.op.clone(), p.truthful_at_issue);
                        let r = self.execute(u, &op, truthful);
                        if let Some(p) = &mut self.pending {
                            p.answer = Some(r);
                        }
                    }
                }
            }
            5 => {
                // The driver gives up: an error, and the write may land later.
                if let Some(p) = self.pending.take() {
                    let err = match u.below(3) {
                        0 => StoreError::Timeout,
                        1 => StoreError::Unavailable("down".into()),
                        _ => StoreError::Corrupt("bad row".into()),
                    };
                    if p.answer.is_none() && u.chance(128) {
                        self.zombies.push((p.op.clone(), p.truthful_at_issue));
                    }
                    self.answer(p.op.id(), Err(err), "store error");
                }
            }
            6 => {
                // A write the node gave up on lands now.
                if !self.zombies.is_empty() {
                    let (op, truthful) = self.zombies.remove(u.index(self.zombies.len()));
                    let _ = self.execute(u, &op, truthful);
                    self.what = format!("late write lands: {op:?}");
                    self.handle(Input::Tick);
                }
            }
            7 | 8 => self.foreign_write(u),
            _ => self.bogus_answer(u),
        }
    }

    fn answer(&mut self, op: OpId, result: Result<LeaseReply, StoreError>, why: &str) {
        self.answered.push(op);
        self.what = format!("{why}: {op:?} -> {result:?}");
        self.handle(Input::Lease { op, result });
    }

    fn set_row(&mut self, row: LeaseRow) {
        self.history.push(row.clone());
        if self.history.len() > 64 {
            self.history.remove(0);
        }
        self.row = Some(row);
    }

    fn is_me(&self, h: &Option<Holder>) -> bool {
        h.as_ref()
            .is_some_and(|h| h.id == self.me.id && h.nonce == self.me.incarnation)
    }

    /// Executes an op against the store: honestly, or in adversarial runs
    /// with an answer made up from the bytes.
    fn execute(
        &mut self,
        u: &mut Unstructured,
        op: &LeaseOp,
        truthful_at_issue: bool,
    ) -> Result<LeaseReply, StoreError> {
        if !self.honest && u.chance(96) {
            return Ok(self.made_up_reply(u));
        }
        Ok(match op {
            LeaseOp::Read { .. } => LeaseReply::Read(self.row.clone()),
            LeaseOp::CompareAndSet {
                expected_version,
                write,
                ..
            } => {
                let current = self.row.as_ref().map(|r| r.version);
                if current != *expected_version {
                    return Ok(LeaseReply::Cas(CasOutcome::Conflict(self.row.clone())));
                }
                let new = write
                    .clone()
                    .into_row(current.unwrap_or(0).saturating_add(1));
                if self.honest {
                    self.check_write(self.row.clone(), &new, truthful_at_issue);
                }
                self.set_row(new.clone());
                LeaseReply::Cas(CasOutcome::Applied(new))
            }
        })
    }

    /// A write by this node as it lands in the store.
    fn check_write(&self, old: Option<LeaseRow>, new: &LeaseRow, truthful: bool) {
        let Some(old) = old else {
            assert_eq!(new.token, Term(1), "the first row carries token 1");
            return;
        };
        let same_holder = old.holder == new.holder;
        if new.holder.is_some() && !same_holder {
            assert!(
                new.token > old.token,
                "a new holder must write a higher token: {old:?} -> {new:?} ({})",
                self.what
            );
            if truthful {
                assert!(
                    self.true_unix() > old.expires_ns,
                    "takeover landed before the previous lease expired in true time: \
                     {old:?} -> {new:?} at {} ({})",
                    self.true_unix(),
                    self.what
                );
            }
        } else {
            assert!(
                new.token >= old.token,
                "token went back: {old:?} -> {new:?}"
            );
        }
    }

    fn made_up_row(&self, u: &mut Unstructured) -> LeaseRow {
        let now = self.now();
        let holder = match u.below(4) {
            0 => None,
            1 => Some(Holder {
                id: self.me.id.clone(),
                nonce: self.me.incarnation,
                addr: self.me.addr.clone(),
            }),
            2 => Some(Holder {
                id: self.me.id.clone(),
                nonce: u.below(4),
                addr: self.me.addr.clone(),
            }),
            _ => Some(self.foreign.clone()),
        };
        let pools = self.pools();
        let expires_ns = match u.below(4) {
            0 => now
                .clock
                .interval
                .latest
                .saturating_add(u.below(20_000) * MS),
            1 => now
                .clock
                .interval
                .earliest
                .saturating_sub(u.below(20_000) * MS),
            2 => gen::num(u, &pools),
            _ => now.clock.interval.latest,
        };
        LeaseRow {
            holder,
            token: gen::term(u, &pools),
            expires_ns,
            version: gen::num(u, &pools),
        }
    }

    fn made_up_reply(&self, u: &mut Unstructured) -> LeaseReply {
        match u.below(3) {
            0 => LeaseReply::Read(u.chance(200).then(|| self.made_up_row(u))),
            1 => LeaseReply::Cas(CasOutcome::Applied(self.made_up_row(u))),
            _ => LeaseReply::Cas(CasOutcome::Conflict(
                u.chance(200).then(|| self.made_up_row(u)),
            )),
        }
    }

    /// Another node writes the row, as an honest node could at this true
    /// time (or anything, in adversarial runs).
    fn foreign_write(&mut self, u: &mut Unstructured) {
        let t = self.true_unix();
        let lease = hedgerow_core::duration_nanos(self.cfg.lease_duration);
        let version = self.row.as_ref().map_or(1, |r| r.version.saturating_add(1));
        let new = match self.row.clone() {
            _ if !self.honest && u.chance(64) => {
                let mut r = self.made_up_row(u);
                r.version = version;
                r
            }
            None => LeaseRow {
                holder: Some(self.foreign.clone()),
                token: Term(1),
                expires_ns: t + lease,
                version,
            },
            Some(r) if r.holder.as_ref() == Some(&self.foreign) && t < r.expires_ns => {
                if u.chance(64) {
                    // Release.
                    LeaseRow {
                        holder: None,
                        expires_ns: t + u.below(50) * MS,
                        version,
                        ..r
                    }
                } else {
                    LeaseRow {
                        expires_ns: t + lease,
                        version,
                        ..r
                    }
                }
            }
            Some(r) if t > r.expires_ns => LeaseRow {
                holder: Some(self.foreign.clone()),
                token: Term(r.token.0.saturating_add(1)),
                expires_ns: t + lease,
                version,
            },
            Some(_) => return,
        };
        self.set_row(new.clone());
        self.what = format!("another node writes {new:?}");
        self.handle(Input::Tick);
    }

    fn bogus_answer(&mut self, u: &mut Unstructured) {
        let outstanding = self.pending.as_ref().map(|p| p.op.id());
        let op = match u.below(4) {
            0 if !self.answered.is_empty() => self.answered[u.index(self.answered.len())],
            1 => OpId(0),
            2 => OpId(u.u64()),
            _ => OpId(outstanding.map_or(1, |o| o.0.wrapping_add(1 + u.below(3)))),
        };
        if !self.honest && u.chance(128) {
            // Adversarial: anything, for the op in flight too.
            let op = outstanding.unwrap_or(op);
            let result = if u.chance(200) {
                Ok(self.made_up_reply(u))
            } else {
                Err(StoreError::Timeout)
            };
            if Some(op) == outstanding {
                self.pending = None;
            }
            self.answer(op, result, "made-up answer");
            return;
        }
        if Some(op) == outstanding {
            return;
        }
        let result = if u.chance(200) {
            Ok(self.made_up_reply(u))
        } else {
            Err(StoreError::Unavailable("stale".into()))
        };
        self.answer(op, result, "answer for an op not in flight");
    }

    // ---- commands ----------------------------------------------------------

    fn app_payload(&self, u: &mut Unstructured) -> Payload {
        // Application payloads stay well inside a frame: how the driver
        // treats an oversize application message is its business, the
        // core's own messages are what the frame check is about.
        gen::payload(u, (self.cfg.max_frame_len as usize / 4).min(4096))
    }

    fn command(&mut self, u: &mut Unstructured) {
        let now = self.now();
        match u.below(14) {
            0 | 1 => {
                let p = self.app_payload(u);
                self.what = "send".into();
                let id = self.node.send(now, p);
                self.sent_requests.insert(id.0);
            }
            2 => {
                let p = self.app_payload(u);
                self.what = "broadcast".into();
                self.node.broadcast(now, p);
            }
            3 => {
                let handle = if !self.requests.is_empty() && u.chance(220) {
                    self.requests.remove(u.index(self.requests.len()))
                } else {
                    RequestHandle {
                        from: self.sender(u),
                        incarnation: u.below(4),
                        id: u.below(8),
                        term: self.node.term(),
                    }
                };
                let result = if u.chance(200) {
                    Ok(self.app_payload(u))
                } else {
                    Err("handler failed".into())
                };
                self.what = format!("reply to {handle:?}");
                self.node.reply(now, handle, result);
            }
            4 => {
                let handle = if !self.broadcasts_in.is_empty() && u.chance(220) {
                    self.broadcasts_in.remove(u.index(self.broadcasts_in.len()))
                } else {
                    BroadcastHandle {
                        from: self.sender(u),
                        incarnation: u.below(4),
                        id: u.below(8),
                    }
                };
                let p = self.app_payload(u);
                self.what = format!("reply to broadcast {handle:?}");
                self.node.reply_broadcast(now, handle, Ok(p));
            }
            5 => {
                let target = if u.chance(128) {
                    StreamTarget::Leader
                } else {
                    StreamTarget::Member(self.sender(u))
                };
                self.what = format!("open stream to {target:?}");
                if let Ok(sid) = self.node.open_stream(now, target) {
                    self.my_streams.push(sid);
                }
            }
            6 | 7 => {
                let sid = self.stream_id(u);
                let len = match u.below(4) {
                    0 => u.index(300 * 1024),
                    _ => u.index(2048),
                };
                self.what = format!("write {len} bytes to {sid:?}");
                let _ = self.node.stream_write(now, sid, vec![7u8; len]);
            }
            8 => {
                let sid = self.stream_id(u);
                self.what = format!("finish {sid:?}");
                let _ = self.node.stream_finish(now, sid);
            }
            9 => {
                let sid = self.stream_id(u);
                self.what = format!("reset {sid:?}");
                self.node.stream_reset(now, sid, "app reset");
            }
            10 => {
                let (from, sid) = match self.inbound.keys().nth(u.index(self.inbound.len().max(1)))
                {
                    Some(k) if u.chance(220) => k.clone(),
                    _ => (self.sender(u), u.below(4)),
                };
                let n = match u.below(3) {
                    0 => usize::MAX,
                    _ => u.index(512 * 1024),
                };
                self.what = format!("consume {n} of {from}/{sid}");
                self.node.stream_consumed(now, &from, sid, n);
            }
            11 => {
                let max = self.cfg.max_meta_len;
                let len = match u.below(4) {
                    0 => max + 1 + u.index(100),
                    1 => max,
                    _ => u.index(max + 1),
                };
                self.what = format!("set_meta {len} bytes");
                let r = self.node.set_meta(now, vec![1u8; len]);
                assert_eq!(r.is_ok(), len <= max, "set_meta limit");
            }
            12 => {
                self.what = "resign".into();
                self.node.resign(now);
                assert!(
                    !self.node.is_leader(&now) || self.leading.is_some(),
                    "resign"
                );
            }
            _ => match u.below(4) {
                0 => {
                    self.what = "leave".into();
                    self.node.leave(now);
                }
                1 => {
                    self.what = "set_candidate(true)".into();
                    self.node.set_candidate(true);
                    self.node.handle(now, Input::Tick);
                }
                _ => {
                    self.what = "set_candidate(false)".into();
                    self.node.set_candidate(false);
                    self.node.handle(now, Input::Tick);
                }
            },
        }
        self.drain(now);
    }

    fn stream_id(&self, u: &mut Unstructured) -> StreamId {
        if !self.my_streams.is_empty() && u.chance(230) {
            self.my_streams[u.index(self.my_streams.len())]
        } else {
            StreamId(u.below(4))
        }
    }

    // ---- driving and checking -----------------------------------------------

    fn handle(&mut self, input: Input) {
        let now = self.now();
        self.node.handle(now, input);
        self.drain(now);
    }

    fn output_bound(&self) -> usize {
        let n = self.node.view().len() + 2;
        let per_member = 128 + 256 + self.cfg.max_meta_len + 48;
        let per_chunk = ((self.cfg.max_frame_len as usize / 2) / per_member).max(1);
        let chunks = n.div_ceil(per_chunk);
        let stream_frames = self.cfg.stream_send_buffer / self.cfg.stream_chunk + 4;
        256 + 4 * n * chunks + 4 * stream_frames
    }

    fn drain(&mut self, now: Now) {
        let ctx = format!("step {} ({})", self.step_no, self.what);
        if self.trace {
            eprintln!(
                "{ctx} honest={} leads={} claim={:?} leader={:?} view={:?} row={:?}",
                self.honest,
                self.node.is_leader(&now),
                self.node.lease_claim(),
                self.node.leader().map(|l| (l.id.as_str(), l.term)),
                self.node.view().stamp(),
                self.row
            );
        }
        let bound = self.output_bound();
        let mut count = 0;
        let mut elected_now = None;
        while let Some(out) = self.node.poll() {
            count += 1;
            assert!(
                count <= bound,
                "more than {bound} outputs for one input: {ctx}"
            );
            match out {
                Output::Transmit { to, msg, .. } => {
                    assert_ne!(to, self.me.id, "Transmit to itself: {msg:?} at {ctx}");
                    let mut buf = Vec::new();
                    let frame = Frame::Msg(msg);
                    if let Err(e) = encode_frame(&frame, self.cfg.max_frame_len, &mut buf) {
                        panic!(
                            "the node emitted a frame it cannot send ({e}): {} at {ctx}",
                            kind(&frame)
                        );
                    }
                    match decode_body(&buf[4..]) {
                        Ok(back) => assert_eq!(back, frame, "emitted frame changes in transit"),
                        Err(e) => {
                            panic!("a peer refuses the node's frame ({e}): {frame:?} at {ctx}")
                        }
                    }
                }
                Output::Lease(op) => {
                    assert!(
                        self.pending.is_none(),
                        "a second lease op {op:?} while {:?} is outstanding: {ctx}",
                        self.pending.as_ref().map(|p| p.op.id())
                    );
                    assert!(
                        self.issued.insert(op.id()),
                        "op id {:?} reused: {ctx}",
                        op.id()
                    );
                    self.pending = Some(Pending {
                        op,
                        truthful_at_issue: self.truthful(&now),
                        answer: None,
                    });
                }
                Output::Event(e) => self.on_event(e, &mut elected_now, &ctx),
                _ => {}
            }
        }
        self.check_state(&now, &ctx);
    }

    fn on_event(&mut self, e: Event, elected_now: &mut Option<Term>, ctx: &str) {
        match e {
            Event::Elected { term } => {
                assert!(
                    self.leading.is_none(),
                    "Elected({term}) while leading {:?}: {ctx}",
                    self.leading
                );
                self.leading = Some(term);
                *elected_now = Some(term);
            }
            Event::SteppedDown { term, .. } => {
                assert_eq!(
                    self.leading,
                    Some(term),
                    "SteppedDown({term}) without matching Elected: {ctx}"
                );
                self.leading = None;
            }
            Event::Request { handle, .. } => {
                assert!(
                    self.leading.is_some(),
                    "a request delivered to a non-leader: {ctx}"
                );
                self.requests.push(handle);
                if self.requests.len() > 64 {
                    self.requests.remove(0);
                }
            }
            Event::Broadcast { handle, .. } => {
                self.broadcasts_in.push(handle);
                if self.broadcasts_in.len() > 64 {
                    self.broadcasts_in.remove(0);
                }
            }
            Event::SendDone { id, .. } => {
                assert!(
                    self.sends_done.insert(id),
                    "send {id:?} finished twice: {ctx}"
                );
            }
            Event::BroadcastReply { id, from, .. } => {
                assert!(
                    !self.broadcasts_done.contains(&id),
                    "a reply for finished broadcast {id:?}: {ctx}"
                );
                assert!(
                    self.broadcast_replies.insert((id, from.clone())),
                    "{from} answered broadcast {id:?} twice: {ctx}"
                );
            }
            Event::BroadcastDone { id } => {
                assert!(
                    self.broadcasts_done.insert(id),
                    "broadcast {id:?} done twice: {ctx}"
                );
            }
            Event::StreamOpened { from, sid, .. } => {
                self.inbound.insert((from, sid), 0);
            }
            Event::StreamData {
                from,
                sid,
                offset,
                data,
            } => {
                let next = self.inbound.get_mut(&(from.clone(), sid));
                let Some(next) = next else {
                    panic!("data on stream {from}/{sid} that is not open: {ctx}");
                };
                assert_eq!(*next, offset, "stream {from}/{sid} out of order: {ctx}");
                *next = next.saturating_add(data.len() as u64);
            }
            Event::StreamFinished { from, sid } | Event::StreamReset { from, sid, .. } => {
                self.inbound.remove(&(from, sid));
            }
            Event::StreamSent { id } | Event::StreamFailed { id, .. } => {
                self.my_streams.retain(|s| *s != id);
            }
            _ => {}
        }
    }

    fn check_state(&mut self, now: &Now, ctx: &str) {
        let n = &self.node;
        let leads = n.is_leader(now);
        if leads {
            let Some((term, expires)) = n.lease_claim() else {
                panic!("is_leader without a claim: {ctx}");
            };
            let c = &now.clock;
            assert!(c.interval.is_valid(), "leads on a malformed reading: {ctx}");
            assert!(
                c.status.may_lead(),
                "leads on a {:?} clock: {ctx}",
                c.status
            );
            assert!(
                matches!(c.source, ClockSource::ClockBound) || self.cfg.lead_on_assumed_clock,
                "leads on an assumed clock without permission: {ctx}"
            );
            assert!(c.interval.latest < expires, "leads past its expiry: {ctx}");
            assert_eq!(
                self.leading,
                Some(term),
                "is_leader but the events say {:?}: {ctx}",
                self.leading
            );
            assert!(
                n.leader()
                    .is_some_and(|l| l.id == self.me.id && l.term == term),
                "leads but leader() is {:?}: {ctx}",
                n.leader()
            );
            assert_eq!(n.view().term(), term, "leads a view of another term: {ctx}");
            assert!(n.not_leading_reason(now).is_none());
            if self.honest && self.truthful(now) {
                let row = self.row.as_ref();
                assert!(
                    row.is_some_and(|r| self.is_me(&r.holder) && r.token == term),
                    "leads under {term} on a truthful reading but the store holds {row:?}: {ctx}"
                );
            }
        } else {
            assert!(
                n.not_leading_reason(now).is_some(),
                "no reason given: {ctx}"
            );
        }
        let stamp = n.view().stamp();
        // A store that hands out a lower token than one it confirmed before
        // (adversarial runs; a recreated table in real life, an operator
        // error the docs name) makes the node author a lower view; with an
        // honest store the view never goes back.
        assert!(
            stamp >= self.stamp || !self.honest,
            "view went back from {:?} to {stamp:?}: {ctx}",
            self.stamp
        );
        self.stamp = stamp;
        if let Some(t) = n.poll_timeout() {
            assert!(
                t.as_nanos() >= now.mono.as_nanos().min(self.mono),
                "deadline in the past: {t:?} now {:?} harness mono {} ctx {ctx}",
                now.mono,
                self.mono
            );
        }
        let stats = n.stats();
        assert!(
            stats.dedupe_entries <= self.cfg.max_dedupe_entries,
            "dedupe grew past its cap"
        );
        assert!(
            n.requests_outstanding() <= self.cfg.max_outstanding,
            "outstanding requests grew past the cap: {ctx}"
        );
    }

    fn finish(&mut self) {
        // A long quiet period: the node must settle, not spin.
        for _ in 0..8 {
            let Some(at) = self.node.poll_timeout() else {
                break;
            };
            let at = at.as_nanos().max(self.mono);
            let dt = (at - self.mono).min(60_000 * MS);
            self.mono += dt;
            self.t += dt;
            self.what = "final timers".into();
            self.handle(Input::Tick);
        }
    }
}

fn kind(f: &Frame) -> &'static str {
    match f {
        Frame::Msg(m) => m.kind(),
        Frame::Hello(_) => "hello",
        Frame::Refuse(_) => "refuse",
    }
}
