//! Fuzz target for the option-232 message parser of vspc-proto: see
//! `crates/vspc-proto/tests/support/proto_message.rs` for the invariants (no panic; parse ->
//! encode -> parse is the identity; the wire form decodes back through the telnet layer).
#![no_main]

#[path = "../../crates/vspc-proto/tests/support/proto_message.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|input: &[u8]| checks::check(input));
