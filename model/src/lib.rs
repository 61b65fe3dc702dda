//! # hedgerow-model
//!
//! An exhaustive check, within bounds, of the *real* `hedgerow_core::Node`:
//! three nodes, the lease row (compare-and-set exactly as
//! [`hedgerow_core::execute_on_row`] defines it), the coordination tables
//! ([`hedgerow_core::coord::execute_coord`]), a network that may
//! delay, drop, duplicate and reorder, store operations that may time out
//! after being applied, crashes with restarts under new incarnations, and
//! clocks whose readings the checker picks adversarially within the bound.
//! [stateright](https://docs.rs/stateright) visits every interleaving of
//! those choices breadth first, merging states by a canonical hash.
//!
//! `world` is the state and its one transition, `bounds` what keeps it
//! finite, `trace` renders a counterexample as the inputs that led to it.
//! The properties are in [`LeaseModel`]; each has a seeded bug
//! ([`hedgerow_core::SeededBug`]) that the tests show it catches. The
//! permit properties get a lapse and a second grant, and liveness a
//! failover, from a directed start ([`Prelude`]) a few steps before them.

mod bounds;
mod trace;
mod world;

use std::time::{Duration, Instant};

use stateright::{Checker, HasDiscoveries, Model, Property};

pub use bounds::{node_config, node_config_for, Bounds, Prelude, BOUND_NS, EPOCH_NS, STEP_NS};
pub use trace::render;
pub use world::{
    Action, Envelope, Leadership, OpKey, PendingOp, Slot, StoreOp, World, NODES, PERMIT,
    PERMIT_LIMIT,
};

/// Never two nodes that may lead at one true instant.
pub const ONE_LEADER: &str = "one leader at a time";
/// Each leadership's token is above the one before it.
pub const TOKENS_INCREASE: &str = "tokens strictly increase";
/// No node's view `(term, version)` ever moves back.
pub const VIEWS_MONOTONIC: &str = "views monotonic per node";
/// Never more holders of the permit than its limit at one true instant.
pub const PERMITS_WITHIN_LIMIT: &str = "permit holders within the limit";
/// Each permit granted has a token above the one before it.
pub const PERMIT_TOKENS_INCREASE: &str = "permit tokens strictly increase";
/// A cluster left alone long enough has a leader.
pub const CALM_LEADS: &str = "a calm cluster has a leader";
/// After a leader's crash (the failover run), some node leads again
/// within `Bounds::calm_steps` calm steps: led at some instant since the
/// crash, the `eventually` form of [`CALM_LEADS`].
pub const FAILOVER_LEADS: &str = "a leader again after a crash";
/// Sanity: some run elects a leader (the space is not vacuous).
pub const SOME_LEADER: &str = "some run elects a leader";
/// Sanity: some run grants a permit (with `max_acquires` above 0).
pub const SOME_GRANT: &str = "some run grants a permit";
/// Sanity: some run grants the permit to a second process (a lapse and a
/// grant after it are explored).
pub const SOME_REGRANT: &str = "some run grants the permit again";
/// Sanity: some run stays calm for `Bounds::calm_steps` (the liveness
/// property is not vacuous).
pub const SOME_CALM: &str = "some run stays calm long enough";
/// Sanity: some run sees a second leadership (a failover is explored).
pub const SOME_FAILOVER: &str = "some run fails over";

/// The safety and liveness properties, the names above.
pub const SAFETY_AND_LIVENESS: [&str; 7] = [
    ONE_LEADER,
    TOKENS_INCREASE,
    VIEWS_MONOTONIC,
    PERMITS_WITHIN_LIMIT,
    PERMIT_TOKENS_INCREASE,
    CALM_LEADS,
    FAILOVER_LEADS,
];

/// The stateright model of three real nodes within `bounds`.
#[derive(Clone, Debug)]
pub struct LeaseModel {
    /// The bounds of the exploration.
    pub bounds: Bounds,
}

impl Model for LeaseModel {
    type State = World;
    type Action = Action;

    fn init_states(&self) -> Vec<World> {
        let starts = match &self.bounds.start {
            Some(one) => vec![one.clone()],
            None => world::offset_vectors(&self.bounds.offsets),
        };
        starts
            .into_iter()
            .map(|o| World::start_state(o, &self.bounds))
            .collect()
    }

    fn actions(&self, state: &World, actions: &mut Vec<Action>) {
        state.actions(&self.bounds, actions);
    }

    fn next_state(&self, state: &World, action: Action) -> Option<World> {
        Some(state.after(&self.bounds, action))
    }

    fn format_action(&self, action: &Action) -> String {
        trace::action(action)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always(ONE_LEADER, |_, w: &World| w.possible_leaders().len() <= 1),
            Property::always(TOKENS_INCREASE, |_, w: &World| w.token_regressed.is_none()),
            Property::always(VIEWS_MONOTONIC, |_, w: &World| w.view_regressed.is_none()),
            Property::always(PERMITS_WITHIN_LIMIT, |_, w: &World| {
                w.possible_holders().len() <= world::PERMIT_LIMIT
            }),
            Property::always(PERMIT_TOKENS_INCREASE, |_, w: &World| {
                w.permit_regressed.is_none()
            }),
            Property::always(CALM_LEADS, |m: &LeaseModel, w: &World| {
                w.calm < m.bounds.calm_steps || w.has_leader()
            }),
            Property::always(FAILOVER_LEADS, |m: &LeaseModel, w: &World| {
                m.bounds.prelude != Some(Prelude::LeaderCrashed)
                    || w.calm < m.bounds.calm_steps
                    || w.led_since_origin
            }),
            Property::sometimes(SOME_LEADER, |_, w: &World| w.has_leader()),
            Property::sometimes(SOME_GRANT, |_, w: &World| w.last_permit.is_some()),
            Property::sometimes(SOME_REGRANT, |_, w: &World| w.regranted),
            Property::sometimes(SOME_CALM, |m: &LeaseModel, w: &World| {
                w.calm >= m.bounds.calm_steps
            }),
            Property::sometimes(SOME_FAILOVER, |_, w: &World| {
                w.last_leadership.is_some_and(|l| l.term.0 >= 2)
            }),
        ]
    }
}

/// What one run of the checker found.
#[derive(Debug)]
pub struct Outcome {
    /// Distinct states visited.
    pub unique_states: usize,
    /// States generated, repeats included.
    pub states: usize,
    /// The longest path explored, in actions.
    pub max_depth: usize,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// For each property with a discovery (a counterexample to an
    /// `always`, an example of a `sometimes`), its rendered trace.
    pub discoveries: Vec<(&'static str, String)>,
}

impl Outcome {
    /// The rendered counterexample to `property`, if one was found.
    pub fn trace(&self, property: &str) -> Option<&str> {
        self.discoveries
            .iter()
            .find(|(p, _)| *p == property)
            .map(|(_, t)| t.as_str())
    }

    /// The `always` properties that failed.
    pub fn violated(&self) -> Vec<&'static str> {
        self.discoveries
            .iter()
            .map(|(p, _)| *p)
            .filter(|p| SAFETY_AND_LIVENESS.contains(p))
            .collect()
    }
}

/// Explores every state within `bounds` breadth first on `threads`
/// threads; with `stop_at`, stops as soon as that property has a
/// discovery (a seeded bug found).
pub fn check(bounds: Bounds, threads: usize, stop_at: Option<&'static str>) -> Outcome {
    run(bounds, threads, stop_at, Search::BreadthFirst)
}

/// How the checker walks the state space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Search {
    /// Level by level: every state within the bounds, shortest
    /// counterexamples first.
    BreadthFirst,
    /// Deepest first: the same states, but it reaches deep ones (a lease
    /// expiring several steps in) long before breadth first would, so a
    /// seeded bug is found in seconds; its counterexample is not the
    /// shortest.
    DepthFirst,
}

/// Like [`check`], walking the space as `search` says.
pub fn run(
    bounds: Bounds,
    threads: usize,
    stop_at: Option<&'static str>,
    search: Search,
) -> Outcome {
    let model = LeaseModel { bounds };
    let started = Instant::now();
    let mut builder = model.clone().checker().threads(threads);
    if let Some(depth) = model.bounds.max_depth {
        builder = builder.target_max_depth(depth);
    }
    if let Some(p) = stop_at {
        builder = builder.finish_when(HasDiscoveries::AnyOf([p].into_iter().collect()));
    }
    match search {
        Search::BreadthFirst => outcome(&model, builder.spawn_bfs().join(), started),
        Search::DepthFirst => outcome(&model, builder.spawn_dfs().join(), started),
    }
}

fn outcome(model: &LeaseModel, checker: impl Checker<LeaseModel>, started: Instant) -> Outcome {
    let elapsed = started.elapsed();
    let mut discoveries: Vec<_> = checker
        .discoveries()
        .into_iter()
        .map(|(name, path)| (name, render(model, path)))
        .collect();
    discoveries.sort();
    Outcome {
        unique_states: checker.unique_state_count(),
        states: checker.state_count(),
        max_depth: checker.max_depth(),
        elapsed,
        discoveries,
    }
}
