//! A stable stand-in for cargo-fuzz: runs a target body on random and
//! mutated inputs for a while, starting from the checked-in corpus, and
//! saves any input that panics (then exits non-zero).
//!
//! ```text
//! cargo run --release -p hedgerow-fuzz --bin fuzz-loop -- --target node --secs 120 [--seed N] [--out DIR]
//! cargo run --release -p hedgerow-fuzz --bin fuzz-loop -- --target node --replay FILE
//! ```
//!
//! No coverage feedback: a blind mutator over corpus entries and fresh
//! random bytes. It finds shallow bugs fast; cargo-fuzz (nightly) goes deeper.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use hedgerow_core::Rng;

fn main() {
    let mut target = String::from("node");
    let mut secs = 60u64;
    let mut seed = 1u64;
    let mut out = PathBuf::from("fuzz-loop-crashes");
    let mut replay = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().unwrap_or_default();
        match a.as_str() {
            "--target" => target = v,
            "--secs" => secs = v.parse().unwrap_or(secs),
            "--seed" => seed = v.parse().unwrap_or(seed),
            "--out" => out = PathBuf::from(v),
            "--replay" => replay = Some(PathBuf::from(v)),
            _ => {
                eprintln!("usage: fuzz-loop --target wire|handshake|node [--secs N] [--seed N] [--out DIR]");
                std::process::exit(2);
            }
        }
    }
    let Some(body) = hedgerow_fuzz::target(&target) else {
        eprintln!("unknown target {target:?}");
        std::process::exit(2);
    };
    if let Some(path) = replay {
        // Runs one saved input with the panic message shown.
        let data = std::fs::read(&path).unwrap_or_default();
        body(&data);
        eprintln!("{}: no failure", path.display());
        return;
    }
    let corpus = hedgerow_fuzz::corpus(&target);
    let mut rng = Rng::new(seed);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut execs = 0u64;
    std::panic::set_hook(Box::new(|_| {}));
    let mut input = Vec::new();
    while Instant::now() < deadline {
        for _ in 0..64 {
            hedgerow_fuzz::mutate(&mut rng, &corpus, &mut input);
            execs += 1;
            let data = input.clone();
            if let Err(e) = std::panic::catch_unwind(|| body(&data)) {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                let _ = std::fs::create_dir_all(&out);
                let path = out.join(format!("{target}-{seed}-{execs}"));
                let _ = std::fs::write(&path, &data);
                eprintln!(
                    "target {target}: input {} panicked after {execs} execs:\n{msg}",
                    path.display()
                );
                std::process::exit(1);
            }
        }
    }
    eprintln!("target {target}: {execs} execs in {secs} s, seed {seed}, no failure");
}
