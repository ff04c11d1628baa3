//! Serial traffic whose every byte is a function of its position: generated on one side,
//! verified exactly on the other.
//!
//! A stream is a [`Pattern`] read from offset 0 on. Because byte `i` is `pattern.byte_at(i)`,
//! the receiver knows what each arriving byte must be: the first lost, duplicated, reordered
//! or corrupted byte shows as a mismatch at an exact offset, and a short or long stream shows
//! in the final count. [`Pattern::Counter`] makes the stream literally sequence-numbered
//! (big-endian `u32` counters), [`Pattern::Ramp`] and [`Pattern::Noise`] carry every byte value
//! including 0xFF (IAC) and NUL.

use std::time::{Duration, Instant};

/// How the byte at each offset of a stream is chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Pattern {
    /// Consecutive big-endian `u32` counters `0, 1, 2, ...`: a sequence-numbered stream, rich
    /// in NUL bytes.
    Counter,
    /// `offset mod 256`: every byte value in turn, 0xFF and NUL included.
    Ramp,
    /// Pseudo-random bytes from a seed (splitmix64 of the offset): no period, so a shift by
    /// any count is caught at once.
    Noise {
        /// The seed; two streams with different seeds differ.
        seed: u64,
    },
    /// Printable lines `"<tag> 00000000\r\n"` with a line counter (what a console log shows).
    Lines {
        /// The prefix of every line (its length is capped at 64 bytes).
        tag: Vec<u8>,
    },
    /// One byte again and again (e.g. `0xFF` to stress IAC doubling, `0x00` for NUL).
    Repeat(u8),
}

const LINE_DIGITS: usize = 8;

impl Pattern {
    /// The byte at `offset`.
    pub fn byte_at(&self, offset: u64) -> u8 {
        match self {
            Pattern::Counter => {
                let counter = offset / 4;
                let shift = 8 * (3 - (offset % 4));
                // Counters past u32::MAX wrap: a stream of 16 GiB repeats, which no test reaches.
                ((counter >> shift) & 0xff) as u8
            }
            Pattern::Ramp => (offset & 0xff) as u8,
            Pattern::Noise { seed } => (splitmix64(seed ^ offset.wrapping_mul(0x9e37)) >> 24) as u8,
            Pattern::Lines { tag } => {
                let tag = &tag[..tag.len().min(64)];
                let line_len = (tag.len() + 1 + LINE_DIGITS + 2) as u64;
                let line = offset / line_len;
                let at = (offset % line_len) as usize;
                if at < tag.len() {
                    tag[at]
                } else if at == tag.len() {
                    b' '
                } else if at < tag.len() + 1 + LINE_DIGITS {
                    let digit = LINE_DIGITS - 1 - (at - tag.len() - 1);
                    b'0' + ((line / 10u64.pow(digit as u32)) % 10) as u8
                } else if at == tag.len() + 1 + LINE_DIGITS {
                    b'\r'
                } else {
                    b'\n'
                }
            }
            Pattern::Repeat(byte) => *byte,
        }
    }

    /// Appends the `len` bytes from `offset` on to `out`.
    pub fn extend(&self, offset: u64, len: usize, out: &mut Vec<u8>) {
        out.reserve(len);
        for i in 0..len as u64 {
            out.push(self.byte_at(offset.wrapping_add(i)));
        }
    }
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// How fast a [`Generator`] produces: `chunk` bytes every `interval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Bytes per write.
    pub chunk: usize,
    /// Time between writes.
    pub interval: Duration,
}

impl Rate {
    /// `chunk` bytes every `interval`.
    pub fn new(chunk: usize, interval: Duration) -> Self {
        Rate { chunk, interval }
    }

    /// One byte every 100 ms, like the test byte of the capture's serial line.
    pub fn trickle() -> Self {
        Rate::new(1, Duration::from_millis(100))
    }
}

/// What the VM's serial port emits while it runs: a [`Pattern`] at a [`Rate`], optionally
/// stopping after `limit` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputConfig {
    /// The bytes.
    pub pattern: Pattern,
    /// The pace.
    pub rate: Rate,
    /// Stop after this many bytes in total (`None`: never stop).
    pub limit: Option<u64>,
}

/// Produces a stream of a [`Pattern`] on a clock: sans-IO, `now` is an argument.
#[derive(Debug, Clone)]
pub struct Generator {
    config: OutputConfig,
    produced: u64,
    next_at: Option<Instant>,
}

impl Generator {
    /// A generator that has produced nothing and is not running.
    pub fn new(config: OutputConfig) -> Self {
        Generator {
            config,
            produced: 0,
            next_at: None,
        }
    }

    /// Starts (or resumes) producing; the first chunk is due at `now`.
    pub fn start(&mut self, now: Instant) {
        if self.next_at.is_none() && !self.finished() {
            self.next_at = Some(now);
        }
    }

    /// Stops producing (a quiesced or powered-off VM); [`start`](Self::start) resumes.
    pub fn stop(&mut self) {
        self.next_at = None;
    }

    /// Whether the limit has been reached.
    pub fn finished(&self) -> bool {
        self.config
            .limit
            .is_some_and(|limit| self.produced >= limit)
    }

    /// Bytes produced so far.
    pub fn produced(&self) -> u64 {
        self.produced
    }

    /// The pattern.
    pub fn pattern(&self) -> &Pattern {
        &self.config.pattern
    }

    /// When the next chunk is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_at
    }

    /// The chunk due at `now`, if one is due. One chunk per call, so a late timer does not
    /// produce a burst larger than `chunk` bytes: the next one is due `interval` after `now`.
    pub fn poll(&mut self, now: Instant) -> Option<Vec<u8>> {
        let due = self.next_at?;
        if due > now {
            return None;
        }
        let mut len = self.config.rate.chunk.max(1) as u64;
        if let Some(limit) = self.config.limit {
            len = len.min(limit.saturating_sub(self.produced));
        }
        let mut out = Vec::new();
        self.config
            .pattern
            .extend(self.produced, len as usize, &mut out);
        self.produced += len;
        self.next_at = if self.finished() {
            None
        } else {
            Some(now + self.config.rate.interval)
        };
        (!out.is_empty()).then_some(out)
    }
}

/// The first byte that was not what the pattern says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The byte at `offset` differs: something before it was lost, duplicated, reordered or
    /// corrupted.
    #[error("byte {offset}: expected {expected:#04x}, got {actual:#04x}")]
    Mismatch {
        /// Offset in the stream.
        offset: u64,
        /// What the pattern says.
        expected: u8,
        /// What arrived.
        actual: u8,
    },
    /// The stream has the wrong length at the end: bytes lost at the tail, or extra bytes.
    #[error("received {received} bytes, expected {expected}")]
    Length {
        /// Bytes that arrived.
        received: u64,
        /// Bytes that were sent.
        expected: u64,
    },
}

/// Checks a received stream against its [`Pattern`], byte by byte, in O(1) memory.
#[derive(Debug, Clone)]
pub struct Verifier {
    pattern: Pattern,
    received: u64,
    first_error: Option<VerifyError>,
}

impl Verifier {
    /// A verifier expecting the stream of `pattern` from offset 0.
    pub fn new(pattern: Pattern) -> Self {
        Verifier {
            pattern,
            received: 0,
            first_error: None,
        }
    }

    /// Checks the next bytes of the stream.
    pub fn feed(&mut self, bytes: &[u8]) {
        for &actual in bytes {
            if self.first_error.is_none() {
                let expected = self.pattern.byte_at(self.received);
                if actual != expected {
                    self.first_error = Some(VerifyError::Mismatch {
                        offset: self.received,
                        expected,
                        actual,
                    });
                }
            }
            self.received += 1;
        }
    }

    /// Bytes received.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// The first mismatch so far, if any.
    pub fn first_error(&self) -> Option<VerifyError> {
        self.first_error
    }

    /// `Ok` if every byte so far matched and exactly `sent` bytes arrived.
    pub fn verify(&self, sent: u64) -> Result<(), VerifyError> {
        if let Some(error) = self.first_error {
            return Err(error);
        }
        if self.received != sent {
            return Err(VerifyError::Length {
                received: self.received,
                expected: sent,
            });
        }
        Ok(())
    }
}

/// What clients sent to the VM: a count, the most recent bytes (bounded), and, when the
/// clients send a known [`Pattern`], an exact [`Verifier`].
#[derive(Debug, Clone)]
pub struct Recorder {
    total: u64,
    kept: Vec<u8>,
    max_kept: usize,
    verifier: Option<Verifier>,
}

impl Recorder {
    /// Keeps at most `max_kept` bytes (the oldest are dropped first); verifies against
    /// `expected` if given.
    pub fn new(max_kept: usize, expected: Option<Pattern>) -> Self {
        Recorder {
            total: 0,
            kept: Vec::new(),
            max_kept,
            verifier: expected.map(Verifier::new),
        }
    }

    /// Records bytes that arrived from the proxy.
    pub fn record(&mut self, bytes: &[u8]) {
        self.total += bytes.len() as u64;
        if let Some(verifier) = &mut self.verifier {
            verifier.feed(bytes);
        }
        if self.max_kept == 0 {
            return;
        }
        if bytes.len() >= self.max_kept {
            self.kept.clear();
            self.kept
                .extend_from_slice(&bytes[bytes.len() - self.max_kept..]);
            return;
        }
        let overflow = (self.kept.len() + bytes.len()).saturating_sub(self.max_kept);
        self.kept.drain(..overflow);
        self.kept.extend_from_slice(bytes);
    }

    /// Bytes recorded in total.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The most recent bytes (at most `max_kept`).
    pub fn kept(&self) -> &[u8] {
        &self.kept
    }

    /// The verifier, if a pattern is expected.
    pub fn verifier(&self) -> Option<&Verifier> {
        self.verifier.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_is_big_endian_sequence_numbers() {
        let mut out = Vec::new();
        Pattern::Counter.extend(0, 12, &mut out);
        assert_eq!(out, [0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2]);
        assert_eq!(Pattern::Counter.byte_at(4 * 0x0102_03ff + 3), 0xff);
    }

    #[test]
    fn lines_are_printable_and_numbered() {
        let mut out = Vec::new();
        Pattern::Lines {
            tag: b"vm".to_vec(),
        }
        .extend(0, 26, &mut out);
        assert_eq!(out, b"vm 00000000\r\nvm 00000001\r\n");
    }

    #[test]
    fn verifier_pinpoints_loss_duplication_and_tail_loss() {
        let pattern = Pattern::Noise { seed: 7 };
        let mut stream = Vec::new();
        pattern.extend(0, 100, &mut stream);

        let mut v = Verifier::new(pattern.clone());
        v.feed(&stream);
        assert_eq!(v.verify(100), Ok(()));
        assert!(matches!(
            v.verify(101),
            Err(VerifyError::Length { received: 100, .. })
        ));

        let mut lost = stream.clone();
        lost.remove(40);
        let mut v = Verifier::new(pattern.clone());
        v.feed(&lost);
        assert!(matches!(
            v.first_error(),
            Some(VerifyError::Mismatch { offset: 40, .. })
        ));

        let mut dup = stream.clone();
        dup.insert(60, stream[59]);
        let mut v = Verifier::new(pattern);
        v.feed(&dup[..30]);
        v.feed(&dup[30..]);
        assert!(matches!(
            v.first_error(),
            Some(VerifyError::Mismatch { offset: 60, .. })
        ));
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // the test is its own driver: any instant will do
    fn generator_paces_and_stops_at_the_limit() {
        let t = Instant::now();
        let mut g = Generator::new(OutputConfig {
            pattern: Pattern::Ramp,
            rate: Rate::new(3, Duration::from_millis(10)),
            limit: Some(7),
        });
        assert_eq!(g.poll(t), None, "not started");
        g.start(t);
        assert_eq!(g.poll(t), Some(vec![0, 1, 2]));
        assert_eq!(g.poll(t + Duration::from_millis(9)), None);
        assert_eq!(g.poll_timeout(), Some(t + Duration::from_millis(10)));
        assert_eq!(g.poll(t + Duration::from_millis(10)), Some(vec![3, 4, 5]));
        assert_eq!(g.poll(t + Duration::from_millis(20)), Some(vec![6]));
        assert!(g.finished());
        assert_eq!(g.poll_timeout(), None);
    }

    #[test]
    fn recorder_keeps_the_most_recent_bytes_only() {
        let mut r = Recorder::new(4, Some(Pattern::Ramp));
        r.record(&[0, 1, 2]);
        r.record(&[3, 4, 5]);
        assert_eq!(r.kept(), &[2, 3, 4, 5]);
        r.record(&[6, 7, 8, 9, 10]);
        assert_eq!(r.kept(), &[7, 8, 9, 10]);
        assert_eq!(r.total(), 11);
        assert_eq!(r.verifier().map(|v| v.verify(11)), Some(Ok(())));
    }
}
