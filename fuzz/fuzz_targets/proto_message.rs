//! Fuzz target for the option-232 message parser of vspc-proto: see
//! `vspc_testkit::fuzz::proto_message` for the invariants (no panic; parse -> encode -> parse
//! is the identity; the wire form decodes back through the telnet layer).
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| vspc_testkit::fuzz::proto_message::check(input));
