//! Fuzz target for `ProxySession` and the vMotion `Coordinator` of vspc-proto, fed arbitrary
//! bytes, splits, client data, clock jumps and closes: see
//! `crates/vspc-proto/tests/support/proxy_session.rs` for the input format and the invariants
//! (no panic, chunking invariance, bounded memory and output).
#![no_main]

#[path = "../../crates/vspc-proto/tests/support/proxy_session.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|input: &[u8]| {
    let _ = checks::check(input);
});
