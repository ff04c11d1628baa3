//! Fuzz target: see `checks/telnet_decode.rs` for the invariants.
#![no_main]

#[path = "../checks/telnet_decode.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|input: &[u8]| checks::check(input));
