//! Finding the next byte that interrupts data.
//!
//! Telnet runs are often short (a console line, then a command), and memchr's vector search
//! costs some tens of instructions to set up per call. So the first 64 bytes are scanned two
//! words at a time (SWAR), and memchr takes over only for longer runs.

use crate::consts::{CR, IAC};

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;
/// How far the word scan looks before handing over to memchr.
const SHORT: usize = 64;

/// Marks the zero bytes of `word`. Bits above the first marked byte may be false positives
/// (borrows), so only the lowest mark is meaningful.
#[inline(always)]
fn zero_bytes(word: u64) -> u64 {
    word.wrapping_sub(ONES) & !word & HIGHS
}

#[inline(always)]
fn first_marked(marks: u64) -> usize {
    (marks.trailing_zeros() / 8) as usize
}

/// Finds the first byte of `haystack` that `marks` flags: `marks(word)` sets the high bit of
/// each flagged byte of a little-endian word (lowest flag exact). Two words per round for the
/// first [`SHORT`] bytes, then `long` (a memchr call) for the rest.
#[inline(always)]
fn find(
    haystack: &[u8],
    marks: impl Fn(u64) -> u64,
    long: impl Fn(&[u8]) -> Option<usize>,
    is_needle: impl Fn(u8) -> bool,
) -> Option<usize> {
    let mut at = 0;
    while let Some(pair) = haystack.get(at..).and_then(<[u8]>::first_chunk::<16>) {
        let (low, high) = pair.split_at(8);
        let low = marks(u64::from_le_bytes(low.try_into().unwrap_or_default()));
        let high = marks(u64::from_le_bytes(high.try_into().unwrap_or_default()));
        if low | high != 0 {
            return Some(
                at + if low != 0 {
                    first_marked(low)
                } else {
                    8 + first_marked(high)
                },
            );
        }
        at += 16;
        if at >= SHORT {
            return long(haystack.get(at..)?).map(|found| at + found);
        }
    }
    let tail = haystack.get(at..)?;
    tail.iter()
        .position(|&byte| is_needle(byte))
        .map(|found| at + found)
}

/// The position of the first IAC (0xFF) in `haystack`.
#[inline]
pub(crate) fn find_iac(haystack: &[u8]) -> Option<usize> {
    find(
        haystack,
        |word| zero_bytes(!word),
        |rest| memchr::memchr(IAC, rest),
        |byte| byte == IAC,
    )
}

/// The position of the first IAC or CR in `haystack`.
#[inline]
pub(crate) fn find_iac_or_cr(haystack: &[u8]) -> Option<usize> {
    find(
        haystack,
        |word| zero_bytes(!word) | zero_bytes(word ^ (ONES * u64::from(CR))),
        |rest| memchr::memchr2(IAC, CR, rest),
        |byte| byte == IAC || byte == CR,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agrees_with_a_plain_search_at_every_position_and_length() {
        for len in 0..80 {
            for at in 0..=len {
                for needle in [IAC, CR] {
                    // Bytes that stress the borrow logic around the needle: 0xFE, 0x00, 0x0C, 0x0E.
                    let mut haystack: Vec<u8> = (0..len)
                        .map(|i| [0xfe, 0x00, 0x0c, 0x0e, b'a'][i % 5])
                        .collect();
                    if at < len {
                        haystack[at] = needle;
                    }
                    let plain_iac = haystack.iter().position(|&b| b == IAC);
                    let plain_both = haystack.iter().position(|&b| b == IAC || b == CR);
                    assert_eq!(find_iac(&haystack), plain_iac, "{haystack:02x?}");
                    assert_eq!(find_iac_or_cr(&haystack), plain_both, "{haystack:02x?}");
                }
            }
        }
    }
}
