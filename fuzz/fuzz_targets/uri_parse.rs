//! Fuzz target for the URI parsers of vspc-backing: see
//! `crates/vspc-backing/tests/support/uri_invariant.rs` for the invariant (no panic;
//! parse(display(parse(s))) == parse(s) for service URIs, proxy URIs, authentication
//! parameters and hosts; validation never panics).
#![no_main]

#[path = "../../crates/vspc-backing/tests/support/uri_invariant.rs"]
mod uri_invariant;

libfuzzer_sys::fuzz_target!(|input: &[u8]| uri_invariant::check_bytes(input));
