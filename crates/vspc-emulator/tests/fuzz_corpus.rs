//! Replays the committed fuzz corpus of `emulated_session` on stable, with the fuzz target's
//! own invariants, and random scenarios beside it.

use vspc_testkit::fuzz::{emulated_session, random, replay};

#[test]
fn committed_corpus_holds_every_invariant() {
    replay("emulated_session", 8, emulated_session::check);
}

/// Random scenarios on stable: 300 per run, or `VSPC_EMULATOR_SCENARIOS` (the fuzz target
/// explores further, guided by coverage).
#[test]
fn random_scenarios_hold_every_invariant() {
    random(
        "VSPC_EMULATOR_SCENARIOS",
        300,
        0x5eed,
        123,
        emulated_session::check,
    );
}
