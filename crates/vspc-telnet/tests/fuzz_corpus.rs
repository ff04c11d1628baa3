//! Replays the committed fuzz corpus of `telnet_decode` on stable, with the fuzz target's own
//! invariants.

use vspc_testkit::fuzz::{replay, telnet_decode};

#[test]
fn committed_corpus_holds_every_invariant() {
    replay("telnet_decode", 7, telnet_decode::check);
}
