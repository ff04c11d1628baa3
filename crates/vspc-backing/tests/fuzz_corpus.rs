//! Replays the committed fuzz corpus of `uri_parse` (`fuzz/corpus/uri_parse`) on stable,
//! through the fuzz target's own invariant.

use vspc_testkit::fuzz::{replay, uri_parse};

#[test]
fn every_committed_corpus_input_holds_the_uri_invariant() {
    replay("uri_parse", 10, uri_parse::check_bytes);
}
