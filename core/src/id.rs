//! Identities: who a node is (`NodeId`), which process start it is
//! (`incarnation`), and the term (fencing token) a leader holds.

use alloc::string::String;
use alloc::sync::Arc;
use core::fmt;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest node id accepted, in bytes.
pub const MAX_NODE_ID_LEN: usize = 128;
/// The longest advertised address accepted, in bytes.
pub const MAX_ADDR_LEN: usize = 256;

/// A node's stable name, e.g. a pod name. Not unique across restarts: a
/// restarted process keeps its id and gets a new incarnation.
///
/// Cheap to clone (a shared string): ids are copied into maps, messages
/// and events on every round trip. Encoded as a plain string.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(Arc<str>);

impl NodeId {
    /// A node id: 1 to [`MAX_NODE_ID_LEN`] bytes of printable, non-space
    /// characters.
    ///
    /// ```
    /// use hedgerow_core::NodeId;
    /// assert!(NodeId::new("web-7d9f-abcde").is_ok());
    /// assert!(NodeId::new("").is_err());
    /// ```
    pub fn new(id: impl Into<String>) -> Result<Self, InvalidId> {
        let id = id.into();
        check(&id)?;
        Ok(NodeId(Arc::from(id)))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether a decoded id respects the limits of [`NodeId::new`]; the
    /// decoder applies this to everything a peer sends.
    pub fn is_well_formed(&self) -> bool {
        check(&self.0).is_ok()
    }
}

/// The limits of [`NodeId::new`].
fn check(id: &str) -> Result<(), InvalidId> {
    if id.is_empty() || id.len() > MAX_NODE_ID_LEN {
        return Err(InvalidId::Length(id.len()));
    }
    if id.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(InvalidId::Character);
    }
    Ok(())
}

impl Serialize for NodeId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for NodeId {
    /// Any string: the wire decoder checks [`NodeId::is_well_formed`].
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = NodeId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a node id")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<NodeId, E> {
                Ok(NodeId(Arc::from(v)))
            }
        }
        d.deserialize_str(Visit)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a node id was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidId {
    /// Empty or longer than [`MAX_NODE_ID_LEN`] bytes.
    Length(usize),
    /// Contains a control or white-space character.
    Character,
}

impl fmt::Display for InvalidId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InvalidId::Length(n) => write!(
                f,
                "node id is {n} bytes; use 1 to {MAX_NODE_ID_LEN} bytes (a pod name fits)"
            ),
            InvalidId::Character => f.write_str(
                "node id contains white space or a control character; use a pod or host name",
            ),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for InvalidId {}

/// A leadership term: the lease's fencing token. Strictly increases from
/// one leadership to the next; 0 means "no leader ever".
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Term(pub u64);

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Who this node is: id, advertised address and incarnation (random per
/// process start, supplied by the caller so the core stays pure).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    /// The stable name.
    pub id: NodeId,
    /// The address peers dial (`host:port`); the core only carries it.
    pub addr: String,
    /// Random per process start. Also used as the lease holder's nonce.
    pub incarnation: u64,
}
