//! The conformance checks of a store's coordination side
//! ([`CoordStore`]): every answer and every read equal to what
//! [`execute_coord`] gives on [`CoordTables`], fenced writes refused with
//! nothing written, tokens that only grow, duplicates recognised, limits
//! kept, one winner among racing threads and racing processes, an outage
//! that is an error and then passes.
//!
//! Each check runs on its own groups; the lease row the writes are fenced
//! by is written through the store's own [`LeaseStore::compare_and_set`].

use std::path::{Path, PathBuf};
use std::sync::Barrier;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hedgerow_core::{OpId, Payload, Term};

use super::{
    applied, collect_wins, fresh_group, node, ok, race_env, spawn_children, write_by, Harness,
    RACERS,
};
use crate::store::coord::{
    execute_coord, CoordOp, CoordReply, CoordStore, CoordTables, Fence, KvEntry, Origin,
};
use crate::store::{CasOutcome, LeaseRow, LeaseStore, LeaseWrite, StoreError};

/// Runs every coordination check but the outage one, each on its own
/// groups.
pub fn run_coord<H: Harness + Sync>(harness: &H) {
    coord_matches_execute_coord(harness);
    fenced_writes_are_refused_and_write_nothing(harness);
    tokens_strictly_increase_per_name(harness);
    duplicates_are_recognised(harness);
    limits_are_kept(harness);
    concurrent_grants_of_one_permit_have_one_winner(harness);
    concurrent_puts_get_distinct_revisions(harness);
}

/// The store's coordination side, or a panic saying the store has none.
pub fn coord_of<'a, S: LeaseStore>(check: &str, store: &'a S) -> &'a dyn CoordStore {
    store.coord().unwrap_or_else(|| {
        panic!("[{check}] the store has no coordination side (LeaseStore::coord is None)")
    })
}

/// The fence of the holder `write` names.
pub fn fence_of(write: &LeaseWrite) -> Fence {
    Fence {
        token: write.token,
        nonce: write.holder.as_ref().map_or(0, |h| h.nonce),
    }
}

/// A put by `(node, 1, request)`.
pub fn put(fence: Fence, node_id: &str, request: u64, key: &str, value: &[u8]) -> CoordOp {
    CoordOp::Put {
        op: OpId(request),
        fence,
        origin: Origin {
            node: node(node_id),
            incarnation: 1,
            request,
        },
        key: key.into(),
        value: Payload::from(value),
    }
}

/// A grant of `name` to `(holder, 1)` with `ticket`.
pub fn grant(fence: Fence, name: &str, limit: u32, holder: &str, ticket: u64) -> CoordOp {
    CoordOp::Grant {
        op: OpId(ticket),
        fence,
        name: name.into(),
        limit,
        holder: node(holder),
        incarnation: 1,
        ticket,
        expires_ns: 1_000 + ticket,
    }
}

/// The free of permit `(name, token)`.
pub fn free(fence: Fence, name: &str, token: u64) -> CoordOp {
    CoordOp::Free {
        op: OpId(token),
        fence,
        name: name.into(),
        token,
    }
}

/// One group of the store beside its model: every op runs on both (the
/// model with the lease row read back from the store) and must get the
/// same answer.
struct Differential<'a, S> {
    check: &'a str,
    store: &'a S,
    group: String,
    model: CoordTables,
    lease: Option<LeaseRow>,
}

impl<'a, S: LeaseStore> Differential<'a, S> {
    fn new(check: &'a str, store: &'a S, group: String) -> Self {
        let lease = ok(check, "read the lease", store.read(&group));
        Differential {
            check,
            store,
            group,
            model: CoordTables::default(),
            lease,
        }
    }

    /// Writes the lease row (as the lease side would) and returns the
    /// holder's fence.
    fn lease(&mut self, write: LeaseWrite) -> Fence {
        let expected = self.lease.as_ref().map(|row| row.version);
        let row = applied(
            self.check,
            "lease write",
            self.store.compare_and_set(&self.group, expected, &write),
        );
        self.lease = Some(row);
        fence_of(&write)
    }

    fn run(&mut self, what: &str, op: &CoordOp) -> CoordReply {
        let want = execute_coord(&mut self.model, self.lease.as_ref(), op);
        let got = ok(
            self.check,
            what,
            coord_of(self.check, self.store).execute(&self.group, op),
        );
        assert_eq!(
            got, want,
            "[{}] {what}: the store answered {got:?}, execute_coord answers {want:?} to {op:?}",
            self.check
        );
        got
    }

    /// Every read the store offers equals the model's, and so do the
    /// stored permits and semaphores.
    fn reads_agree(&self, keys: &[&str], prefixes: &[&str]) {
        let (check, group) = (self.check, self.group.as_str());
        let coord = coord_of(check, self.store);
        let model = &self.model;
        let top = model.revision();
        for key in keys {
            assert_eq!(
                ok(check, "kv_get", coord.kv_get(group, key)).as_ref(),
                model.get(key),
                "[{check}] kv_get({key:?})"
            );
            assert_eq!(
                ok(check, "kv_history", coord.kv_history(group, key)),
                model.history(key),
                "[{check}] kv_history({key:?})"
            );
            for revision in 0..=top + 1 {
                assert_eq!(
                    ok(check, "kv_get_at", coord.kv_get_at(group, key, revision)).as_ref(),
                    model.get_at(key, revision),
                    "[{check}] kv_get_at({key:?}, {revision})"
                );
            }
            assert_eq!(
                ok(check, "kv_get_at", coord.kv_get_at(group, key, u64::MAX)).as_ref(),
                model.get_at(key, u64::MAX),
                "[{check}] kv_get_at({key:?}, u64::MAX)"
            );
        }
        for prefix in prefixes {
            assert_eq!(
                ok(check, "kv_list", coord.kv_list(group, prefix)),
                model.list(prefix),
                "[{check}] kv_list({prefix:?})"
            );
            for after in [0, 1, top / 2, top.saturating_sub(1), top, u64::MAX] {
                for limit in [0, 1, 3, usize::MAX] {
                    assert_eq!(
                        ok(
                            check,
                            "kv_changes",
                            coord.kv_changes(group, prefix, after, limit)
                        ),
                        model.changes(prefix, after, limit),
                        "[{check}] kv_changes({prefix:?}, {after}, {limit})"
                    );
                }
            }
        }
        let load = CoordOp::LoadPermits { op: OpId(0) };
        let stored = ok(check, "load permits", coord.execute(group, &load));
        let want = CoordReply::Permits {
            semaphores: model.semaphores().cloned().collect(),
            permits: model.permits().cloned().collect(),
        };
        assert_eq!(stored, want, "[{check}] stored permits and semaphores");
    }
}

/// A small deterministic generator (xorshift), so a failing sequence
/// replays from its seed.
struct Draw(u64);

impl Draw {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

const KEYS: [&str; 6] = ["a", "a/1", "a/2", "ab", "b", "é/ü"];
const PREFIXES: [&str; 7] = ["", "a", "a/", "ab", "b", "é", "z"];
const NAMES: [&str; 3] = ["lock", "pair", "any"];

/// A seeded sequence of puts, grants, frees and loads, fenced right and
/// wrong, with takeovers and releases of the lease between them: every
/// answer equals [`execute_coord`]'s on [`CoordTables`], and so does every
/// read afterwards.
pub fn coord_matches_execute_coord<H: Harness>(harness: &H) {
    let check = "coord_matches_execute_coord";
    let store = harness.open();
    for seed in [0x9e37_79b9_7f4a_7c15_u64, 0x2545_f491_4f6c_dd1d] {
        let mut diff = Differential::new(check, &store, fresh_group(&format!("{check}-{seed}")));
        let mut draw = Draw(seed);
        // No lease row yet: everything is fenced.
        let mut fence = Fence {
            token: Term(1),
            nonce: 1,
        };
        let mut holder = 0u64;
        for step in 0..300 {
            let what = format!("seed {seed:#x} step {step}");
            let used = match draw.below(10) {
                0..=7 => fence,
                8 => Fence {
                    token: Term(fence.token.0.wrapping_sub(1)),
                    ..fence
                },
                _ => Fence {
                    nonce: fence.nonce ^ 1,
                    ..fence
                },
            };
            let op = match draw.below(20) {
                0..=6 => {
                    let value: Vec<u8> = (0..draw.below(9)).map(|_| draw.next() as u8).collect();
                    CoordOp::Put {
                        op: OpId(step),
                        fence: used,
                        origin: Origin {
                            node: node(draw.pick(&["m1", "m2"])),
                            incarnation: 1 + draw.below(2),
                            request: draw.below(40),
                        },
                        key: draw.pick(&KEYS).into(),
                        value: Payload::from(value),
                    }
                }
                7..=12 => {
                    let name = draw.pick(&NAMES);
                    let limit = match name {
                        "lock" => 1,
                        "pair" if draw.below(6) > 0 => 2,
                        _ => 1 + draw.below(3) as u32,
                    };
                    let expires_ns = match draw.below(3) {
                        0 => u64::MAX - draw.below(3),
                        1 => (1 << 63) + draw.below(3),
                        _ => draw.next(),
                    };
                    CoordOp::Grant {
                        op: OpId(step),
                        fence: used,
                        name: name.into(),
                        limit,
                        holder: node(draw.pick(&["h1", "h2", "h3"])),
                        incarnation: 1 + draw.below(2),
                        ticket: draw.below(4),
                        expires_ns,
                    }
                }
                13..=16 => CoordOp::Free {
                    op: OpId(step),
                    fence: used,
                    name: draw.pick(&NAMES).into(),
                    token: draw.below(8),
                },
                17 => CoordOp::LoadPermits { op: OpId(step) },
                18 => {
                    // A takeover: a new holder, the next token.
                    holder += 1;
                    let token = diff.lease.as_ref().map_or(1, |row| row.token.0 + 1);
                    fence = diff.lease(write_by(&format!("leader{holder}"), holder, token, 1));
                    continue;
                }
                _ => {
                    // A release: no holder, the token kept.
                    if let Some(row) = diff.lease.clone() {
                        diff.lease(LeaseWrite {
                            holder: None,
                            token: row.token,
                            expires_ns: 2,
                        });
                    }
                    continue;
                }
            };
            diff.run(&what, &op);
        }
        assert!(
            diff.model.revision() > 10 && diff.model.permits().count() > 0,
            "[{check}] seed {seed:#x}: the sequence wrote too little to compare: {:?}",
            diff.model
        );
        diff.reads_agree(&KEYS, &PREFIXES);
    }
}

/// A write fenced on an old token, on the right token with another
/// nonce, on a released lease or on a group with no lease row is refused
/// (`Fenced`) and writes nothing: no revision, no permit, no freed permit.
pub fn fenced_writes_are_refused_and_write_nothing<H: Harness>(harness: &H) {
    let check = "fenced_writes_are_refused_and_write_nothing";
    let store = harness.open();
    let mut diff = Differential::new(check, &store, fresh_group(check));
    let stale = [
        Fence {
            token: Term(1),
            nonce: 11,
        },
        Fence {
            token: Term(0),
            nonce: 0,
        },
    ];
    for (i, fence) in stale.iter().enumerate() {
        for op in [
            put(*fence, "m", i as u64, "k", b"v"),
            grant(*fence, "lock", 1, "h", 1),
            free(*fence, "lock", 1),
        ] {
            assert_eq!(
                diff.run("a write to a group without a lease row", &op),
                CoordReply::Fenced
            );
        }
    }
    let old = diff.lease(write_by("old", 11, 1, 100));
    assert_eq!(
        diff.run("put by the holder", &put(old, "m", 1, "k", b"old")),
        CoordReply::Put { revision: 1 }
    );
    assert_eq!(
        diff.run("grant by the holder", &grant(old, "lock", 1, "h", 1)),
        CoordReply::Granted { token: 1 }
    );
    let new = diff.lease(write_by("new", 22, 2, 200));
    let refused = [
        ("the old token and nonce", old),
        (
            "the new token with the old nonce",
            Fence {
                token: new.token,
                nonce: old.nonce,
            },
        ),
        (
            "the old token with the new nonce",
            Fence {
                token: old.token,
                nonce: new.nonce,
            },
        ),
    ];
    for (what, fence) in refused {
        for op in [
            put(fence, "m", 2, "k", b"stale"),
            put(fence, "m", 3, "other", b"stale"),
            grant(fence, "lock", 1, "h2", 2),
            grant(fence, "fresh", 5, "h2", 2),
            free(fence, "lock", 1),
        ] {
            assert_eq!(
                diff.run(&format!("a write fenced on {what}"), &op),
                CoordReply::Fenced
            );
        }
    }
    // The new holder releases the lease: even its own fence is refused.
    diff.lease(LeaseWrite {
        holder: None,
        token: new.token,
        expires_ns: 300,
    });
    for op in [
        put(new, "m", 4, "k", b"released"),
        grant(new, "lock", 1, "h3", 3),
        free(new, "lock", 1),
    ] {
        assert_eq!(
            diff.run("a write fenced on a released lease", &op),
            CoordReply::Fenced
        );
    }
    diff.reads_agree(&["k", "other"], &["", "k", "o"]);
    let coord = coord_of(check, &store);
    assert_eq!(
        ok(check, "history", coord.kv_history(&diff.group, "k")).len(),
        1,
        "[{check}] a refused put was written"
    );
}

/// Grants and frees of one lock, by different holders and across a
/// change of leader: every token is one more than the last, never reused.
pub fn tokens_strictly_increase_per_name<H: Harness>(harness: &H) {
    let check = "tokens_strictly_increase_per_name";
    let store = harness.open();
    let mut diff = Differential::new(check, &store, fresh_group(check));
    let mut fence = diff.lease(write_by("l1", 1, 1, 10));
    let mut last = 0;
    for round in 1..=12u64 {
        if round == 7 {
            fence = diff.lease(write_by("l2", 2, 2, 20));
        }
        let holder = format!("h{}", round % 3);
        let token = match diff.run("grant", &grant(fence, "lock", 1, &holder, round)) {
            CoordReply::Granted { token } => token,
            other => panic!("[{check}] round {round}: expected Granted, got {other:?}"),
        };
        assert_eq!(token, last + 1, "[{check}] round {round}: the token");
        last = token;
        // Another name keeps its own sequence.
        assert_eq!(
            diff.run("grant", &grant(fence, &format!("other{round}"), 1, "x", 1)),
            CoordReply::Granted { token: 1 }
        );
        assert_eq!(
            diff.run("free", &free(fence, "lock", token)),
            CoordReply::Freed
        );
    }
    diff.reads_agree(&[], &[]);
}

/// A put whose origin was stored already answers that revision and
/// writes nothing (also when retried by the next leader); a grant retried
/// with the same `(name, holder, incarnation, ticket)` answers its token.
pub fn duplicates_are_recognised<H: Harness>(harness: &H) {
    let check = "duplicates_are_recognised";
    let store = harness.open();
    let mut diff = Differential::new(check, &store, fresh_group(check));
    let fence = diff.lease(write_by("l1", 1, 1, 10));
    assert_eq!(
        diff.run("put", &put(fence, "m", 1, "k", b"first")),
        CoordReply::Put { revision: 1 }
    );
    assert_eq!(
        diff.run(
            "the same origin, another key and value",
            &put(fence, "m", 1, "j", b"second")
        ),
        CoordReply::Duplicate { revision: 1 }
    );
    assert_eq!(
        diff.run("another request", &put(fence, "m", 2, "k", b"third")),
        CoordReply::Put { revision: 2 }
    );
    let mut other_incarnation = put(fence, "m", 1, "k", b"fourth");
    if let CoordOp::Put { origin, .. } = &mut other_incarnation {
        origin.incarnation = 2;
    }
    assert_eq!(
        diff.run("another incarnation", &other_incarnation),
        CoordReply::Put { revision: 3 }
    );
    let next = diff.lease(write_by("l2", 2, 2, 20));
    assert_eq!(
        diff.run(
            "retried by the next leader",
            &put(next, "m", 1, "k", b"first")
        ),
        CoordReply::Duplicate { revision: 1 }
    );
    assert_eq!(
        diff.run("grant", &grant(next, "s", 2, "h", 7)),
        CoordReply::Granted { token: 1 }
    );
    let mut retried = grant(next, "s", 2, "h", 7);
    if let CoordOp::Grant { expires_ns, op, .. } = &mut retried {
        *expires_ns = 99_999;
        *op = OpId(1234);
    }
    assert_eq!(
        diff.run("the grant retried", &retried),
        CoordReply::Granted { token: 1 }
    );
    let mut restarted = grant(next, "s", 2, "h", 7);
    if let CoordOp::Grant { incarnation, .. } = &mut restarted {
        *incarnation = 2;
    }
    assert_eq!(
        diff.run("the same ticket of a restarted holder", &restarted),
        CoordReply::Granted { token: 2 }
    );
    diff.reads_agree(&["k", "j"], &[""]);
}

/// A semaphore never has more permits than its limit; another limit is
/// refused while permits are held and taken once none are; freeing an
/// absent permit is `Freed`.
pub fn limits_are_kept<H: Harness>(harness: &H) {
    let check = "limits_are_kept";
    let store = harness.open();
    let mut diff = Differential::new(check, &store, fresh_group(check));
    let f = diff.lease(write_by("l", 1, 1, 10));
    let steps = [
        (grant(f, "s", 2, "a", 1), CoordReply::Granted { token: 1 }),
        (grant(f, "s", 2, "b", 1), CoordReply::Granted { token: 2 }),
        (grant(f, "s", 2, "c", 1), CoordReply::Full { held: 2 }),
        (
            grant(f, "s", 3, "c", 1),
            CoordReply::LimitConflict { stored: 2 },
        ),
        (free(f, "s", 1), CoordReply::Freed),
        (free(f, "s", 1), CoordReply::Freed),
        (free(f, "s", 77), CoordReply::Freed),
        (free(f, "never", 1), CoordReply::Freed),
        (
            grant(f, "s", 1, "c", 2),
            CoordReply::LimitConflict { stored: 2 },
        ),
        (grant(f, "s", 2, "c", 2), CoordReply::Granted { token: 3 }),
        (free(f, "s", 2), CoordReply::Freed),
        (free(f, "s", 3), CoordReply::Freed),
        // Nothing held: the limit may change, the token still grows.
        (grant(f, "s", 1, "d", 1), CoordReply::Granted { token: 4 }),
        (grant(f, "s", 1, "e", 1), CoordReply::Full { held: 1 }),
        (free(f, "s", 4), CoordReply::Freed),
        (grant(f, "s", 0, "e", 1), CoordReply::Full { held: 0 }),
        (grant(f, "s", 3, "e", 1), CoordReply::Granted { token: 5 }),
    ];
    for (i, (op, want)) in steps.iter().enumerate() {
        assert_eq!(
            &diff.run(&format!("step {i}"), op),
            want,
            "[{check}] step {i}"
        );
    }
    diff.reads_agree(&[], &[]);
}

/// Runs `call(i, store)` on [`RACERS`] threads, each with its own
/// handle that has read `group` once, released together; the answers in
/// thread order.
fn race_coord<H: Harness + Sync>(
    harness: &H,
    group: &str,
    call: impl Fn(usize, &dyn CoordStore) -> Result<CoordReply, StoreError> + Sync,
) -> Vec<CoordReply> {
    let check = "race_coord";
    let stores: Vec<H::Store> = (0..RACERS).map(|_| harness.open()).collect();
    let start = Barrier::new(RACERS);
    std::thread::scope(|scope| {
        let handles: Vec<_> = stores
            .iter()
            .enumerate()
            .map(|(i, store)| {
                let (start, call) = (&start, &call);
                scope.spawn(move || {
                    let coord = coord_of(check, store);
                    // A handle's first call may create the tables; not
                    // part of the race.
                    let warm = coord.kv_get(group, "warm-up");
                    start.wait();
                    ok(check, "warm-up", warm);
                    call(i, coord)
                })
            })
            .collect();
        handles
            .into_iter()
            .enumerate()
            .map(|(i, h)| {
                let answer = h
                    .join()
                    .unwrap_or_else(|_| panic!("a racing thread panicked inside the store"));
                ok(check, &format!("racer {i}"), answer)
            })
            .collect()
    })
}

/// [`RACERS`] threads, each with its own handle, ask for the one permit
/// of a lock at once: exactly one is granted (token 1), every other is
/// told the lock is full, and one permit is stored.
pub fn concurrent_grants_of_one_permit_have_one_winner<H: Harness + Sync>(harness: &H) {
    let check = "concurrent_grants_of_one_permit_have_one_winner";
    let store = harness.open();
    let group = fresh_group(check);
    let write = write_by("l", 1, 1, 10);
    applied(check, "lease", store.compare_and_set(&group, None, &write));
    let fence = fence_of(&write);
    let answers = race_coord(harness, &group, |i, coord| {
        coord.execute(&group, &grant(fence, "lock", 1, &format!("n{i}"), 1))
    });
    let winners: Vec<usize> = (0..RACERS)
        .filter(|&i| answers[i] == CoordReply::Granted { token: 1 })
        .collect();
    assert_eq!(winners.len(), 1, "[{check}] one winner: {answers:?}");
    for (i, answer) in answers.iter().enumerate() {
        if i != winners[0] {
            assert_eq!(answer, &CoordReply::Full { held: 1 }, "[{check}] racer {i}");
        }
    }
    let load = CoordOp::LoadPermits { op: OpId(0) };
    match ok(
        check,
        "load",
        coord_of(check, &store).execute(&group, &load),
    ) {
        CoordReply::Permits { permits, .. } => {
            let holders: Vec<&str> = permits.iter().map(|p| p.holder.as_str()).collect();
            assert_eq!(holders, [format!("n{}", winners[0])], "[{check}] stored");
        }
        other => panic!("[{check}] load: {other:?}"),
    }
}

/// [`RACERS`] threads put at once: their revisions are exactly
/// `1..=RACERS`, each once, and the history holds them in that order.
pub fn concurrent_puts_get_distinct_revisions<H: Harness + Sync>(harness: &H) {
    let check = "concurrent_puts_get_distinct_revisions";
    let store = harness.open();
    let group = fresh_group(check);
    let write = write_by("l", 1, 1, 10);
    applied(check, "lease", store.compare_and_set(&group, None, &write));
    let fence = fence_of(&write);
    let answers = race_coord(harness, &group, |i, coord| {
        coord.execute(&group, &put(fence, &format!("n{i}"), 1, "k", &[i as u8]))
    });
    let mut revisions: Vec<u64> = answers
        .iter()
        .map(|answer| match answer {
            CoordReply::Put { revision } => *revision,
            other => panic!("[{check}] expected Put, got {other:?}"),
        })
        .collect();
    revisions.sort_unstable();
    let all: Vec<u64> = (1..=RACERS as u64).collect();
    assert_eq!(revisions, all, "[{check}] revisions");
    let history = ok(
        check,
        "history",
        coord_of(check, &store).kv_history(&group, "k"),
    );
    for (i, answer) in answers.iter().enumerate() {
        let CoordReply::Put { revision } = answer else {
            continue;
        };
        let entry: Option<&KvEntry> = history.iter().find(|e| e.revision == *revision);
        assert_eq!(
            entry.map(|e| e.value.as_slice()),
            Some(&[i as u8][..]),
            "[{check}] racer {i}'s revision {revision}"
        );
    }
}

/// While the store is down a fenced write and a read return within
/// [`Harness::down_deadline`], the write as an error (a read may be
/// served, then with the truth); once it is back the write, retried with
/// its origin, lands exactly once.
pub fn coord_store_down_is_an_error_then_recovers<H: Harness>(harness: &H) {
    let check = "coord_store_down_is_an_error_then_recovers";
    let store = harness.open();
    let group = fresh_group(check);
    let write = write_by("l", 1, 1, 10);
    applied(check, "lease", store.compare_and_set(&group, None, &write));
    let fence = fence_of(&write);
    let coord = coord_of(check, &store);
    let first = put(fence, "m", 1, "k", b"before");
    assert_eq!(
        ok(check, "put before", coord.execute(&group, &first)),
        CoordReply::Put { revision: 1 }
    );
    let before = ok(check, "get before", coord.kv_get(&group, "k"));
    harness.take_down();
    let deadline = harness.down_deadline();
    let second = put(fence, "m", 2, "k", b"during");
    for attempt in 0..2 {
        let started = Instant::now();
        let result = coord.execute(&group, &second);
        let took = started.elapsed();
        assert!(
            result.is_err(),
            "[{check}] put {attempt} while down: expected an error, got {result:?}"
        );
        assert!(
            took <= deadline,
            "[{check}] put {attempt} while down took {took:?} (deadline {deadline:?})"
        );
        let started = Instant::now();
        let result = coord.kv_get(&group, "k");
        let took = started.elapsed();
        assert!(
            took <= deadline,
            "[{check}] get {attempt} while down took {took:?} (deadline {deadline:?})"
        );
        if let Ok(entry) = result {
            assert_eq!(entry, before, "[{check}] a read while down was wrong");
        }
    }
    harness.bring_back();
    // The failed put may have landed (a timeout); its retry says where.
    let started = Instant::now();
    let answer = loop {
        match coord.execute(&group, &second) {
            Ok(answer) => break answer,
            Err(e) if started.elapsed() < Duration::from_secs(30) => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("[{check}] the store did not come back within 30 s: {e}"),
        }
    };
    assert!(
        matches!(
            answer,
            CoordReply::Put { revision: 2 } | CoordReply::Duplicate { revision: 2 }
        ),
        "[{check}] the retried put: {answer:?}"
    );
    let history = ok(check, "history after", coord.kv_history(&group, "k"));
    let values: Vec<&[u8]> = history.iter().map(|e| e.value.as_slice()).collect();
    assert_eq!(values, [&b"before"[..], &b"during"[..]], "[{check}]");
}

/// Environment variables the child processes of
/// [`permit_race_in_processes`] and [`fenced_while_another_process_holds`]
/// read, besides [`race_env::NAME`] and [`race_env::OUT`].
pub mod coord_race_env {
    /// The group; its presence makes a permit-race child run.
    pub const GROUP: &str = "HEDGEROW_PERMIT_RACE_GROUP";
    /// The group; its presence makes a takeover child run.
    pub const TAKEOVER_GROUP: &str = "HEDGEROW_TAKEOVER_GROUP";
    /// The fence the children write with, `token:nonce`.
    pub const FENCE: &str = "HEDGEROW_PERMIT_RACE_FENCE";
    /// The last token at which the children stop.
    pub const TARGET: &str = "HEDGEROW_PERMIT_RACE_TARGET";
    /// Unix ms at which the children start, together.
    pub const START_MS: &str = "HEDGEROW_PERMIT_RACE_START_MS";
    /// The file whose appearance tells a takeover child to exit.
    pub const DONE: &str = "HEDGEROW_TAKEOVER_DONE";
}

/// The lock the processes race for.
const RACED_LOCK: &str = "raced-lock";

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Parent side of the cross-process permit race: takes the lease of a
/// fresh group, then starts `children` copies of the current test binary
/// running `child_test` (which must call [`permit_race_child`]), with
/// `env` added (how to reach the store). Each child grants itself the one
/// permit of a lock, checks it is the only permit stored, frees it, and
/// again, until the lock's last token reaches `target`. Checks that every
/// token `1..=last` was granted to exactly one process, that no child saw
/// an error or a second permit, that at least two processes won and some
/// grants were refused as full (they did race), and that nothing is held
/// at the end.
pub fn permit_race_in_processes<S: LeaseStore>(
    store: &S,
    child_test: &str,
    env: &[(&str, &str)],
    children: usize,
    target: u64,
    scratch: &Path,
) {
    let check = "separate_processes_never_both_hold_a_permit";
    let group = fresh_group(check);
    let write = write_by("leader", 7, 3, u64::MAX);
    applied(check, "lease", store.compare_and_set(&group, None, &write));
    let fence = fence_of(&write);
    let names: Vec<String> = (0..children).map(|i| format!("proc-{i}")).collect();
    let vars = [
        (coord_race_env::GROUP, group.clone()),
        (
            coord_race_env::FENCE,
            format!("{}:{}", fence.token.0, fence.nonce),
        ),
        (coord_race_env::TARGET, target.to_string()),
        (coord_race_env::START_MS, (now_ms() + 1500).to_string()),
    ];
    let spawned = spawn_children(check, child_test, &names, &vars, env, scratch);
    let (owner, winners, full) = collect_wins(check, spawned, "token");
    let load = CoordOp::LoadPermits { op: OpId(0) };
    let (semaphores, permits) =
        match ok(check, "load", coord_of(check, store).execute(&group, &load)) {
            CoordReply::Permits {
                semaphores,
                permits,
            } => (semaphores, permits),
            other => panic!("[{check}] load: {other:?}"),
        };
    assert_eq!(permits, [], "[{check}] every permit was freed");
    let last = semaphores
        .iter()
        .find(|s| s.name == RACED_LOCK)
        .map_or(0, |s| s.last_token);
    assert!(last >= target, "[{check}] the race stopped at token {last}");
    let claimed: Vec<u64> = owner.keys().copied().collect();
    let all: Vec<u64> = (1..=last).collect();
    assert_eq!(
        claimed, all,
        "[{check}] every token must be granted to exactly one process"
    );
    eprintln!("{check}: {winners} processes won, {full} grants refused as full, {last} tokens");
    assert!(
        winners >= 2 && full > 0,
        "[{check}] {winners} processes won and {full} grants were refused: the processes did \
         not race"
    );
}

fn var(key: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| panic!("coord race child: {key} is not set"))
}

fn fence_var() -> Fence {
    let text = var(coord_race_env::FENCE);
    let parsed = text
        .split_once(':')
        .and_then(|(t, n)| Some((t.parse().ok()?, n.parse().ok()?)));
    let (token, nonce) = parsed.unwrap_or_else(|| panic!("coord race child: fence {text:?}"));
    Fence {
        token: Term(token),
        nonce,
    }
}

/// Child side of [`permit_race_in_processes`]: when its variables are
/// set, opens the store with `open`, races and writes `won <token>`,
/// `lost full` or `error …` lines to its result file, then returns `true`.
/// Without them it does nothing and returns `false`.
pub fn permit_race_child<S: LeaseStore>(open: impl FnOnce() -> S) -> bool {
    let Ok(group) = std::env::var(coord_race_env::GROUP) else {
        return false;
    };
    let name = var(race_env::NAME);
    let fence = fence_var();
    let target: u64 = var(coord_race_env::TARGET)
        .parse()
        .unwrap_or_else(|e| panic!("coord race child: target: {e}"));
    let start_ms: u128 = var(coord_race_env::START_MS)
        .parse()
        .unwrap_or_else(|e| panic!("coord race child: start: {e}"));
    let out = PathBuf::from(var(race_env::OUT));
    let store = open();
    let coord = coord_of("permit_race_child", &store);
    let load = CoordOp::LoadPermits { op: OpId(0) };
    // The first call may create the tables; not part of the race.
    let _ = coord.execute(&group, &load);
    while now_ms() < start_ms {
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut lines = String::new();
    for ticket in 0.. {
        let (semaphores, permits) = match coord.execute(&group, &load) {
            Ok(CoordReply::Permits {
                semaphores,
                permits,
            }) => (semaphores, permits),
            other => {
                lines.push_str(&format!("error load: {other:?}\n"));
                break;
            }
        };
        let _ = permits;
        if semaphores
            .iter()
            .any(|s| s.name == RACED_LOCK && s.last_token >= target)
        {
            break;
        }
        let op = CoordOp::Grant {
            op: OpId(ticket),
            fence,
            name: RACED_LOCK.into(),
            limit: 1,
            holder: node(&name),
            incarnation: u64::from(std::process::id()),
            ticket,
            expires_ns: u64::MAX,
        };
        match coord.execute(&group, &op) {
            Ok(CoordReply::Granted { token }) => {
                // Held: no other permit of the lock may be stored now.
                match coord.execute(&group, &load) {
                    Ok(CoordReply::Permits { permits, .. }) => {
                        let held: Vec<u64> = permits
                            .iter()
                            .filter(|p| p.name == RACED_LOCK)
                            .map(|p| p.token)
                            .collect();
                        if held != [token] {
                            lines.push_str(&format!(
                                "error holding token {token}, the store holds {held:?}\n"
                            ));
                            break;
                        }
                    }
                    other => {
                        lines.push_str(&format!("error load while holding: {other:?}\n"));
                        break;
                    }
                }
                lines.push_str(&format!("won {token}\n"));
                // Hold it a moment, so that others ask while it is held
                // (SQLite's busy handler otherwise lets them in only
                // between a free and the next grant).
                std::thread::sleep(Duration::from_millis(3));
                let freed = coord.execute(&group, &free(fence, RACED_LOCK, token));
                if freed != Ok(CoordReply::Freed) {
                    lines.push_str(&format!("error free {token}: {freed:?}\n"));
                    break;
                }
                // As in the lease race: a winner steps back for a moment so
                // that a store handing its lock to the last holder still
                // lets others in.
                std::thread::sleep(Duration::from_millis(2));
            }
            Ok(CoordReply::Full { held: 1 }) => {
                lines.push_str("lost full\n");
                // Ask again soon, not in a tight loop on a shared machine.
                std::thread::sleep(Duration::from_millis(1));
            }
            other => {
                lines.push_str(&format!("error grant: {other:?}\n"));
                break;
            }
        }
    }
    std::fs::write(&out, lines)
        .unwrap_or_else(|e| panic!("coord race child: write {}: {e}", out.display()));
    true
}

/// Parent side of the takeover check: this process takes the lease with
/// a short expiry and writes under it; a child process (the current test
/// binary running `child_test`, which must call [`takeover_child`]) waits
/// for the lease to expire, takes it over with the next token and puts
/// under its own fence. While that child holds the lease, every write
/// fenced on this process's old lease is refused and writes nothing.
pub fn fenced_while_another_process_holds<S: LeaseStore>(
    store: &S,
    child_test: &str,
    env: &[(&str, &str)],
    scratch: &Path,
) {
    let check = "fenced_while_another_process_holds";
    let group = fresh_group(check);
    let mut diff = Differential::new(check, store, group.clone());
    let expires_ns = now_ns() + 300_000_000;
    let old = diff.lease(write_by("old", 1, 1, expires_ns));
    assert_eq!(
        diff.run("put while holding", &put(old, "m", 1, "k", b"old")),
        CoordReply::Put { revision: 1 }
    );
    assert_eq!(
        diff.run("grant while holding", &grant(old, "lock", 1, "h", 1)),
        CoordReply::Granted { token: 1 }
    );
    let done = scratch.join("takeover.done");
    let vars = [
        (coord_race_env::TAKEOVER_GROUP, group.clone()),
        (coord_race_env::DONE, done.to_string_lossy().into_owned()),
    ];
    let mut spawned = spawn_children(check, child_test, &["taker".into()], &vars, env, scratch);
    let (name, out, mut child) = spawned.remove(0);
    let started = Instant::now();
    let line = loop {
        if let Ok(text) = std::fs::read_to_string(&out) {
            if text.ends_with('\n') {
                break text;
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("[{check}] {name} exited ({status}) before taking over");
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "[{check}] {name} did not take over within 60 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(line.starts_with("took "), "[{check}] {name}: {line}");
    // The child is alive and holds the lease.
    assert!(
        matches!(child.try_wait(), Ok(None)),
        "[{check}] {name} exited"
    );
    diff.lease = ok(check, "read the lease", store.read(&group));
    let holder = diff.lease.as_ref().and_then(|row| row.holder.clone());
    assert_eq!(
        holder.as_ref().map(|h| h.id.as_str()),
        Some("taker"),
        "[{check}] the lease row names the child"
    );
    // The child's put under its own fence, as the model sees it.
    let taker = Fence {
        token: diff.lease.as_ref().map_or(Term(0), |row| row.token),
        nonce: holder.as_ref().map_or(0, |h| h.nonce),
    };
    execute_coord(
        &mut diff.model,
        diff.lease.as_ref(),
        &put(taker, "taker", 1, "k", b"new"),
    );
    for op in [
        put(old, "m", 2, "k", b"stale"),
        put(old, "m", 3, "j", b"stale"),
        grant(old, "lock", 1, "h2", 2),
        grant(old, "other", 1, "h2", 2),
        free(old, "lock", 1),
    ] {
        assert_eq!(
            diff.run("a write fenced on the expired lease", &op),
            CoordReply::Fenced
        );
    }
    diff.reads_agree(&["k", "j"], &[""]);
    std::fs::write(&done, b"done").unwrap_or_else(|e| panic!("[{check}] write done: {e}"));
    let status = child
        .wait()
        .unwrap_or_else(|e| panic!("[{check}] wait for {name}: {e}"));
    assert!(status.success(), "[{check}] {name} failed: {status}");
}

/// Child side of [`fenced_while_another_process_holds`]: when its
/// variables are set, waits for the lease to expire, takes it over, puts
/// `k = new` under its own fence, writes `took <token>` to its result
/// file and holds on until the parent says it is done; returns `true`.
/// Without them it does nothing and returns `false`.
pub fn takeover_child<S: LeaseStore>(open: impl FnOnce() -> S) -> bool {
    let Ok(group) = std::env::var(coord_race_env::TAKEOVER_GROUP) else {
        return false;
    };
    let out = PathBuf::from(var(race_env::OUT));
    let done = PathBuf::from(var(coord_race_env::DONE));
    let store = open();
    let fail = |what: String| -> ! {
        let _ = std::fs::write(&out, format!("error {what}\n"));
        panic!("takeover child: {what}");
    };
    let row = match store.read(&group) {
        Ok(Some(row)) => row,
        other => fail(format!("read: {other:?}")),
    };
    // Take over only once the lease has expired, as a candidate would.
    while now_ns() <= row.expires_ns {
        std::thread::sleep(Duration::from_millis(10));
    }
    let write = write_by(
        "taker",
        u64::from(std::process::id()),
        row.token.0 + 1,
        u64::MAX,
    );
    match store.compare_and_set(&group, Some(row.version), &write) {
        Ok(CasOutcome::Applied(_)) => {}
        other => fail(format!("take over: {other:?}")),
    }
    let coord = coord_of("takeover_child", &store);
    let mine = put(fence_of(&write), "taker", 1, "k", b"new");
    match coord.execute(&group, &mine) {
        Ok(CoordReply::Put { .. }) => {}
        other => fail(format!("put: {other:?}")),
    }
    if let Err(e) = std::fs::write(&out, format!("took {}\n", write.token.0)) {
        fail(format!("write {}: {e}", out.display()));
    }
    let started = Instant::now();
    while !done.exists() {
        if started.elapsed() > Duration::from_secs(120) {
            fail("the parent never said done".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    /// A store that skips the fence: it applies every write as if the
    /// writer held the lease.
    #[derive(Clone, Default)]
    struct Unfenced {
        lease: MemoryStore,
        tables: std::sync::Arc<std::sync::Mutex<CoordTables>>,
    }

    impl Unfenced {
        fn tables(&self) -> std::sync::MutexGuard<'_, CoordTables> {
            self.tables.lock().unwrap_or_else(|p| p.into_inner())
        }
    }

    impl LeaseStore for Unfenced {
        fn read(&self, group: &str) -> Result<Option<LeaseRow>, StoreError> {
            self.lease.read(group)
        }
        fn compare_and_set(
            &self,
            group: &str,
            expected_version: Option<u64>,
            write: &LeaseWrite,
        ) -> Result<CasOutcome, StoreError> {
            self.lease.compare_and_set(group, expected_version, write)
        }
        fn coord(&self) -> Option<&dyn CoordStore> {
            Some(self)
        }
    }

    impl CoordStore for Unfenced {
        fn execute(&self, _group: &str, op: &CoordOp) -> Result<CoordReply, StoreError> {
            let forged = match op {
                CoordOp::Put { fence, .. }
                | CoordOp::Grant { fence, .. }
                | CoordOp::Free { fence, .. } => Some(LeaseRow {
                    holder: Some(crate::store::Holder {
                        id: node("forged"),
                        nonce: fence.nonce,
                        addr: String::new(),
                    }),
                    token: fence.token,
                    expires_ns: 0,
                    version: 1,
                }),
                CoordOp::LoadPermits { .. } => None,
            };
            Ok(execute_coord(&mut self.tables(), forged.as_ref(), op))
        }
        fn kv_get(&self, _: &str, k: &str) -> Result<Option<KvEntry>, StoreError> {
            Ok(self.tables().get(k).cloned())
        }
        fn kv_get_at(&self, _: &str, k: &str, r: u64) -> Result<Option<KvEntry>, StoreError> {
            Ok(self.tables().get_at(k, r).cloned())
        }
        fn kv_history(&self, _: &str, k: &str) -> Result<Vec<KvEntry>, StoreError> {
            Ok(self.tables().history(k))
        }
        fn kv_list(&self, _: &str, p: &str) -> Result<Vec<KvEntry>, StoreError> {
            Ok(self.tables().list(p))
        }
        fn kv_changes(
            &self,
            _: &str,
            p: &str,
            a: u64,
            l: usize,
        ) -> Result<Vec<KvEntry>, StoreError> {
            Ok(self.tables().changes(p, a, l))
        }
    }

    struct UnfencedHarness(Unfenced);

    impl Harness for UnfencedHarness {
        type Store = Unfenced;
        fn open(&self) -> Unfenced {
            self.0.clone()
        }
        fn take_down(&self) {}
        fn bring_back(&self) {}
        fn down_deadline(&self) -> Duration {
            Duration::from_millis(100)
        }
    }

    #[test]
    fn a_store_that_skips_the_fence_fails() {
        let harness = UnfencedHarness(Unfenced::default());
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            fenced_writes_are_refused_and_write_nothing(&harness)
        }));
        let why = caught.err().map(|e| {
            e.downcast_ref::<String>()
                .cloned()
                .unwrap_or_else(|| "a panic".into())
        });
        assert!(
            why.as_deref()
                .is_some_and(|w| w.contains("execute_coord answers Fenced")),
            "{why:?}"
        );
    }
}
