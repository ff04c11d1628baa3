//! Fuzz target for the `Endpoint` of vspc-proto (its `ProxySession`s and vMotion
//! `Coordinator`), fed arbitrary bytes, splits, client data, clock jumps, closes and late
//! answers: see `crates/vspc-proto/tests/support/proxy_session.rs` for the input format and the
//! invariants (no panic, chunking invariance, bounded memory and output, consistent events).
#![no_main]

#[path = "../../crates/vspc-proto/tests/support/proxy_session.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|input: &[u8]| {
    let _ = checks::check(input);
});
