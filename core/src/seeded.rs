//! Seeded bugs: deliberate mistakes the model checker (`hedgerow-model`)
//! switches on one at a time to show that each of its properties catches
//! the kind of bug it is there for. Only the `model-check` feature lets a
//! caller choose one ([`crate::Node::seed_bug`]); without it no node can
//! carry one and every check below is a constant `false`.

/// A deliberate bug, for the model checker's own tests only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(not(feature = "model-check"), allow(dead_code))]
#[non_exhaustive]
pub enum SeededBug {
    /// A taker compares the row's expiry with its reading's `latest`
    /// instead of `earliest`: it takes over while the holder may still
    /// lead. Breaks "one leader at a time".
    TakeOverOnLatest,
    /// "Is this row mine?" compares the node id only, not the nonce: a
    /// restarted process renews its previous incarnation's lease under the
    /// old token. Breaks "tokens strictly increase".
    RenewIgnoresNonce,
    /// A member installs a snapshot without comparing its stamp with the
    /// view it has: a late or duplicated snapshot moves the view back.
    /// Breaks "views are monotonic".
    SnapshotIgnoresStamp,
    /// The first insert is conditioned on row version 0 instead of "no
    /// row": it always conflicts and nobody ever leads. Breaks liveness.
    FirstInsertOnVersionZero,
}
