//! Fuzz target: see `checks/emulated_session.rs` for the scenario format and the invariants.
#![no_main]

#[path = "../checks/emulated_session.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|input: &[u8]| checks::check(input));
