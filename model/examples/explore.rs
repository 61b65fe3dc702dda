//! Runs the checker once with the bounds `HEDGEROW_MODEL_DEPTH` names, or
//! the ones given as `max_time max_faults max_crashes max_in_flight
//! [calm_steps]`, and prints the state count, the time and every
//! discovery as a trace: for measuring, and for trying bounds.
//!
//! `RUN=permits|lapse|failover` starts from those bounds instead;
//! `BUG=nonce|insert|latest|snapshot|takeover|free|token` seeds a bug and stops at its counterexample,
//! `START=0,5,-5` fixes the clock offsets (ms) (`START=all`: every
//! layout), `SKEWS=n` allows `n` clock changes, `DEPTH=n` limits the
//! path length, `DFS=1` searches depth first, `ACQUIRES=n` lets the
//! nodes make `n` acquire calls.
//!
//! ```text
//! cargo run --release -p hedgerow-model --example explore -- 2 1 1 1
//! ```

use hedgerow_core::SeededBug;
use hedgerow_model::{run, Bounds, Search};

/// The seeded bugs by their `BUG=` name, each with the property it breaks.
const BUGS: [(&str, SeededBug, &str); 7] = [
    (
        "nonce",
        SeededBug::RenewIgnoresNonce,
        hedgerow_model::TOKENS_INCREASE,
    ),
    (
        "insert",
        SeededBug::FirstInsertOnVersionZero,
        hedgerow_model::CALM_LEADS,
    ),
    (
        "latest",
        SeededBug::TakeoverOnLatest,
        hedgerow_model::ONE_LEADER,
    ),
    (
        "snapshot",
        SeededBug::SnapshotIgnoresStamp,
        hedgerow_model::VIEWS_MONOTONIC,
    ),
    (
        "takeover",
        SeededBug::NoTakeoverOfExpired,
        hedgerow_model::FAILOVER_LEADS,
    ),
    (
        "free",
        SeededBug::FreeOnLatest,
        hedgerow_model::PERMITS_WITHIN_LIMIT,
    ),
    (
        "token",
        SeededBug::GrantKeepsLastToken,
        hedgerow_model::PERMIT_TOKENS_INCREASE,
    ),
];

fn main() {
    let mut bounds = match Bounds::from_env() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    match std::env::var("RUN").as_deref() {
        Err(_) | Ok("") => {}
        Ok("permits") => bounds = Bounds::permits(),
        Ok("lapse") => bounds = Bounds::permit_lapse(),
        Ok("failover") => bounds = Bounds::failover(),
        Ok(other) => {
            eprintln!("RUN={other:?}: use permits, lapse or failover");
            std::process::exit(2);
        }
    }
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().unwrap_or_else(|_| panic!("not a number: {a}")))
        .collect();
    if let [t, f, c, m, rest @ ..] = args.as_slice() {
        bounds.max_time = *t;
        bounds.max_faults = *f as u8;
        bounds.max_crashes = *c as u8;
        bounds.max_in_flight = *m as usize;
        if let [k] = rest {
            bounds.calm_steps = *k;
        }
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (bug, stop) = match std::env::var("BUG").as_deref() {
        Err(_) | Ok("") => (None, None),
        Ok(name) => match BUGS.iter().find(|(n, _, _)| *n == name) {
            Some(&(_, bug, property)) => (Some(bug), Some(property)),
            None => {
                let names: Vec<_> = BUGS.iter().map(|(n, _, _)| *n).collect();
                eprintln!("BUG={name:?}: use one of {}", names.join(", "));
                std::process::exit(2);
            }
        },
    };
    bounds.bug = bug;
    if let Ok(d) = std::env::var("DEPTH") {
        bounds.max_depth = Some(
            d.parse()
                .unwrap_or_else(|_| panic!("DEPTH={d}: a number of actions")),
        );
    }
    if let Ok(a) = std::env::var("ACQUIRES") {
        bounds.max_acquires = a
            .parse()
            .unwrap_or_else(|_| panic!("ACQUIRES={a}: a number of acquire calls"));
    }
    if let Ok(s) = std::env::var("SKEWS") {
        bounds.max_skews = s
            .parse()
            .unwrap_or_else(|_| panic!("SKEWS={s}: a number of clock changes"));
    }
    if std::env::var("START").as_deref() == Ok("all") {
        bounds.start = None;
    } else if let Ok(start) = std::env::var("START") {
        let v: Vec<i64> = start
            .split(',')
            .map(|o| {
                o.parse::<i64>()
                    .unwrap_or_else(|_| panic!("START={start}: three offsets in ms, like 0,5,-5"))
                    * 1_000_000
            })
            .collect();
        bounds.start = Some(v);
    }
    let search = if std::env::var("DFS").is_ok() {
        Search::DepthFirst
    } else {
        Search::BreadthFirst
    };
    println!("{bounds:?}");
    let outcome = run(bounds, threads, stop, search);
    println!(
        "unique states {} (generated {}), max depth {}, {:.1?}",
        outcome.unique_states, outcome.states, outcome.max_depth, outcome.elapsed
    );
    for (p, trace) in &outcome.discoveries {
        println!("--- {p}\n{trace}");
    }
}
