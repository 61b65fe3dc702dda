//! A counterexample as a person reads it: the inputs the checker chose,
//! one a line, each followed by what the row and the nodes hold after it.

use std::fmt::Write;

use stateright::Path;

use crate::bounds::STEP_NS;
use crate::world::{name, true_ns, Action, OpKey, World, NODES};
use crate::LeaseModel;

/// The path as numbered lines of inputs and their effect.
pub fn render(_model: &LeaseModel, path: Path<World, Action>) -> String {
    let steps = path.into_vec();
    let mut out = String::new();
    if let Some((first, _)) = steps.first() {
        let clocks: Vec<_> = (0..NODES)
            .map(|s| format!("{} reads {}", name(s), ms(first.offsets[s])))
            .collect();
        let _ = writeln!(out, "    start, {}", clocks.join(", "));
        let _ = writeln!(out, "                   {}", summary(first));
    }
    for (i, pair) in steps.windows(2).enumerate() {
        let (before, action) = (&pair[0].0, &pair[0].1);
        let after = &pair[1].0;
        let Some(action) = action else { continue };
        let _ = writeln!(
            out,
            "{:>3}. t={:<2} {}",
            i + 1,
            before.now,
            self::action(action)
        );
        let _ = writeln!(out, "                   {}", summary(after));
    }
    if let Some((last, _)) = steps.last() {
        for note in [
            &last.token_regressed,
            &last.view_regressed,
            &last.permit_regressed,
        ]
        .into_iter()
        .flatten()
        {
            let _ = writeln!(out, "    => {note}");
        }
        let leaders = last.possible_leaders();
        if leaders.len() > 1 {
            let names: Vec<_> = leaders.iter().map(|s| name(*s)).collect();
            let _ = writeln!(
                out,
                "    => at t={} {} may all lead",
                last.now,
                names.join(" and ")
            );
        }
        let holders = last.possible_holders();
        if holders.len() > crate::PERMIT_LIMIT {
            let names: Vec<_> = holders.iter().map(|s| name(*s)).collect();
            let _ = writeln!(
                out,
                "    => at t={} {} may all hold permit {:?}",
                last.now,
                names.join(" and "),
                crate::PERMIT
            );
        }
    }
    out
}

/// One action in words.
pub fn action(a: &Action) -> String {
    match a {
        Action::Deliver(e) => format!("deliver {}", envelope(e)),
        Action::Drop(e) => format!("DROP {}", envelope(e)),
        Action::Duplicate(e) => format!("DUPLICATE {}", envelope(e)),
        Action::Answer(k) => format!("store applies and answers {}", op(k)),
        Action::AppliedButTimedOut(k) => {
            format!("store APPLIES {} but the answer TIMES OUT", op(k))
        }
        Action::TimedOut(k) => format!("store TIMES OUT {} without applying it", op(k)),
        Action::LandOrphan(k) => format!("store applies dead {} (nobody hears)", op(k)),
        Action::ForgetOrphan(k) => format!("dead {} never reaches the store", op(k)),
        Action::Crash(s) => format!("CRASH {}", name(*s)),
        Action::Restart(s) => format!("RESTART {} with a new incarnation", name(*s)),
        Action::Skew(s, o) => format!("{}'s clock now reads {}", name(*s), ms(*o)),
        Action::Acquire(s) => format!("{} calls acquire({:?})", name(*s), crate::PERMIT),
        Action::Advance => "time -> next step; due timers fire".to_string(),
    }
}

/// A reading's offset from true time, in words.
fn ms(offset: i64) -> String {
    format!("true time {:+}ms", offset as f64 / 1e6)
}

fn op(k: &OpKey) -> String {
    let kind = if k.coord { "coord op" } else { "op" };
    format!("{}#{}'s {kind} {}", name(k.slot), k.incarnation, k.op.0)
}

fn envelope(e: &crate::world::Envelope) -> String {
    let msg = e
        .message()
        .map_or_else(|| "<undecodable>".to_string(), |m| format!("{m:?}"));
    let msg: String = msg.chars().take(110).collect();
    format!("{}->{}: {msg}", name(e.from), name(e.to))
}

/// Steps from `w`'s true time to `ns`, for expiries.
fn steps_from(w: &World, ns: u64) -> f64 {
    (ns as f64 - true_ns(w.now) as f64) / STEP_NS as f64
}

fn summary(w: &World) -> String {
    let row = match &w.row {
        None => "row: none".to_string(),
        Some(r) => format!(
            "row: {} token {} expires t{:+.1} v{}",
            r.holder
                .as_ref()
                .map_or("nobody".to_string(), |h| format!("{}#{}", h.id, h.nonce)),
            r.token.0,
            steps_from(w, r.expires_ns),
            r.version
        ),
    };
    let nodes: Vec<_> = (0..NODES)
        .map(|s| match w.node(s) {
            None => format!("{} down", name(s)),
            Some(n) => {
                let me = format!("{}#{}", name(s), n.identity().incarnation);
                let lease = match n.lease_claim() {
                    Some((t, exp)) if n.is_leader(&w.reading(s)) => {
                        format!(" LEADS t{} until t{:+.1}", t.0, steps_from(w, exp))
                    }
                    _ => String::new(),
                };
                let permits: String = w.tickets[s]
                    .iter()
                    .filter(|&&ticket| n.permit_valid(&w.reading(s), ticket))
                    .filter_map(|&ticket| n.permit(ticket))
                    .map(|p| {
                        let until = steps_from(w, p.expires_ns);
                        format!(" HOLDS {}#{} until t{until:+.1}", p.name, p.token)
                    })
                    .collect();
                let (term, version) = n.view().stamp();
                format!("{me}{lease}{permits} view({},{version})", term.0)
            }
        })
        .collect();
    format!(
        "{row} | {} | net {} ops {}",
        nodes.join(", "),
        w.net.len(),
        w.ops.len()
    )
}
