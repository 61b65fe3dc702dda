//! The pictures, opened in headless Chromium: a simulator run's report
//! (lanes, leadership intervals, violations), a sweep's index, and the
//! live page of `hedgerow node --http`, which must show a new leader after
//! the test kills the old one. Each saves a PNG in its temp dir. Without
//! Chromium these skip, saying so (CI=true makes that a failure).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::fs::File;
use std::path::Path;
use std::time::Duration;

use hedgerow_sim::report::{self, Record};
use hedgerow_sim::scenario::{self, Scenario};
use hedgerow_sim::turmoil::TurmoilOptions;
use hedgerow_sim::{Cluster, ClusterConfig, SimClock};
use hedgerow_tests::browser::Chromium;
use hedgerow_tests::{log_tails, one_at_a_time, status, temp_dir, wait_until, NodeCommand};

const HEDGEROW: &str = env!("CARGO_BIN_EXE_hedgerow-under-test");

/// Elements the page's script drew that start with `prefix` (the script's
/// own text has the same markup with `${` after it).
fn drawn(dom: &str, prefix: &str) -> usize {
    dom.matches(prefix).count() - dom.matches(&format!("{prefix}${{")).count()
}

/// Keeps a copy of `png` as `name.png` in `HEDGEROW_PICTURES_DIR`, if
/// set: how the README's pictures are made (see `sim/report/pictures`).
fn keep(png: &Path, name: &str) {
    if let Some(dir) = std::env::var_os("HEDGEROW_PICTURES_DIR") {
        let to = Path::new(&dir).join(format!("{name}.png"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(png, &to).unwrap_or_else(|e| panic!("copy to {}: {e}", to.display()));
    }
}

/// Writes `record`'s page into `dir`, checks what its DOM shows against
/// the record, saves a screenshot, and returns the DOM.
fn check_page(chromium: &Chromium, dir: &Path, name: &str, record: &Record) -> String {
    let html = dir.join(format!("{name}.html"));
    std::fs::write(&html, report::run_page(record)).unwrap();
    let url = format!("file://{}", html.display());
    let dom = chromium.dump_dom(&url, 5000);
    assert_eq!(
        drawn(&dom, "<g class=\"lane\" data-node=\""),
        record.nodes.len(),
        "one lane a node"
    );
    assert_eq!(
        drawn(&dom, "<rect class=\"lead\" data-term=\""),
        record.leads.len(),
        "one interval a leadership"
    );
    for (_, term, _, _) in &record.leads {
        assert!(dom.contains(&format!("class=\"lead\" data-term=\"{term}\"")));
    }
    assert_eq!(
        drawn(&dom, "<line class=\"violation\" x1=\""),
        record.violations.len(),
        "one marker a violation"
    );
    let png = dir.join(format!("{name}.png"));
    chromium.screenshot(&url, &png, (1400, 900));
    keep(&png, name);
    eprintln!(
        "{name}: {} bytes of page, screenshot {}",
        html.metadata().unwrap().len(),
        png.display()
    );
    dom
}

/// `s` run in-process from `seed`, recorded; it must pass.
fn recorded(s: &Scenario, seed: u64) -> Record {
    let mut cfg = ClusterConfig::new(seed);
    cfg.record = true;
    let (out, cluster) = scenario::run_with(s, cfg);
    assert!(out.passed(), "{:?}", out.violations);
    cluster.record().unwrap()
}

#[test]
fn a_run_report_draws_a_lane_per_node_and_an_interval_per_leadership() {
    let Some(chromium) = Chromium::find("run report") else {
        return;
    };
    let dir = temp_dir();
    let s = Scenario::parse(
        "faults",
        "nodes 5\nconverge within 10s\ncrash leader\nconverge within 20s\nrestart random\n\
         isolate random\nrun 3s\nheal\nstore down 2s\nclock unknown leader\nconverge within 20s\n\
         lock job 3\nrun 2s\nrelease all\nconverge within 20s\n",
    )
    .unwrap();
    let record = recorded(&s, 7);
    assert!(
        record.leads.len() >= 2,
        "a crash of the leader makes a second leadership"
    );
    assert!(!record.permits.is_empty(), "the lock was granted");
    let dom = check_page(&chromium, dir.path(), "faults", &record);
    assert!(
        dom.contains("class=\"fault store-down\""),
        "the store outage is a band"
    );
    assert!(
        dom.contains("class=\"fault partition\""),
        "the isolation is a band"
    );
    assert!(
        dom.contains("class=\"fault clock\""),
        "the clock status is a band"
    );
    assert!(drawn(&dom, "<rect class=\"permit\" data-name=\"job\"") >= 1);
    assert!(
        dom.contains("<li class=\"muted\">none</li>"),
        "no violation listed"
    );
}

#[test]
fn a_broken_run_shows_each_violation_at_its_instant_with_its_message() {
    let Some(chromium) = Chromium::find("broken run report") else {
        return;
    };
    let dir = temp_dir();
    // As in sim/tests/scale.rs: the leader's clock runs three bounds
    // behind while claiming the usual bound, then it is cut from the
    // store, so a successor leads while it still believes it does.
    let mut cfg = ClusterConfig::new(1);
    cfg.record = true;
    let bound = cfg.bound.as_nanos() as i64;
    let mut c = Cluster::with_nodes(cfg, 3);
    c.run_until_converged(Duration::from_secs(10)).unwrap();
    let l = c.leader().unwrap();
    let broken = SimClock {
        offset_ns: -3 * bound,
        drift_ppb: 0,
        ..c.node(l).clock
    };
    c.set_clock(l, broken);
    c.cut_store(l, true);
    c.run_for(Duration::from_secs(20));
    let mut record = c.record().unwrap();
    record.title = "broken clock".into();
    assert!(
        !record.violations.is_empty(),
        "the broken clock went unnoticed"
    );
    let dom = check_page(&chromium, dir.path(), "broken", &record);
    assert_eq!(
        drawn(&dom, "<li class=\"violation-item\">"),
        record.violations.len()
    );
    assert!(dom.contains("FAILED"), "the run is marked failed");
    for (_, invariant, _) in &record.violations {
        let shown = invariant
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;");
        assert!(dom.contains(&shown), "{invariant} is not on the page");
    }
}

#[test]
fn a_turmoil_run_report_and_a_sweep_index_open() {
    let Some(chromium) = Chromium::find("turmoil run report") else {
        return;
    };
    let dir = temp_dir();
    let s = Scenario::parse(
        "turmoil",
        "nodes 3\nconverge within 15s\ncrash leader\nconverge within 30s\nnodes 1\nconverge within 15s\n",
    )
    .unwrap();
    let opts = TurmoilOptions {
        record: true,
        ..TurmoilOptions::default()
    };
    let mut r = hedgerow_sim::turmoil::run(&s, 5, &opts);
    assert!(r.passed(), "{}", r.summary());
    let record = r.record.take().unwrap();
    assert_eq!(record.runner, "turmoil");
    assert!(record.leads.len() >= 2, "{:?}", record.leads);
    check_page(&chromium, dir.path(), "seed-5", &record);
    let rows = [report::SweepRow {
        seed: 5,
        passed: record.passed,
        violations: record.violations.len(),
        leaderships: record.leaderships(),
        file: "seed-5.html".into(),
    }];
    let index = dir.path().join("index.html");
    std::fs::write(&index, report::index_page("sweep", &rows)).unwrap();
    let dom = chromium.dump_dom(&format!("file://{}", index.display()), 1000);
    assert!(dom.contains("<a href=\"seed-5.html\">"), "{dom}");
}

#[test]
fn a_2_150_2_report_stays_small_and_draws_every_node() {
    let Some(chromium) = Chromium::find("2-150-2 report") else {
        return;
    };
    let dir = temp_dir();
    let record = recorded(&Scenario::load("scale-2-150-2").unwrap(), 1);
    let page = report::run_page(&record);
    assert!(page.len() < 3 << 20, "the page is {} bytes", page.len());
    assert!(record.nodes.len() >= 150);
    check_page(&chromium, dir.path(), "scale", &record);
}

#[test]
fn the_live_page_shows_a_new_leader_after_the_old_one_is_killed() {
    let Some(chromium) = Chromium::find("live page") else {
        return;
    };
    let _one = one_at_a_time();
    let dir = temp_dir();
    let store = format!("sqlite:{}", dir.path().join("lease.db").display());
    let mut nodes: Vec<_> = (1..=3)
        .map(|i| {
            let id = format!("n{i}");
            let log = File::create(dir.path().join(format!("{id}.log"))).unwrap();
            NodeCommand::new(Path::new(HEDGEROW), "page-test", &id, &store)
                .args([
                    "--clock",
                    "system",
                    "--clock-bound-ms",
                    "5",
                    "--preset",
                    "local",
                ])
                .args([
                    "--lease-ms",
                    "1500",
                    "--heartbeat-ms",
                    "100",
                    "--failure-timeout-ms",
                    "400",
                ])
                .args(["--meta", &format!("zone-{id}")])
                .log_to(log)
                .start(Duration::from_secs(20))
                .unwrap_or_else(|why| panic!("{why}\n{}", log_tails(dir.path(), 30)))
        })
        .collect();
    let leader_of = |http| status(http).and_then(|s| s["leader"].as_str().map(str::to_owned));
    let mut leader = None;
    let agreed = wait_until(Duration::from_secs(20), Duration::from_millis(100), || {
        let seen: BTreeSet<Option<String>> = nodes.iter().map(|n| leader_of(n.http)).collect();
        leader = seen.iter().next().cloned().flatten();
        seen.len() == 1 && leader.is_some()
    });
    assert!(agreed, "no leader agreed\n{}", log_tails(dir.path(), 30));
    let old = leader.unwrap();
    let watcher = nodes.iter().position(|n| n.id != old).unwrap();
    let url = format!("http://{}/", nodes[watcher].http);

    let mut page = chromium.open(&url);
    let leader_js = "document.getElementById('leader').dataset.leader";
    let (shown, ok) = page.wait(leader_js, Duration::from_secs(20), |v| *v == old.as_str());
    assert!(ok, "the page shows leader {shown}, not {old}");
    let rows =
        page.eval("[...document.querySelectorAll('#members tbody tr')].map(r => r.dataset.id)");
    assert_eq!(
        rows,
        serde_json::json!(["n1", "n2", "n3"]),
        "one row a member"
    );
    let role = page.eval(&format!(
        "document.querySelector('#members tr[data-id=\"{old}\"] .role').textContent"
    ));
    assert!(role.as_str().unwrap().starts_with("leader"), "{role}");

    let i = nodes.iter().position(|n| n.id == old).unwrap();
    let mut killed = nodes.remove(i);
    killed.process.kill();
    let (shown, ok) = page.wait(leader_js, Duration::from_secs(20), |v| {
        v.as_str().is_some_and(|l| !l.is_empty() && l != old)
    });
    assert!(
        ok,
        "the page still shows {shown} after {old} was killed\n{}",
        log_tails(dir.path(), 30)
    );
    let (events, ok) = page.wait(
        "[...document.querySelectorAll('#events li')].map(l => l.textContent).join('\\n')",
        Duration::from_secs(10),
        |v| {
            v.as_str()
                .is_some_and(|t| t.contains(&format!("{} leads", shown.as_str().unwrap_or("?"))))
        },
    );
    assert!(ok, "no leadership event for the new leader: {events}");
    let (rows, ok) = page.wait(
        "document.querySelectorAll('#members tbody tr').length",
        Duration::from_secs(10),
        |v| *v == 2,
    );
    assert!(ok, "{old} is still a member row ({rows} rows)");
    drop(page);
    let png = dir.path().join("live.png");
    chromium.screenshot(&url, &png, (1100, 700));
    keep(&png, "live");
    eprintln!("live page after the failover: {}", png.display());
    drop(nodes);
}
