//! Which seeds a sweep runs: `HEDGEROW_SEED=<n>` replays exactly one,
//! `HEDGEROW_SEEDS=<count>` sets how many, else the caller's default.

/// The seeds of one sweep.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seeds {
    /// The seeds, in order.
    pub list: Vec<u64>,
    /// Whether one seed was asked for explicitly (a replay).
    pub replay: bool,
}

/// Seeds for a sweep named `salt` (so different tests explore different
/// seeds), `default_count` of them unless the environment says otherwise.
pub fn seeds(salt: u64, default_count: u64) -> Seeds {
    if let Some(seed) = std::env::var("HEDGEROW_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
    {
        return Seeds {
            list: vec![seed],
            replay: true,
        };
    }
    let count = std::env::var("HEDGEROW_SEEDS")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(default_count);
    Seeds {
        list: (0..count)
            .map(|i| salt.wrapping_mul(1_000_003).wrapping_add(i))
            .collect(),
        replay: false,
    }
}
