//! Fuzz target for the concentrator core (`vspc-concentrator`): arbitrary bytes as a scenario
//! of VM connections (emulated ESXi hosts and raw ones), raw bytes to VMs and clients, closes,
//! time steps and vMotions. See `crates/vspc-concentrator/tests/support/scenario.rs` for the
//! input format and the invariants (no panic, bounded memory, nothing left without a wakeup,
//! and byte-exact delivery both ways where the scenario is well-formed).
#![no_main]

#[path = "../../crates/vspc-concentrator/tests/support/mod.rs"]
mod support;

libfuzzer_sys::fuzz_target!(|input: &[u8]| support::scenario::check(input));
