//! Fault injection: how writes are cut, and one-shot faults on demand.

use bytes::Bytes;

/// How each write of the emulated host is cut into the writes the proxy sees.
///
/// A transform on outgoing writes only: what the host says is unchanged, only where TCP
/// segment boundaries fall.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Segmentation {
    /// As ESXi writes (the captures of `docs/esxi-wire.md`): negotiation replies to one read
    /// share a write, each option-232 reply is a write of its own, KNOWN-SUBOPTIONS-1 shares
    /// one with DO-PROXY (or with VMOTION-PEER and `WILL COM-PORT`).
    #[default]
    Esxi,
    /// Every byte a write of its own: every command split at every byte.
    EveryByte,
    /// Each write cut at pseudo-random points into pieces of 1 to `max` bytes.
    Random {
        /// The seed of the cuts (reproducible).
        seed: u64,
        /// The largest piece (0 counts as 1).
        max: usize,
    },
}

/// A fault injected on demand with [`EmulatedVm::inject`](crate::EmulatedVm::inject), on the
/// connection currently carrying the VM.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// These bytes, raw, as one write: not telnet-encoded, so they can break framing and
    /// corrupt the data stream (the proxy must survive, nothing more can be promised).
    Garbage(Bytes),
    /// Telnet noise a correct proxy must absorb without any effect on the data stream:
    /// `IAC NOP`, an offer of an option nobody knows (`WILL 99`), a request for one
    /// (`DO 98`), and a subnegotiation of an option never negotiated.
    TelnetNoise,
    /// An option-232 message with an unassigned command `code`: the proxy must answer
    /// UNKNOWN-SUBOPTION-RCVD-2(code) and carry on.
    UnknownSuboption {
        /// The command code (use an unassigned one, e.g. 99).
        code: u8,
        /// Its payload.
        payload: Bytes,
    },
    /// A VM-NAME subnegotiation with a payload of `len` bytes: a proxy must cap it and discard
    /// it whole, leaking nothing into the data.
    OversizedSubnegotiation {
        /// Payload length in bytes.
        len: usize,
    },
    /// Writes the first half of a VM-NAME message, then closes the connection (a host crash
    /// mid-message).
    AbruptClose,
    /// From now on the host neither reads nor writes on this connection and never closes it:
    /// a host that stopped answering (dead, or partitioned away).
    Silence,
}

/// A small deterministic PRNG for cut points (xorshift64*); never seeded from the clock.
#[derive(Debug, Clone)]
pub(crate) struct Cuts {
    state: u64,
}

impl Cuts {
    pub(crate) fn new(seed: u64) -> Self {
        Cuts {
            state: seed ^ 0x2545_f491_4f6c_dd1d | 1,
        }
    }

    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Cuts `write` as `segmentation` says, pushing the pieces to `out`.
pub(crate) fn segment(
    write: Bytes,
    segmentation: Segmentation,
    cuts: &mut Cuts,
    mut out: impl FnMut(Bytes),
) {
    match segmentation {
        Segmentation::Esxi => out(write),
        Segmentation::EveryByte => {
            for i in 0..write.len() {
                out(write.slice(i..=i));
            }
        }
        Segmentation::Random { max, .. } => {
            let max = max.max(1) as u64;
            let mut rest = write;
            while !rest.is_empty() {
                let len = (1 + cuts.next() % max).min(rest.len() as u64) as usize;
                out(rest.split_to(len));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(s: Segmentation, bytes: &'static [u8]) -> Vec<Bytes> {
        let mut cuts = Cuts::new(match s {
            Segmentation::Random { seed, .. } => seed,
            _ => 0,
        });
        let mut out = Vec::new();
        segment(Bytes::from_static(bytes), s, &mut cuts, |b| out.push(b));
        out
    }

    #[test]
    fn every_byte_and_random_cuts_keep_the_bytes_in_order() {
        assert_eq!(
            cut(Segmentation::Esxi, b"abc"),
            vec![Bytes::from_static(b"abc")]
        );
        assert_eq!(cut(Segmentation::EveryByte, b"abc").len(), 3);
        let pieces = cut(
            Segmentation::Random { seed: 3, max: 4 },
            b"0123456789abcdef",
        );
        assert!(pieces.len() >= 4 && pieces.iter().all(|p| (1..=4).contains(&p.len())));
        assert_eq!(pieces.concat(), b"0123456789abcdef");
    }
}
