//! Membership observations that any cluster run can record, so that two
//! membership systems (hedgerow and a SWIM library such as foca) run under
//! the same schedule can be compared on the same metrics.
//!
//! A runner records, in simulated time since the start of the run:
//! * every change of the set of nodes that are actually alive (started and
//!   not yet crashed or left), one entry per change;
//! * every change of a node's view (the set of members it believes alive,
//!   itself included);
//! * every report by a node that another node failed (a "dead" verdict);
//! * the bytes each node put on the network.
//!
//! Nodes are named by their simulated host name (`"n1"`, `"n2"`, …).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// A node's name: its simulated host name.
pub type NodeName = String;

/// Everything one run observed about membership.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MembershipTrace {
    /// The true live set after each change, in time order.
    pub live: Vec<(Duration, BTreeSet<NodeName>)>,
    /// `(at, node, view)`: `node`'s view changed to `view`, in time order.
    pub views: Vec<(Duration, NodeName, BTreeSet<NodeName>)>,
    /// `(at, reporter, subject)`: `reporter` declared `subject` failed.
    pub failed_reports: Vec<(Duration, NodeName, NodeName)>,
    /// Bytes each node sent over the whole run.
    pub bytes_sent: BTreeMap<NodeName, u64>,
    /// Instants where a schedule step (a wave, a crash) ended; convergence
    /// is measured from each of them.
    pub marks: Vec<(Duration, String)>,
    /// How long the run lasted in simulated time.
    pub duration: Duration,
}
