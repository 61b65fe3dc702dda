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
    sweep("HEDGEROW_SEEDS", default_count, |i| {
        salt.wrapping_mul(1_000_003).wrapping_add(i)
    })
}

/// Seeds for a sweep of the long turmoil scenarios: `base`, `base + 1`,
/// …, as many as `HEDGEROW_TURMOIL_SEEDS` says (else `default_count`);
/// `HEDGEROW_SEED=<n>` replays exactly one.
pub fn turmoil_seeds(base: u64, default_count: u64) -> Seeds {
    sweep("HEDGEROW_TURMOIL_SEEDS", default_count, |i| base + i)
}

/// `HEDGEROW_SEED` if set, else `count_var` (or `default_count`) seeds
/// numbered by `nth`.
fn sweep(count_var: &str, default_count: u64, nth: impl Fn(u64) -> u64) -> Seeds {
    if let Some(seed) = std::env::var("HEDGEROW_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
    {
        return Seeds {
            list: vec![seed],
            replay: true,
        };
    }
    let count = std::env::var(count_var)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(default_count);
    Seeds {
        list: (0..count).map(nth).collect(),
        replay: false,
    }
}
