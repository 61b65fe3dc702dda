//! The fuzz target bodies under plain `cargo test`: every checked-in corpus
//! input (regressions included), then a bounded proptest loop and a blind
//! mutation loop over the corpus, a few seconds in all.

use hedgerow_fuzz::{corpus, mutate, TARGETS};
use proptest::prelude::*;

#[test]
fn corpus_inputs_pass() {
    for (name, body) in TARGETS {
        let inputs = corpus(name);
        assert!(!inputs.is_empty(), "corpus for {name} is missing");
        for input in &inputs {
            body(input);
        }
    }
}

#[test]
fn mutated_corpus_inputs_pass() {
    for (name, body) in TARGETS {
        let inputs = corpus(name);
        let mut rng = hedgerow_core::Rng::new(0x5eed);
        let mut buf = Vec::new();
        let runs = if name == "node" { 300 } else { 3000 };
        for _ in 0..runs {
            mutate(&mut rng, &inputs, &mut buf);
            body(&buf);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn wire_on_any_bytes(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        hedgerow_fuzz::wire(&data);
    }

    #[test]
    fn handshake_on_any_bytes(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        hedgerow_fuzz::handshake(&data);
    }

    #[test]
    fn tls_on_any_bytes(first in prop_oneof![Just(0x16u8), any::<u8>()], rest in proptest::collection::vec(any::<u8>(), 0..600)) {
        let mut data = vec![first];
        data.extend(rest);
        hedgerow_fuzz::tls(&data);
    }

    #[test]
    fn node_on_any_bytes(data in proptest::collection::vec(any::<u8>(), 0..3000)) {
        hedgerow_fuzz::node(&data);
    }
}
