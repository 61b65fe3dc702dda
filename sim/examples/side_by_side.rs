//! Membership under churn, hedgerow beside foca, from one scenario and seed.
//!
//! ```text
//! cargo run --release -p hedgerow-sim --example side_by_side -- \
//!     --scenario scale-2-150-2 --seed 1
//! ```
//!
//! Prints a markdown table (see `hedgerow_sim::compare::side_by_side`).

#[path = "support/foca_turmoil.rs"]
mod foca_turmoil;

use hedgerow_sim::compare::side_by_side;
use hedgerow_sim::scenario::Scenario;

struct Args {
    scenario: String,
    seed: u64,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        scenario: "scale-2-150-2".into(),
        seed: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--scenario" => a.scenario = value()?,
            "--seed" => {
                a.seed = value()?.parse().map_err(|e| format!("--seed: {e}"))?;
            }
            _ => {
                return Err(format!(
                    "unknown flag {flag}: use --scenario NAME|FILE --seed N"
                ))
            }
        }
    }
    Ok(a)
}

fn main() {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let scenario = match Scenario::load(&a.scenario) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let opts = foca_turmoil::Opts::default();
    let t0 = std::time::Instant::now();
    let hedgerow = hedgerow_sim::turmoil::run(&scenario, a.seed, &opts.mirror);
    eprintln!(
        "hedgerow: {:.1} s wall, passed: {}{}",
        t0.elapsed().as_secs_f64(),
        hedgerow.passed(),
        hedgerow
            .error
            .as_ref()
            .map_or(String::new(), |e| format!(", error: {e}"))
    );
    let t1 = std::time::Instant::now();
    let foca = foca_turmoil::run(&scenario, a.seed, &opts);
    eprintln!("foca: {:.1} s wall", t1.elapsed().as_secs_f64());
    for s in &foca.skipped {
        eprintln!("foca: no counterpart, skipped {s}");
    }
    let table = side_by_side(&[
        ("hedgerow (turmoil, TCP)", &hedgerow.trace),
        ("foca (turmoil, UDP)", &foca.trace),
    ]);
    println!(
        "scenario `{}`, seed {}, turmoil tick {:?}\n",
        scenario.name, a.seed, opts.mirror.tick
    );
    println!("{table}");
    println!("hedgerow config: {:?}\n", opts.mirror.config);
    println!("foca config: {:?}", foca.config);
}
