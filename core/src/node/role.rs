//! Which part the node plays, with the state only that part has: a
//! leader's roster exists only while it holds the lease, a member's
//! heartbeat and ack clocks only while it does not. Transitions are here;
//! what each role does with its state is in `leader` and `member`. This
//! room must never emit anything: it only holds and hands over state.

use core::time::Duration;

use crate::coord::leader::Services;
use crate::id::{NodeId, Term};
use crate::membership::{Assembly, Roster};
use crate::spread::Budget;
use crate::time::MonoTime;

/// The node's role, and the state that exists only in it.
#[derive(Clone, Debug)]
pub(super) enum Role {
    /// Following a leader, or looking for one.
    Member(MemberState),
    /// Holding the lease, from the lease room's election note to its
    /// step-down note. Whether it is still valid at a reading is the
    /// lease's to say; check it before acting.
    Leader(LeaderState),
    /// Left the group for good: it no longer heartbeats, reads the store
    /// or competes, but still takes the views a leader sends it.
    Left(MemberState),
}

/// What only a leader has.
#[derive(Clone, Debug)]
pub(super) struct LeaderState {
    /// Who is in the group, and the changes not yet sent as a delta.
    pub(super) roster: Roster,
    /// The coming step-down is this leader resigning because nobody heard
    /// it, and says so.
    pub(super) unreachable_resign: bool,
    /// `leave` was called while leading: the step-down ends in `Left`.
    pub(super) leaving: bool,
    /// The coordination services of this leadership.
    pub(super) services: alloc::boxed::Box<Services>,
    /// When the leader renews the permits it holds itself next.
    pub(super) next_self_renew: MonoTime,
}

/// What only a member (or a node that left) has.
#[derive(Clone, Debug)]
pub(super) struct MemberState {
    /// When to heartbeat the leader next.
    pub(super) next_heartbeat: MonoTime,
    /// When the leader last acknowledged a heartbeat.
    pub(super) last_ack: MonoTime,
    /// No leader answers: this node looks in the store instead.
    pub(super) cut_off: bool,
    /// When to look in the store for a leader next, while cut off.
    pub(super) next_lost_read: MonoTime,
    /// The `(term, meta_version)` the leader said it holds for us.
    pub(super) leader_has_meta: Option<(Term, u64)>,
    /// When this node last asked the leader for a snapshot.
    pub(super) snapshot_asked: Option<MonoTime>,
    /// The snapshot chunks collected so far.
    pub(super) assembly: Assembly,
    /// While views are relayed: the version an ack said the leader had
    /// while this node was behind it. Still behind it at the next ack
    /// (the leader sent nothing to mend it), the node asks for a snapshot.
    pub(super) behind: Option<u64>,
    /// The gap `(term, version)` this node last asked a relay or the
    /// leader to fill, when, and whether it asked the leader.
    pub(super) missing_asked: Option<((Term, u64), MonoTime, bool)>,
    /// The member the leader sent this node to for its snapshot, whose
    /// chunks it takes as the leader's.
    pub(super) snapshot_via: Option<NodeId>,
    /// Snapshots this node served others this heartbeat interval.
    pub(super) served: Budget,
}

impl MemberState {
    /// A member that knows no leader and looks in the store at
    /// `next_lost_read`.
    pub(super) fn looking(next_lost_read: MonoTime) -> Self {
        MemberState {
            next_heartbeat: MonoTime::ZERO,
            last_ack: MonoTime::ZERO,
            cut_off: true,
            next_lost_read,
            leader_has_meta: None,
            snapshot_asked: None,
            assembly: Assembly::default(),
            behind: None,
            missing_asked: None,
            snapshot_via: None,
            served: Budget::default(),
        }
    }

    /// Started following a leader at `now`: heartbeat it at once, and
    /// count its silence from now.
    pub(super) fn followed(&mut self, now: MonoTime) {
        self.last_ack = now;
        self.cut_off = false;
        self.next_heartbeat = now;
        self.leader_has_meta = None;
        self.snapshot_asked = None;
        self.behind = None;
        self.missing_asked = None;
        self.snapshot_via = None;
    }

    /// No leader answers any more: look in the store at `at`, and every
    /// failure timeout after until one is found.
    pub(super) fn look_at(&mut self, at: MonoTime) {
        self.cut_off = true;
        self.next_lost_read = at;
    }

    /// The deadline after which the leader counts as gone quiet.
    pub(super) fn quiet_at(&self, failure_timeout: Duration) -> MonoTime {
        self.last_ack + failure_timeout + Duration::from_nanos(1)
    }
}

impl Role {
    /// The member state, for a member or a node that left.
    pub(super) fn member(&self) -> Option<&MemberState> {
        match self {
            Role::Member(m) | Role::Left(m) => Some(m),
            Role::Leader(_) => None,
        }
    }

    /// The member state, for a member or a node that left.
    pub(super) fn member_mut(&mut self) -> Option<&mut MemberState> {
        match self {
            Role::Member(m) | Role::Left(m) => Some(m),
            Role::Leader(_) => None,
        }
    }

    /// Whether this node holds the lease (see [`Role::Leader`]).
    pub(super) fn is_leader(&self) -> bool {
        matches!(self, Role::Leader(_))
    }

    /// Whether `leave` was called: this node never competes again.
    pub(super) fn has_left(&self) -> bool {
        match self {
            Role::Left(_) => true,
            Role::Leader(l) => l.leaving,
            Role::Member(_) => false,
        }
    }

    /// Becomes leader with `roster` and `services`, remembering a `leave`
    /// already made.
    pub(super) fn lead(&mut self, roster: Roster, services: alloc::boxed::Box<Services>) {
        let (unreachable_resign, leaving) = match self {
            Role::Leader(l) => (l.unreachable_resign, l.leaving),
            Role::Left(_) => (false, true),
            Role::Member(_) => (false, false),
        };
        *self = Role::Leader(LeaderState {
            roster,
            unreachable_resign,
            leaving,
            services,
            next_self_renew: MonoTime::ZERO,
        });
    }

    /// Stops leading: a member (or, after a `leave`, a node that left)
    /// that knows no leader and looks in the store at `next_lost_read`.
    /// Returns whether the leader resigned because nobody heard it.
    pub(super) fn stop_leading(&mut self, next_lost_read: MonoTime) -> bool {
        match self {
            Role::Leader(l) => {
                let unreachable = l.unreachable_resign;
                let m = MemberState::looking(next_lost_read);
                *self = if l.leaving {
                    Role::Left(m)
                } else {
                    Role::Member(m)
                };
                unreachable
            }
            Role::Member(m) | Role::Left(m) => {
                m.look_at(next_lost_read);
                false
            }
        }
    }

    /// Leaves the group: a member becomes `Left`, a leader leaves when it
    /// steps down.
    pub(super) fn leave(&mut self) {
        match self {
            Role::Member(m) => {
                let m = core::mem::replace(m, MemberState::looking(MonoTime::MAX));
                *self = Role::Left(m);
            }
            Role::Leader(l) => l.leaving = true,
            Role::Left(_) => {}
        }
    }
}
