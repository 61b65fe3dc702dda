#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| hedgerow_fuzz::tls(data));
