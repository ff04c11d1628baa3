//! Fuzz target for the URI parsers of vspc-backing: see `vspc_testkit::fuzz::uri_parse` for
//! the invariant (no panic; parse(display(parse(s))) == parse(s) for service URIs, proxy URIs,
//! authentication parameters and hosts; validation never panics).
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| vspc_testkit::fuzz::uri_parse::check_bytes(input));
