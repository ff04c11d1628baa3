//! Replays the committed fuzz corpora of `proto_message` and `proxy_session`
//! (`fuzz/corpus/<target>`) on stable, through the same invariants as the fuzz targets.

use vspc_testkit::fuzz::{corpus, proto_message, proxy_session, replay, Xorshift};

#[test]
fn proto_message_corpus_holds_the_invariants() {
    replay("proto_message", 8, proto_message::check);
}

#[test]
fn proxy_session_corpus_holds_the_invariants() {
    for (path, bytes) in corpus("proxy_session", 8) {
        let name = path.display().to_string();
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
    let mut rng = Xorshift::new(0x9e37_79b9_7f4a_7c15);
    for len in 0..600 {
        let input: Vec<u8> = (0..len)
            .map(|_| {
                let x = rng.next_u64();
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
