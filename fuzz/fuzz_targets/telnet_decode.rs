//! Fuzz target: see `vspc_testkit::fuzz::telnet_decode` for the invariants.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| vspc_testkit::fuzz::telnet_decode::check(input));
