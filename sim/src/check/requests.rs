//! Invariant 6: every send that returned Ok was handled by a node that was
//! leader when it handled it, under the term the reply names, and no
//! leader process handles the same request twice.

use std::collections::{HashMap, HashSet};

use super::Violation;
use hedgerow_core::{NodeId, Term};

/// A request's identity: sender id, sender incarnation, request id.
pub type RequestKey = (NodeId, u64, u64);

/// One handling by a leader process.
#[derive(Clone, Debug)]
pub struct Handling {
    /// Slot of the handling node.
    pub slot: usize,
    /// Its incarnation.
    pub incarnation: u64,
    /// Its id.
    pub id: NodeId,
    /// The term it handled under.
    pub term: Term,
    /// Whether the leadership checker had it leading at that instant.
    pub leading: bool,
}

/// Records handlings and checks Ok replies against them.
#[derive(Debug, Default)]
pub struct Requests {
    handled: HashMap<(usize, u64), HashSet<RequestKey>>,
    by_leader_term: HashSet<(NodeId, Term, RequestKey)>,
    /// Number of handlings recorded.
    pub handlings: u64,
}

impl Requests {
    /// A leader process handled a request; `leading` is whether the
    /// leadership checker had it leading at that instant.
    pub fn handled(&mut self, h: Handling, key: RequestKey, t: u64) -> Option<Violation> {
        let Handling {
            slot,
            incarnation,
            id,
            term,
            leading,
        } = h;
        self.handlings += 1;
        if !leading {
            return Some(Violation {
                invariant: "6 (requests handled only by a leader)",
                at_ns: t,
                what: format!("node {slot} handled {key:?} under term {term} while not leader"),
                trace: Vec::new(),
            });
        }
        if !self
            .handled
            .entry((slot, incarnation))
            .or_default()
            .insert(key.clone())
        {
            return Some(Violation {
                invariant: "6 (no leader handles a request twice)",
                at_ns: t,
                what: format!("node {slot} handled {key:?} twice"),
                trace: Vec::new(),
            });
        }
        self.by_leader_term.insert((id, term, key));
        None
    }

    /// A sender got Ok from `leader` under `term`.
    pub fn replied_ok(
        &self,
        leader: &NodeId,
        term: Term,
        key: &RequestKey,
        t: u64,
    ) -> Option<Violation> {
        if self
            .by_leader_term
            .contains(&(leader.clone(), term, key.clone()))
        {
            return None;
        }
        Some(Violation {
            invariant: "6 (an Ok send was handled by the leader it names)",
            at_ns: t,
            what: format!("{key:?} got Ok from {leader} term {term}, which never handled it"),
            trace: Vec::new(),
        })
    }
}
