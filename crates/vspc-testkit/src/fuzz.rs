//! The fuzz invariants: one module per fuzz target of `fuzz/`, each with the `check` its
//! target calls on every input, and the replay of the committed corpora (`fuzz/corpus/<target>`)
//! with a seeded generator, so that `cargo test` on stable runs the same checks.
//!
//! The invariants live here rather than in each crate's tests because the fuzz crate (outside
//! the workspace, on nightly) and the crates' tests must run the same code, and because
//! `emulated_session` spans three crates: a dependency on this crate reaches them all, where
//! `#[path]` into another crate's `tests/` did not survive packaging.

pub mod emulated_session;
pub mod proto_message;
pub mod proxy_session;
pub mod telnet_decode;
pub mod uri_parse;

use std::path::{Path, PathBuf};

pub use crate::Xorshift;

/// The committed corpus of fuzz target `target`, sorted by file name: `(path, bytes)`.
///
/// # Panics
///
/// When the directory cannot be read or holds fewer than `at_least` inputs (a corpus that
/// shrank by accident would silently test less).
pub fn corpus(target: &str, at_least: usize) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut files: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus directory {}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("corpus entry").path();
            let bytes = std::fs::read(&path).expect("corpus file");
            (path, bytes)
        })
        .collect();
    files.sort();
    assert!(
        files.len() >= at_least,
        "only {} corpus files in {}",
        files.len(),
        dir.display()
    );
    files
}

/// Runs `check` on every input of `target`'s committed corpus (at least `at_least` of them),
/// naming the input that fails.
pub fn replay(target: &str, at_least: usize, check: impl Fn(&[u8])) {
    for (path, bytes) in corpus(target, at_least) {
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&bytes))).is_err() {
            panic!("{} fails", path.display());
        }
    }
}

/// Runs `check` on `runs` seeded random inputs of 0 to `max_len` bytes (`runs` can be raised
/// with the environment variable `env`), naming the input that fails.
pub fn random(env: &str, runs: usize, seed: u64, max_len: usize, check: impl Fn(&[u8])) {
    let runs = std::env::var(env)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(runs);
    let mut rng = Xorshift::new(seed);
    for _ in 0..runs {
        let len = (rng.next_u64() % (max_len as u64 + 1)) as usize;
        let input = rng.bytes(len);
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&input))).is_err() {
            panic!("failing input: {input:02x?}");
        }
    }
}

/// Reads a scenario from fuzzer bytes, one field at a time; missing bytes read as zero, so
/// that every input is a valid scenario (no `arbitrary`, and no extra dependency on stable).
#[derive(Debug, Clone)]
pub struct Input<'a> {
    bytes: &'a [u8],
}

impl<'a> Input<'a> {
    /// A reader over `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    /// The next byte, or 0 past the end.
    pub fn byte(&mut self) -> u8 {
        match self.bytes.split_first() {
            Some((&b, rest)) => {
                self.bytes = rest;
                b
            }
            None => 0,
        }
    }

    /// The next `n` bytes, or fewer at the end.
    pub fn take(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.bytes.len());
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        head.to_vec()
    }

    /// Whether every byte was read.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}
