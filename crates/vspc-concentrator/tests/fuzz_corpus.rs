//! Replays the committed corpus of the `concentrator` fuzz target (`fuzz/corpus/concentrator`)
//! on stable, through the same scenario interpreter and invariants, and random scenarios
//! beside it.

mod support;

#[test]
fn committed_corpus_holds_every_invariant() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/concentrator");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("corpus directory")
        .map(|entry| entry.expect("corpus entry").path())
        .collect();
    files.sort();
    for path in &files {
        let input = std::fs::read(path).expect("corpus file");
        if std::panic::catch_unwind(|| support::scenario::check(&input)).is_err() {
            panic!("{} fails", path.display());
        }
    }
    assert!(
        files.len() >= 8,
        "only {} corpus files in {}",
        files.len(),
        dir.display()
    );
}

/// Random byte strings as scenarios: 200 per run, or `VSPC_CONCENTRATOR_SCENARIOS` (the fuzz
/// target explores further, guided by coverage).
#[test]
fn random_inputs_hold_every_invariant() {
    let runs: usize = std::env::var("VSPC_CONCENTRATOR_SCENARIOS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(200);
    let mut state = 0x00c0_ffee_u64;
    for _ in 0..runs {
        let len = 6 + (state % 200) as usize;
        let input: Vec<u8> = (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect();
        if std::panic::catch_unwind(|| support::scenario::check(&input)).is_err() {
            panic!("failing input: {input:02x?}");
        }
    }
}
