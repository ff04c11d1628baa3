//! Replays the committed fuzz corpus of `telnet_decode` on stable, with the fuzz target's own
//! invariants.

#[path = "../../../fuzz/checks/telnet_decode.rs"]
mod checks;

#[test]
fn committed_corpus_holds_every_invariant() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/telnet_decode");
    let mut replayed = 0;
    for entry in std::fs::read_dir(&dir).expect("corpus directory") {
        let path = entry.expect("corpus entry").path();
        checks::check(&std::fs::read(&path).expect("corpus file"));
        replayed += 1;
    }
    assert!(
        replayed >= 7,
        "only {replayed} corpus files in {}",
        dir.display()
    );
}
