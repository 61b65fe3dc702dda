//! The log every host and the runner write to, and the channel the runner
//! commands hosts through. Hosts only record what they see; the checkers
//! judge the log once the run is over (see `finish`). The order of
//! [`What`]'s variants is part of the trace hash: add new ones last.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};

use futures::channel::mpsc;
use hedgerow::Hedgerow;
use hedgerow_core::{NodeId, Rng, Term};

use crate::check::permits::Held;
use crate::check::streams::Seen;

/// What a host recorded, at true time `t`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) enum What {
    Booted,
    Elected(Term),
    SteppedDown(Term),
    View((Term, u64), BTreeSet<String>),
    Failed(String),
    Handled {
        term: Term,
        key: (NodeId, u64, u64),
    },
    SendOk {
        leader: NodeId,
        term: Term,
        key: (NodeId, u64, u64),
    },
    SendFailed(String),
    Left(bool),
    /// `is_leader()` said yes, holding this term.
    Leads(Term),
    // Recorded by the runner.
    Crashed,
    Restarted,
    ClockUntrusted,
    Mark(String),
    /// A checked stream, as its sender or a receiver saw it. Last, so
    /// that adding it left the trace hashes of runs without streams as
    /// they were.
    Stream(Seen),
    // The coordination services, after streams for the same reason.
    /// Asked for a permit of a semaphore with this limit.
    Asked(String, u32),
    /// Every permit the process holds now, as the permit checker takes
    /// them: (this process's number for the acquire, name, token, the true
    /// instant its belief ends by its clock). Recorded when it changes.
    Permits(Vec<Held>),
    /// An acquire that ended without a permit.
    AcquireFailed(String),
    /// A put acknowledged at a revision.
    PutOk {
        key: String,
        value: Vec<u8>,
        revision: u64,
    },
    /// A put that failed (whether it was applied is unknown).
    PutFailed(String),
    /// What a KV read of every revision started at this true time
    /// returned: (revision, key, value).
    KvSeen(u64, Vec<(u64, String, Vec<u8>)>),
}

/// One log entry: what process `slot` (incarnation `inc`) saw at true
/// time `t`; `seq` orders the entries of one instant as they were made.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct Rec {
    pub(super) t: u64,
    pub(super) seq: u64,
    pub(super) slot: usize,
    pub(super) inc: u64,
    pub(super) what: What,
}

/// What the runner tells a host's software to do.
pub(super) enum Cmd {
    Leave,
    Send(u64),
    /// Open a stream to the leader: its key and body length.
    Stream(u64, u64),
    /// Put this number (as the value, under key `k/<n mod 16>`).
    Put(u64),
    /// Wait for a permit: name, limit, how long.
    Acquire(String, u32, std::time::Duration),
    /// Give back the permit of this acquire number.
    Release(u64),
    /// Read every KV revision and record what came back.
    ReadKv,
    Stopped,
}

/// What the runner and every host share: the log, and the live
/// processes' handles and command channels.
#[derive(Default)]
pub(super) struct Shared {
    pub(super) log: Vec<Rec>,
    seq: u64,
    pub(super) handles: BTreeMap<usize, Hedgerow>,
    pub(super) cmds: BTreeMap<usize, mpsc::UnboundedSender<Cmd>>,
    /// Commands for a process that has not booted yet (just started or
    /// restarted): handed to it when it registers.
    pub(super) pending: BTreeMap<usize, Vec<Cmd>>,
    /// The acquire numbers of the permits each live process holds.
    pub(super) permits: BTreeMap<usize, Vec<u64>>,
}

impl Shared {
    /// Hands `cmd` to the process in `slot`, or keeps it until it boots.
    pub(super) fn command(&mut self, slot: usize, cmd: Cmd) {
        match self.cmds.get(&slot) {
            Some(tx) => {
                let _ = tx.unbounded_send(cmd);
            }
            None => self.pending.entry(slot).or_default().push(cmd),
        }
    }

    /// Appends one record, numbered in the order it was made.
    pub(super) fn rec(&mut self, t: u64, slot: usize, inc: u64, what: What) {
        self.seq += 1;
        let seq = self.seq;
        self.log.push(Rec {
            t,
            seq,
            slot,
            inc,
            what,
        });
    }
}

/// The lock, also after a panicking holder: the log is append-only, so
/// what it holds stays valid.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A seed derived from two numbers.
pub(super) fn mix(a: u64, b: u64) -> u64 {
    let mut r = Rng::new(a ^ b.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    r.next_u64()
}

/// The host name of `slot`.
pub(super) fn name(slot: usize) -> String {
    format!("n{slot}")
}

/// The slot of a host name (`n3` → 3).
pub(super) fn slot_of(id: &str) -> Option<usize> {
    id.strip_prefix('n')?.parse().ok()
}
