//! Fuzz target: see `vspc_testkit::fuzz::emulated_session` for the scenario format and the
//! invariants.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| vspc_testkit::fuzz::emulated_session::check(input));
