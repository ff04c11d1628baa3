//! Fuzz target for the `Endpoint` of vspc-proto (its `ProxySession`s and vMotion
//! `Coordinator`), fed arbitrary bytes, splits, client data, clock jumps, closes and late
//! answers: see `vspc_testkit::fuzz::proxy_session` for the input format and the invariants
//! (no panic, chunking invariance, bounded memory and output, consistent events).
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| {
    let _ = vspc_testkit::fuzz::proxy_session::check(input);
});
