//! Replays the committed corpus of the `concentrator` fuzz target (`fuzz/corpus/concentrator`)
//! on stable, through the same scenario interpreter and invariants, and random scenarios
//! beside it.

mod support;

use vspc_testkit::fuzz::{random, replay};

#[test]
fn committed_corpus_holds_every_invariant() {
    replay("concentrator", 8, support::scenario::check);
}

/// Random byte strings as scenarios: 200 per run, or `VSPC_CONCENTRATOR_SCENARIOS` (the fuzz
/// target explores further, guided by coverage).
#[test]
fn random_inputs_hold_every_invariant() {
    random(
        "VSPC_CONCENTRATOR_SCENARIOS",
        200,
        0x00c0_ffee,
        205,
        support::scenario::check,
    );
}
