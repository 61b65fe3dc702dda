//! The node's timers by name: an enum of every deadline the node can wait
//! for and a table of them, so [`Node::poll_timeout`] is a minimum over the
//! table and [`Node::next_timer`] can say which timer it is (the hot path
//! takes only the minimum: naming the timer costs a few dozen instructions
//! per call that `poll_timeout` has no use for). Modelled on
//! quinn-proto's `TimerTable`, with one difference: the deadlines are read
//! from the rooms that own them (the lease's next wake depends on the
//! clock reading, the roster's on its batches) each time the table is
//! built, never stored twice, so the table cannot go stale. Firing a timer
//! is just `handle(Input::Tick)`: each room checks its own deadlines when
//! the node steps, so which timer is named first never changes what runs.

use crate::time::{MonoTime, Now};

use super::role::Role;
use super::Node;

/// A deadline the node waits for. When two fall at the same instant,
/// [`Node::next_timer`] names the one listed first here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Timer {
    /// The lease's next step: a read, a takeover, a renewal, or the
    /// step-down at expiry.
    Lease,
    /// Leader: the roster's next scan for silent members, or the end of
    /// the batch window of pending view changes.
    Roster,
    /// Leader: when nobody having been heard from makes it resign.
    Unreachable,
    /// Member: the next heartbeat to the leader.
    Heartbeat,
    /// Member: when the leader's silence cuts this node off.
    LeaderQuiet,
    /// Member cut off from its leader: the next look in the store.
    LostRead,
    /// The next retry or timeout of an outstanding request.
    Request,
    /// The next timeout of an outstanding broadcast.
    Broadcast,
    /// Coordination: a permit held here lapsing, the leader renewing its
    /// own permits or freeing an expired one, or a store retry.
    Coord,
}

impl Timer {
    /// Every timer, in the order the table lists them.
    const ALL: [Timer; 9] = [
        Timer::Lease,
        Timer::Roster,
        Timer::Unreachable,
        Timer::Heartbeat,
        Timer::LeaderQuiet,
        Timer::LostRead,
        Timer::Request,
        Timer::Broadcast,
        Timer::Coord,
    ];
}

/// One deadline per [`Timer`]; `MonoTime::MAX` is a timer not armed.
/// A fixed array: building it allocates nothing.
#[derive(Clone, Copy, Debug)]
pub(super) struct TimerTable {
    at: [MonoTime; Timer::ALL.len()],
}

impl TimerTable {
    fn new() -> Self {
        TimerTable {
            at: [MonoTime::MAX; Timer::ALL.len()],
        }
    }

    #[inline]
    fn set(&mut self, timer: Timer, at: MonoTime) {
        self.at[timer as usize] = at;
    }

    /// The earliest armed deadline.
    #[inline]
    pub(super) fn earliest(&self) -> Option<MonoTime> {
        let at = self.at.iter().copied().min().unwrap_or(MonoTime::MAX);
        (at != MonoTime::MAX).then_some(at)
    }

    /// The earliest armed timer, the first listed on a tie.
    #[inline]
    pub(super) fn next(&self) -> Option<(Timer, MonoTime)> {
        let mut first = 0;
        for i in 1..self.at.len() {
            if self.at[i] < self.at[first] {
                first = i;
            }
        }
        let at = self.at[first];
        (at != MonoTime::MAX).then_some((Timer::ALL[first], at))
    }
}

impl Node {
    /// The table of the node's deadlines at reading `now`. Role timers
    /// count only in their role: a leader's only while the lease says it
    /// still leads, a member's heartbeat only while it follows someone.
    #[inline]
    pub(super) fn timers(&self, now: &Now) -> TimerTable {
        let mut table = TimerTable::new();
        table.set(Timer::Lease, self.lease.next_wake(now));
        match &self.role {
            Role::Leader(l) if self.lease.is_leader(now) => {
                let r = &l.roster;
                table.set(Timer::Roster, r.next_due());
                if r.expect_contact {
                    let after = self.cfg.failure_timeout * self.cfg.unreachable_factor;
                    table.set(Timer::Unreachable, r.last_contact + after);
                }
            }
            Role::Member(m) => {
                if self.following().is_some() {
                    table.set(Timer::Heartbeat, m.next_heartbeat);
                    if !m.cut_off {
                        table.set(Timer::LeaderQuiet, m.quiet_at(self.cfg.failure_timeout));
                    }
                }
                if m.cut_off {
                    table.set(Timer::LostRead, m.next_lost_read);
                }
            }
            Role::Leader(_) | Role::Left(_) => {}
        }
        table.set(Timer::Request, self.requests.next_due());
        table.set(Timer::Broadcast, self.broadcasts.next_due());
        table.set(Timer::Coord, self.coord_wake(now));
        table
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_lists_every_timer_at_its_own_index() {
        for (i, t) in Timer::ALL.iter().enumerate() {
            assert_eq!(*t as usize, i);
        }
    }

    #[test]
    fn the_earliest_timer_is_next_and_a_tie_goes_to_the_first_listed() {
        let mut t = TimerTable::new();
        assert_eq!(t.next(), None);
        assert_eq!(t.earliest(), None);
        t.set(Timer::Broadcast, MonoTime::from_nanos(5));
        t.set(Timer::Heartbeat, MonoTime::from_nanos(7));
        assert_eq!(t.next(), Some((Timer::Broadcast, MonoTime::from_nanos(5))));
        t.set(Timer::Heartbeat, MonoTime::from_nanos(5));
        assert_eq!(t.next(), Some((Timer::Heartbeat, MonoTime::from_nanos(5))));
        assert_eq!(t.earliest(), Some(MonoTime::from_nanos(5)));
    }
}
