//! How a view change reaches every member once the leader has authored
//! it: who a node passes a relayed delta on to, and the log of recent
//! deltas a node answers "what did I miss" from. This room decides
//! nothing about membership and never sends (the node does); it only
//! splits ranges and keeps the log.

use alloc::collections::VecDeque;
use alloc::sync::Arc;
use alloc::vec::Vec;

use crate::id::{NodeId, Term};
use crate::time::MonoTime;
use crate::view::{Member, View};
use crate::wire::ViewDelta;

/// Deltas a node keeps to answer a [`crate::Message::DeltaRequest`].
const LOG_DELTAS: usize = 128;
/// Changes across the kept deltas, so a log of large deltas stays small.
const LOG_CHANGES: usize = 8192;

/// The most parts a relay splits its range into, whatever a message asks.
pub(crate) const MAX_FANOUT: u16 = 256;

/// One message a node sends to pass a delta on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Leg<'a> {
    /// The member gets the delta and passes it on within `[from, until)`.
    Relay {
        to: &'a Member,
        from: Option<NodeId>,
        until: Option<NodeId>,
    },
    /// The member only gets the delta.
    Plain(&'a Member),
}

/// Where a node holding `view` passes on a delta it was given for the id
/// range `[from, until)`: every member of the view in that range except
/// itself and `leader` (which authored it). Up to `fanout` of them get it
/// plainly; more, and the range is cut into `fanout` runs of neighbouring
/// ids, one member of each (a different one for each `version`, so a dead
/// member is the relay of one delta, not of every delta until it is
/// dropped) relaying to the rest of its run: the first from there on that
/// is `fit` (the leader knows which members hold its view; a member that
/// does not cannot pass a delta on), else that one.
///
/// The runs' ranges tile the range on either side of this node's own id,
/// never across it: a relay's range holds no relay above it, so nobody is
/// sent a delta twice, and members this node does not know yet still lie
/// in some relay's range (except any between this node and the next
/// member it knows above it, which heartbeats mend).
pub(crate) fn legs<'a>(
    view: &'a View,
    me: &NodeId,
    leader: &NodeId,
    (from, until): (Option<&NodeId>, Option<&NodeId>),
    fanout: u16,
    version: u64,
    fit: &dyn Fn(&Member) -> bool,
) -> Vec<Leg<'a>> {
    let targets: Vec<&Member> = view
        .range(from, until)
        .filter(|m| &m.id != me && &m.id != leader)
        .collect();
    let fanout = usize::from(fanout.clamp(2, MAX_FANOUT));
    if targets.len() <= fanout {
        return targets.into_iter().map(Leg::Plain).collect();
    }
    let split = targets.partition_point(|m| &m.id < me);
    let (below, above) = targets.split_at(split);
    // Runs in proportion to each side, at least one for a side with
    // members.
    let share = match (below.is_empty(), above.is_empty()) {
        (true, _) => 0,
        (_, true) => fanout,
        _ => (fanout * below.len() / targets.len()).clamp(1, fanout - 1),
    };
    let mut out = Vec::with_capacity(fanout);
    let mut side =
        |members: &[&'a Member], parts: usize, lo: Option<&NodeId>, hi: Option<&NodeId>| {
            if members.is_empty() {
                return;
            }
            let runs: Vec<&[&'a Member]> = members.chunks(members.len().div_ceil(parts)).collect();
            let last = runs.len() - 1;
            for (i, run) in runs.iter().enumerate() {
                let start = (version as usize).wrapping_add(i) % run.len();
                let pick = (0..run.len())
                    .map(|k| (start + k) % run.len())
                    .find(|&k| fit(run[k]))
                    .unwrap_or(start);
                out.push(Leg::Relay {
                    to: run[pick],
                    from: if i == 0 {
                        lo.cloned()
                    } else {
                        Some(run[0].id.clone())
                    },
                    until: if i == last {
                        hi.cloned()
                    } else {
                        Some(runs[i + 1][0].id.clone())
                    },
                });
            }
        };
    side(below, share, from, Some(me));
    let above_from = above.first().map(|m| &m.id);
    side(above, fanout - share, above_from, until);
    out
}

/// At most so many of something each interval (snapshots a node sends
/// on request).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Budget {
    since: MonoTime,
    used: u32,
}

impl Budget {
    /// Takes one if fewer than `limit` were taken in the `every` since the
    /// interval began.
    pub(crate) fn take(&mut self, now: MonoTime, every: core::time::Duration, limit: u32) -> bool {
        if now.saturating_since(self.since) >= every {
            *self = Budget {
                since: now,
                used: 0,
            };
        }
        let ok = self.used < limit;
        self.used += u32::from(ok);
        ok
    }
}

/// The last deltas this node applied, in order, all of one term and each
/// following the one before.
#[derive(Clone, Debug, Default)]
pub(crate) struct DeltaLog {
    /// Each delta with when this node applied (a leader: authored) it.
    deltas: VecDeque<(Arc<ViewDelta>, MonoTime)>,
    changes: usize,
}

impl DeltaLog {
    /// Records a delta just applied. One that does not follow the last
    /// (another term, a gap) starts the log afresh.
    pub(crate) fn applied(&mut self, d: Arc<ViewDelta>, at: MonoTime) {
        let follows = self
            .deltas
            .back()
            .is_some_and(|(b, _)| b.term == d.term && b.version == d.base_version);
        if !follows {
            self.clear();
        }
        self.changes += d.changes.len();
        self.deltas.push_back((d, at));
        while self.deltas.len() > LOG_DELTAS
            || (self.changes > LOG_CHANGES && self.deltas.len() > 1)
        {
            if let Some((old, _)) = self.deltas.pop_front() {
                self.changes -= old.changes.len();
            }
        }
    }

    /// When the delta of `term` that follows version `after` was applied
    /// here, if the log holds it.
    pub(crate) fn applied_at(&self, term: Term, after: u64) -> Option<MonoTime> {
        self.deltas
            .iter()
            .find(|(d, _)| d.term == term && d.base_version == after)
            .map(|(_, at)| *at)
    }

    /// The view was replaced whole (a snapshot, a new term).
    pub(crate) fn clear(&mut self) {
        self.deltas.clear();
        self.changes = 0;
    }

    /// Every kept delta of `term` after version `after`, if the log holds
    /// the one that starts there; `None` if it does not (too old, another
    /// term) or there is nothing after it.
    pub(crate) fn after(&self, term: Term, after: u64) -> Option<Vec<Arc<ViewDelta>>> {
        let start = self
            .deltas
            .iter()
            .position(|(d, _)| d.term == term && d.base_version == after)?;
        Some(
            self.deltas
                .iter()
                .skip(start)
                .map(|(d, _)| d.clone())
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::Payload;
    use crate::view::Change;

    fn id(s: &str) -> NodeId {
        NodeId::new(s).unwrap_or_else(|_| unreachable!())
    }

    fn view(n: usize) -> View {
        let mut v = View::new();
        for i in 0..n {
            v.apply(Change::Upsert(Arc::new(Member {
                id: id(&alloc::format!("n{i:05}")),
                incarnation: 1,
                addr: alloc::format!("a{i}"),
                meta_version: 0,
                meta: Payload::default(),
            })));
        }
        v
    }

    /// Walks a delta down from the leader as every node would, each
    /// with `views(id)` as its view; returns how often each member got it.
    fn deliver(
        leader_view: &View,
        views: &dyn Fn(&NodeId) -> View,
        fanout: u16,
        version: u64,
    ) -> alloc::collections::BTreeMap<NodeId, usize> {
        let leader = id("n00000");
        let mut got = alloc::collections::BTreeMap::new();
        // The leader starts as a relay of the whole range that is not
        // counted as getting it.
        let mut queue: Vec<(NodeId, Option<NodeId>, Option<NodeId>)> =
            alloc::vec![(leader.clone(), None, None)];
        while let Some((me, from, until)) = queue.pop() {
            let v = if me == leader {
                leader_view.clone()
            } else {
                *got.entry(me.clone()).or_insert(0) += 1;
                views(&me)
            };
            let range = (from.as_ref(), until.as_ref());
            for leg in legs(&v, &me, &leader, range, fanout, version, &|_| true) {
                match leg {
                    Leg::Plain(m) => *got.entry(m.id.clone()).or_insert(0) += 1,
                    Leg::Relay { to, from, until } => queue.push((to.id.clone(), from, until)),
                }
            }
        }
        got
    }

    #[test]
    fn a_relayed_delta_reaches_every_member_once_whatever_the_size() {
        for (n, fanout) in [(1, 4), (5, 4), (17, 4), (100, 4), (1000, 32), (10_001, 32)] {
            for version in [1, 2, 77] {
                let v = view(n);
                let got = deliver(&v, &|_| v.clone(), fanout, version);
                assert_eq!(got.len(), n - 1, "{n} members, fanout {fanout}");
                let twice: Vec<_> = got.iter().filter(|(_, &c)| c != 1).collect();
                assert!(twice.is_empty(), "{n}: someone got it twice: {twice:?}");
                assert!(
                    !got.contains_key(&id("n00000")),
                    "the leader is not sent its own"
                );
            }
        }
    }

    #[test]
    fn the_leader_and_every_relay_send_at_most_fanout_messages() {
        let v = view(10_000);
        let me = id("n00000");
        let top = legs(&v, &me, &me, (None, None), 32, 5, &|_| true);
        assert_eq!(top.len(), 32);
        for leg in top {
            let Leg::Relay { to, from, until } = leg else {
                unreachable!("10 000 members are relayed")
            };
            let below = legs(
                &v,
                &to.id,
                &me,
                (from.as_ref(), until.as_ref()),
                32,
                5,
                &|_| true,
            );
            assert!(below.len() <= 32);
        }
    }

    #[test]
    fn a_relay_that_does_not_know_a_new_member_still_covers_its_range() {
        // Relays know 999 members; the leader knows one more, which a
        // stale relay cannot send to but whose range still has an owner
        // that knows it (here: every node but the leader is stale, so it
        // is missed, and only that one).
        let full = view(1000);
        let mut stale = full.clone();
        stale.apply(Change::Remove {
            id: id("n00500"),
            incarnation: 1,
            reason: crate::view::LeaveReason::Failed,
        });
        let got = deliver(&full, &|_| stale.clone(), 8, 3);
        assert!(got.values().all(|&c| c == 1));
        assert!(
            got.len() >= 998,
            "only the unknown member may miss it: {}",
            got.len()
        );
    }

    #[test]
    fn a_dead_relay_is_another_member_for_the_next_delta() {
        let v = view(1000);
        let me = id("n00000");
        let relays = |version| -> Vec<NodeId> {
            legs(&v, &me, &me, (None, None), 8, version, &|_| true)
                .into_iter()
                .filter_map(|l| match l {
                    Leg::Relay { to, .. } => Some(to.id.clone()),
                    Leg::Plain(_) => None,
                })
                .collect()
        };
        let a = relays(1);
        let b = relays(2);
        assert!(a.iter().all(|x| !b.contains(x)), "{a:?} vs {b:?}");
    }

    #[test]
    fn relays_are_picked_among_the_fit_where_a_run_has_any() {
        let v = view(1000);
        let me = id("n00000");
        let even = |m: &Member| m.id.as_str().ends_with(['0', '2', '4', '6', '8']);
        for version in 0..5 {
            for leg in legs(&v, &me, &me, (None, None), 8, version, &even) {
                let Leg::Relay { to, .. } = leg else {
                    unreachable!("1000 members are relayed")
                };
                assert!(even(to), "{:?} is not fit", to.id);
            }
        }
        // None fit: the rotation's pick all the same.
        let none = legs(&v, &me, &me, (None, None), 8, 3, &|_| false);
        assert_eq!(none, legs(&v, &me, &me, (None, None), 8, 3, &|_| true));
    }

    #[test]
    fn a_garbled_range_sends_nothing() {
        let v = view(100);
        let me = id("n00001");
        let (hi, lo) = (id("n00090"), id("n00010"));
        assert!(legs(&v, &me, &me, (Some(&hi), Some(&lo)), 4, 1, &|_| true).is_empty());
    }

    fn delta(term: u64, base: u64, changes: usize) -> Arc<ViewDelta> {
        Arc::new(ViewDelta {
            term: Term(term),
            base_version: base,
            version: base + 1,
            digest: 0,
            changes: (0..changes)
                .map(|i| Change::Remove {
                    id: id(&alloc::format!("x{i}")),
                    incarnation: 1,
                    reason: crate::view::LeaveReason::Failed,
                })
                .collect(),
        })
    }

    #[test]
    fn the_log_answers_from_a_version_it_holds_and_only_then() {
        let mut log = DeltaLog::default();
        for base in 0..10 {
            log.applied(delta(3, base, 1), MonoTime::ZERO);
        }
        let got = log.after(Term(3), 4).unwrap_or_default();
        assert_eq!(
            got.iter().map(|d| d.version).collect::<Vec<_>>(),
            [5, 6, 7, 8, 9, 10]
        );
        assert!(log.after(Term(3), 10).is_none(), "nothing after the newest");
        assert!(log.after(Term(2), 4).is_none(), "another term");
        // A gap starts afresh: the old run can no longer be chained.
        log.applied(delta(3, 20, 1), MonoTime::ZERO);
        assert!(log.after(Term(3), 4).is_none());
        assert_eq!(log.after(Term(3), 20).map(|v| v.len()), Some(1));
    }

    #[test]
    fn the_log_stays_bounded_in_deltas_and_in_changes() {
        let mut log = DeltaLog::default();
        for base in 0..1000 {
            log.applied(delta(1, base, 1), MonoTime::ZERO);
        }
        assert_eq!(log.deltas.len(), LOG_DELTAS);
        let mut log = DeltaLog::default();
        for base in 0..20 {
            log.applied(delta(1, base, 1000), MonoTime::ZERO);
        }
        assert!(log.changes <= LOG_CHANGES);
        assert!(
            log.after(Term(1), 19).is_some(),
            "the newest is always kept"
        );
    }
}
