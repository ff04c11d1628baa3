//! The vspc workspace's test kit (not published): one copy of what the crates' tests, the
//! fuzz targets and the benches share.
//!
//! - [`hex`], [`find`] and [`Xorshift`]: byte helpers for exact wire assertions and seeded
//!   inputs.
//! - [`esxi`]: ESXi's wire captures (`docs/esxi-wire.md`), blocks A to E, as timed segments.
//! - [`pair`]: a `VmSession` and a `ProxySession` talking in memory until both are quiet.
//! - [`fuzz`]: the invariants each fuzz target checks, the committed corpora's replay and a
//!   seeded input generator, so that `cargo test` on stable runs what the fuzzers run.
//! - `net` (feature `net`): telnet and raw test clients over real tokio
//!   sockets, with bounded waits and exact-byte expectations.
//!
//! The published crates take this crate as a dev-dependency by path and without a version,
//! which `cargo package` strips; a test that uses it is therefore left out of its crate's
//! package (ARCHITECTURE.md, "The test kit").
#![allow(clippy::unwrap_used, clippy::panic)] // a test kit: a failed check is a panic

pub mod esxi;
pub mod fuzz;
#[cfg(feature = "net")]
pub mod net;
pub mod pair;

/// Parses hex as written in `docs/esxi-wire.md` (`"fffb25"`, `"ff fb 25"`): ASCII whitespace
/// is skipped.
///
/// # Panics
///
/// On any other character that is not a hex digit, or an odd number of digits: a test's
/// vector with a typo must fail, not shrink.
pub fn hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text
        .bytes()
        .filter(|b| !b.is_ascii_whitespace())
        .inspect(|b| assert!(b.is_ascii_hexdigit(), "not hex: {text:?}"))
        .collect();
    assert!(
        digits.len().is_multiple_of(2),
        "odd number of hex digits: {text:?}"
    );
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
        .collect()
}

/// A xorshift64 generator: cheap, seeded, reproducible inputs for the stable stand-in of
/// fuzzing and for the benches' data.
#[derive(Debug, Clone)]
pub struct Xorshift(u64);

impl Xorshift {
    /// A generator from a non-zero seed (zero is replaced, as it would stay zero).
    pub fn new(seed: u64) -> Self {
        Self(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    /// The next 64 bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// The next byte (from the middle bits, the best mixed).
    pub fn byte(&mut self) -> u8 {
        (self.next_u64() >> 24) as u8
    }

    /// `len` bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.byte()).collect()
    }
}

/// The start of a simulated clock: any instant will do, only differences matter (the
/// sans-IO types take the time as an argument).
#[allow(clippy::disallowed_methods)]
pub fn epoch() -> std::time::Instant {
    std::time::Instant::now()
}

/// Where `needle` first occurs in `haystack` (an empty needle at 0, as `str::find`).
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_skips_whitespace_only() {
        assert_eq!(hex("ff fb\n25"), [0xff, 0xfb, 0x25]);
        assert_eq!(hex(""), Vec::<u8>::new());
        assert!(std::panic::catch_unwind(|| hex("ff-fb")).is_err());
        assert!(std::panic::catch_unwind(|| hex("fff")).is_err());
    }

    #[test]
    fn find_gives_the_first_match() {
        assert_eq!(find(b"abcabc", b"ca"), Some(2));
        assert_eq!(find(b"abc", b"abcd"), None);
        assert_eq!(find(b"abc", b""), Some(0));
    }
}
