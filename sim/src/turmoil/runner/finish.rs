//! The end of a run: the log is sorted, leadership intervals are rebuilt
//! from the store's applied writes and the hosts' records, every checker
//! reads the log, and the report gets its counts, load and trace hash.
//! Nothing here steps the simulation.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::sync::atomic::Ordering;
use std::time::Duration;

use hedgerow_core::{NodeId, Term};

use super::record::{lock, name, slot_of, Rec, What};
use super::{Runner, Slot, TurmoilReport};
use crate::check::kv::Puts;
use crate::check::leadership::Leadership;
use crate::check::permits::Permits;
use crate::check::requests::{Handling, Requests};
use crate::check::streams::{check_delivery, Seen};
use crate::check::views::ViewOrder;
use crate::check::{tokens, Violation};
use crate::report::{Record, Recorder};
use crate::turmoil::store::Applied;

impl Runner<'_> {
    /// Stops recording, checks the whole log and hands back the report.
    pub(super) fn finish(mut self) -> TurmoilReport {
        let end = self.now();
        for s in self.live() {
            self.forget(s);
        }
        let mut report = std::mem::take(&mut self.report);
        report.messages_sent = std::mem::take(&mut self.messages);
        let mut log = std::mem::take(&mut lock(&self.shared).log);
        log.sort_by_key(|r| (r.t, r.seq));
        let applied = lock(&self.store).applied.clone();

        let lead = leadership(&log, &applied, &self.slots);
        let mut violations = Vec::new();
        let intervals = lead.intervals(end);
        violations.extend(lead.check(end));
        violations.extend(tokens::check(&intervals));
        violations.extend(self.read_log(&log, &lead, &mut report));
        report.failovers = self.failovers(&log);
        violations.extend(self.check_coord(&log, end, &mut report));
        self.explain(&log, &mut violations);
        let mut stream_violations = check_streams(&log, &mut report);
        self.explain(&log, &mut stream_violations);
        violations.extend(stream_violations);
        report.violations = violations;

        for (i, s) in self.slots.iter().enumerate().skip(1) {
            report
                .trace
                .bytes_sent
                .insert(name(i), s.bytes.load(Ordering::Relaxed));
        }
        report.trace.duration = Duration::from_nanos(end);
        report.node_seconds = node_seconds(&report.trace.live, end);
        report.trace_hash = trace_hash(&log, &applied);
        report.events = log.len() + applied.len();
        if let Some(recorder) = self.recorder.take() {
            report.record = Some(record(recorder, &log, end, &intervals, &report));
        }
        report
    }

    /// Runs the view, request and `is_leader()` checkers over the log, and
    /// fills in what the report counts from it (views, failure verdicts,
    /// sends, elections, step-downs).
    fn read_log(
        &self,
        log: &[Rec],
        lead: &Leadership,
        report: &mut TurmoilReport,
    ) -> Vec<Violation> {
        let mut violations = Vec::new();
        let mut views = ViewOrder::default();
        let mut requests = Requests::default();
        let mut last_view: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
        for r in log {
            let t = Duration::from_nanos(r.t);
            match &r.what {
                What::View(stamp, members) => {
                    violations.extend(views.observe(r.slot, r.inc, *stamp, r.t));
                    if self.opts.record_views && last_view.get(&r.slot) != Some(members) {
                        last_view.insert(r.slot, members.clone());
                        report.trace.views.push((t, name(r.slot), members.clone()));
                    }
                }
                What::Failed(subject) => {
                    report
                        .trace
                        .failed_reports
                        .push((t, name(r.slot), subject.clone()));
                }
                What::Handled { term, key } => {
                    violations.extend(requests.handled(
                        handling(lead, r, *term, key),
                        key.clone(),
                        r.t,
                    ));
                }
                What::SendFailed(_) => report.sends.1 += 1,
                What::Leads(term) => violations.extend(leads_outside_interval(lead, r, *term)),
                What::SendOk { leader, term, key } => {
                    report.sends.0 += 1;
                    violations.extend(requests.replied_ok(leader, *term, key, r.t));
                }
                What::Elected(term) => {
                    report.first_leader.get_or_insert(t);
                    report.elections.push((t, name(r.slot), *term));
                }
                What::SteppedDown(term) => report.step_downs.push((t, name(r.slot), *term)),
                _ => {}
            }
        }
        report.sends.2 = requests.handlings;
        violations
    }

    /// The coordination checkers over the log: permits never held by more
    /// than the limit at a true instant and lock tokens rising; every
    /// acknowledged put in the store once, at its revision, and in every
    /// later read of every node.
    fn check_coord(&self, log: &[Rec], end: u64, report: &mut TurmoilReport) -> Vec<Violation> {
        let mut permits = Permits::default();
        let mut puts = Puts::default();
        let mut reads = Vec::new();
        for r in log {
            match &r.what {
                What::Asked(name, limit) => permits.limit(name, *limit),
                What::Permits(held) => permits.observe(r.slot, r.inc, held.clone(), r.t),
                What::Crashed | What::Left(_) => permits.end(r.slot, r.t),
                What::PutOk {
                    key,
                    value,
                    revision,
                } => {
                    report.coord.0 += 1;
                    puts.acked_value(key, value, *revision, r.t);
                }
                What::PutFailed(_) => report.coord.1 += 1,
                What::KvSeen(start, seen) => reads.push((r.slot, *start, seen)),
                _ => {}
            }
        }
        report.coord.2 = permits.grants;
        report.coord.3 = reads.len() as u64;
        let mut violations: Vec<Violation> = permits.check(end).into_iter().collect();
        violations.extend(puts.check(&lock(&self.store).tables(super::CLUSTER)));
        for (slot, start, seen) in reads {
            violations.extend(puts.check_read(slot, start, seen));
        }
        violations
    }

    /// After each `crash leader`: how long until the next election.
    fn failovers(&self, log: &[Rec]) -> Vec<Option<Duration>> {
        self.crashes_of_leader
            .iter()
            .map(|c| {
                log.iter()
                    .find(|r| r.t >= *c && matches!(r.what, What::Elected(_)))
                    .map(|r| Duration::from_nanos(r.t - c))
            })
            .collect()
    }

    /// Names the seed in each violation and gives it the stretch of the
    /// log around it.
    fn explain(&self, log: &[Rec], violations: &mut [Violation]) {
        for v in violations {
            v.what = format!("seed {}: {}", self.seed, v.what);
            v.trace = trace_around(log, v.at_ns);
        }
    }
}

/// The run's record for its report: the runner's change points, each
/// node's view sizes from the log, and the checkers' verdicts.
fn record(
    mut recorder: Recorder,
    log: &[Rec],
    end: u64,
    intervals: &[crate::check::leadership::Interval],
    report: &TurmoilReport,
) -> Record {
    let mut inc: BTreeMap<usize, u64> = BTreeMap::new();
    for r in log {
        if let What::View(_, members) = &r.what {
            if inc.insert(r.slot, r.inc) != Some(r.inc) {
                recorder.new_process(r.slot);
            }
            recorder.view(r.slot, r.t, members.len());
        }
    }
    let mut rec = recorder.finish(end, intervals, &[], &report.violations);
    rec.runner = "turmoil".into();
    rec.seed = report.seed;
    rec.passed = report.passed();
    rec
}

/// Leadership intervals: a holder's belief starts no later than the store
/// applying its write (it learns of it after), extends with each renew to
/// the true instant its own clock's `latest` reaches the expiry, and ends
/// earlier when it steps down, crashes, restarts, or its clock turns
/// untrusted.
fn leadership(log: &[Rec], applied: &[Applied], slots: &[Slot]) -> Leadership {
    enum Ev<'a> {
        End(usize, Option<(u64, Term)>),
        Write(&'a Applied),
    }
    let mut evs: Vec<(u64, u8, usize, Ev)> = Vec::new();
    for (i, a) in applied.iter().enumerate() {
        evs.push((a.at_ns, 1, i, Ev::Write(a)));
    }
    for (i, r) in log.iter().enumerate() {
        let ev = match &r.what {
            What::SteppedDown(term) => Ev::End(r.slot, Some((r.inc, *term))),
            What::Crashed | What::Restarted | What::ClockUntrusted => Ev::End(r.slot, None),
            What::Left(_) => Ev::End(r.slot, Some((r.inc, Term(u64::MAX)))),
            _ => continue,
        };
        evs.push((r.t, 0, i, ev));
    }
    evs.sort_by_key(|e| (e.0, e.1, e.2));
    let mut lead = Leadership::default();
    let mut open: BTreeMap<usize, (u64, Term)> = BTreeMap::new();
    for (t, _, _, ev) in evs {
        match ev {
            Ev::Write(a) => {
                let Some(h) = &a.row.holder else { continue };
                let Some(slot) = slot_of(h.id.as_str()) else {
                    continue;
                };
                let Some(s) = slots.get(slot) else {
                    continue;
                };
                let end = s.clock.params().true_time_latest_reaches(a.row.expires_ns);
                lead.observe(slot, h.nonce, Some(a.row.token), end, t);
                open.insert(slot, (h.nonce, a.row.token));
            }
            Ev::End(slot, who) => {
                let ends = match (open.get(&slot), who) {
                    (None, _) => false,
                    (Some(_), None) => true,
                    (Some((inc, term)), Some((i2, t2))) => *inc == i2 && *term <= t2,
                };
                if ends {
                    // Inclusive of `t`: within that instant the node
                    // may have answered yes before it stepped down.
                    lead.end(slot, t + 1);
                    open.remove(&slot);
                }
            }
        }
    }
    lead
}

/// A request handling as the request checker sees it: whether the node
/// held a leadership interval under that term when it handled it.
fn handling(lead: &Leadership, r: &Rec, term: Term, key: &(NodeId, u64, u64)) -> Handling {
    let leading = lead
        .leaders_at(r.t)
        .iter()
        .any(|o| o.slot == r.slot && o.term == term);
    Handling {
        slot: r.slot,
        incarnation: r.inc,
        id: NodeId::new(name(r.slot)).unwrap_or_else(|_| key.0.clone()),
        term,
        leading,
    }
}

/// The API said "leader" under `term` outside every interval recorded for
/// that process and term.
fn leads_outside_interval(lead: &Leadership, r: &Rec, term: Term) -> Option<Violation> {
    let inside = lead
        .leaders_at(r.t)
        .iter()
        .any(|o| o.slot == r.slot && o.incarnation == r.inc && o.term == term);
    (!inside).then(|| Violation {
        invariant: "1 (the API's answer matches the leadership interval)",
        at_ns: r.t,
        what: format!(
            "n{} says it leads under term {term} outside its recorded interval",
            r.slot
        ),
        trace: Vec::new(),
    })
}

/// Counts the streams senders and receivers saw and checks that each
/// arrived whole or failed loudly.
fn check_streams(log: &[Rec], report: &mut TurmoilReport) -> Vec<Violation> {
    let seen: Vec<(u64, Seen)> = log
        .iter()
        .filter_map(|r| match &r.what {
            What::Stream(s) => Some((r.t, s.clone())),
            _ => None,
        })
        .collect();
    for (_, s) in &seen {
        match s {
            Seen::Sent { ok: true, .. } => report.streams.0 += 1,
            Seen::Sent { ok: false, .. } => report.streams.1 += 1,
            Seen::Ended { got, .. } => report.streams.2 += got,
            Seen::Opened { .. } => {}
        }
    }
    // A receiver that crashed, restarted or left after it opened a
    // stream may have died with bytes it had been handed unread.
    let gone_after = |slot: usize, t: u64| {
        log.iter().any(|r| {
            r.slot == slot
                && r.t >= t
                && matches!(r.what, What::Crashed | What::Restarted | What::Left(_))
        })
    };
    check_delivery(&seen, gone_after)
}

/// The log around `at`: twelve records before, three after.
fn trace_around(log: &[Rec], at: u64) -> Vec<String> {
    let i = log.partition_point(|r| r.t <= at);
    log[i.saturating_sub(12)..(i + 3).min(log.len())]
        .iter()
        .map(|r| format!("t={:.3}s n{} {:?}", r.t as f64 / 1e9, r.slot, r.what))
        .collect()
}

/// Node-seconds of life from the live-set changes, up to `end`.
fn node_seconds(live: &[(Duration, BTreeSet<String>)], end: u64) -> f64 {
    let mut ns = 0f64;
    for w in live.windows(2) {
        ns += (w[1].0 - w[0].0).as_secs_f64() * w[0].1.len() as f64;
    }
    if let Some((t, set)) = live.last() {
        ns += (Duration::from_nanos(end).saturating_sub(*t)).as_secs_f64() * set.len() as f64;
    }
    ns
}

/// The whole run's fingerprint: every record and every applied write.
fn trace_hash(log: &[Rec], applied: &[Applied]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    log.hash(&mut h);
    applied.len().hash(&mut h);
    for a in applied {
        (a.at_ns, &a.row).hash(&mut h);
    }
    h.finish()
}
