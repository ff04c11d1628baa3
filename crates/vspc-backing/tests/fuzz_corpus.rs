//! Replays the committed fuzz corpus of `uri_parse` (`fuzz/corpus/uri_parse`) on stable,
//! through the fuzz target's own invariant.

#[path = "support/uri_invariant.rs"]
mod uri_invariant;

#[test]
fn every_committed_corpus_input_holds_the_uri_invariant() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/uri_parse");
    let mut replayed = 0;
    for entry in std::fs::read_dir(&dir).expect("corpus directory") {
        let path = entry.expect("corpus entry").path();
        uri_invariant::check_bytes(&std::fs::read(&path).expect("corpus file"));
        replayed += 1;
    }
    assert!(
        replayed >= 10,
        "only {replayed} corpus files in {}",
        dir.display()
    );
}
