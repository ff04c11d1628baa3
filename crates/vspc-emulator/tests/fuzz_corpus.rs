//! Replays the committed fuzz corpus of `emulated_session` on stable, with the fuzz target's
//! own invariants.

#[path = "../../../fuzz/checks/emulated_session.rs"]
mod checks;

#[test]
fn committed_corpus_holds_every_invariant() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/emulated_session");
    let mut replayed = 0;
    for entry in std::fs::read_dir(&dir).expect("corpus directory") {
        let path = entry.expect("corpus entry").path();
        checks::check(&std::fs::read(&path).expect("corpus file"));
        replayed += 1;
    }
    assert!(
        replayed >= 8,
        "only {replayed} corpus files in {}",
        dir.display()
    );
}

/// Random scenarios on stable: 300 per run, or `VSPC_EMULATOR_SCENARIOS` (the fuzz target
/// explores further, guided by coverage).
#[test]
fn random_scenarios_hold_every_invariant() {
    let runs: usize = std::env::var("VSPC_EMULATOR_SCENARIOS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(300);
    let mut state = 0x5eed_u64;
    for _ in 0..runs {
        let mut input = Vec::new();
        let len = 4 + (state % 120) as usize;
        for _ in 0..len {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            input.push((state >> 24) as u8);
        }
        if std::panic::catch_unwind(|| checks::check(&input)).is_err() {
            panic!("failing scenario: {input:02x?}");
        }
    }
}
