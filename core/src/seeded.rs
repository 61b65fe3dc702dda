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
    /// "Is this row mine?" compares the node id only, not the nonce: a
    /// restarted process renews its previous incarnation's lease under the
    /// old token. Breaks "tokens strictly increase".
    RenewIgnoresNonce,
    /// The first insert is conditioned on row version 0 instead of "no
    /// row": it always conflicts and nobody ever leads. Breaks liveness.
    FirstInsertOnVersionZero,
    /// A taker decides the holder's lease has passed by its reading's
    /// `latest` instead of `earliest` (both when it schedules the attempt
    /// and when it writes): it takes over up to twice the error bound
    /// early, while the holder still leads. Breaks "one leader at a time".
    TakeoverOnLatest,
    /// A member installs a leader's snapshot without comparing its stamp
    /// with its own view: a delayed or duplicated snapshot moves the view
    /// back. Breaks "views monotonic per node".
    SnapshotIgnoresStamp,
    /// A taker never takes over a row another process holds, however long
    /// expired: the first leader is the last, and a crash of it leaves the
    /// cluster leaderless. Breaks liveness after a failover.
    NoTakeoverOfExpired,
    /// The leader frees a permit once its reading's `latest` has passed
    /// the promise instead of its `earliest`: it grants the permit again up
    /// to twice the error bound early, while the holder still believes in
    /// it. Breaks "permit holders within the limit".
    FreeOnLatest,
    /// A grant stores its permit under `last_token + 1` but leaves
    /// `last_token` where it was (the definition every store is held to,
    /// [`crate::coord::execute_coord`], seeded through
    /// [`crate::coord::execute_coord_seeded`]): the next grant of the name
    /// reuses the token. Breaks "permit tokens strictly increase".
    GrantKeepsLastToken,
}
