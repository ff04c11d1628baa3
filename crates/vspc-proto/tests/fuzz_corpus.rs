//! Replays the committed fuzz corpora of `proto_message` and `proxy_session`
//! (`fuzz/corpus/<target>`) on stable, through the same invariants as the fuzz targets.
#![allow(clippy::unwrap_used)]

#[path = "support/proto_message.rs"]
mod proto_message;
#[path = "support/proxy_session.rs"]
mod proxy_session;

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            (path.display().to_string(), std::fs::read(&path).unwrap())
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "empty corpus {}", dir.display());
    files
}

#[test]
fn proto_message_corpus_holds_the_invariants() {
    for (name, bytes) in corpus("proto_message") {
        eprintln!("{name}");
        proto_message::check(&bytes);
    }
}

#[test]
fn proxy_session_corpus_holds_the_invariants() {
    for (name, bytes) in corpus("proxy_session") {
        let reached = proxy_session::check(&bytes);
        eprintln!("{name}: {reached:?}");
        // The vMotion seeds must keep reaching the switch, or they have rotted.
        if name.contains("vmotion-fin") {
            assert_eq!(reached.switched, 1, "{name}");
            assert_eq!(reached.peers_accepted, 1, "{name}");
        }
        if name.contains("expiry") {
            assert_eq!((reached.goaheads, reached.expired), (2, 1), "{name}");
        }
        // BEGIN answered by the application after the source closed: nothing is started on
        // the closed connection; the first vMotion expires and the connection leaves.
        if name.contains("manual-begin-after-close") {
            assert_eq!((reached.goaheads, reached.expired), (1, 1), "{name}");
        }
        // PEER answered by the application after COMPLETE arrived: the answer completes.
        if name.contains("manual-peer-early-complete") {
            assert_eq!((reached.peers_accepted, reached.switched), (1, 1), "{name}");
        }
    }
}

#[test]
fn invariants_hold_on_pseudo_random_inputs() {
    // A cheap stand-in for fuzzing on stable: xorshift inputs of every length up to 600.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for len in 0..600 {
        let input: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Bias towards IAC and the option-232 framing bytes.
                match x % 8 {
                    0 => 0xff,
                    1 => [0xfa, 0xf0, 0xe8, 0xfb, 0xfd][(x >> 8) as usize % 5],
                    _ => (x >> 16) as u8,
                }
            })
            .collect();
        proto_message::check(&input);
        let _ = proxy_session::check(&input);
    }
}
