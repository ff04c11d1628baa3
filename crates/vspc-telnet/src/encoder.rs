//! Encoding into a caller's buffer: any [`BufMut`], such as `BytesMut` or `Vec<u8>`.
//!
//! The functions are stateless and write complete items, so any sequence of calls produces a
//! stream that [`Decoder`](crate::Decoder) decodes back to the same events.

use bytes::BufMut;

use crate::command::{Command, Verb};
use crate::consts::{CR, IAC, LF, NUL, SB, SE};

/// Writes application data, doubling every 0xFF.
///
/// With `binary` false (we do not perform BINARY) the NVT rule applies as well: a CR not
/// followed by LF in `data` is sent as `CR NUL`, which the peer decodes back to CR. A CR that
/// ends `data` is sent as `CR NUL` too, so the encoder keeps no state between calls.
///
/// ```
/// let mut out = Vec::new();
/// vspc_telnet::encode_data(b"a\xffb\r", false, &mut out);
/// assert_eq!(out, b"a\xff\xffb\r\0");
/// ```
pub fn encode_data(data: &[u8], binary: bool, out: &mut impl BufMut) {
    let mut rest = data;
    loop {
        let found = if binary {
            memchr::memchr(IAC, rest)
        } else {
            memchr::memchr2(IAC, CR, rest)
        };
        let Some(at) = found else {
            out.put_slice(rest);
            return;
        };
        out.put_slice(&rest[..=at]);
        if rest[at] == IAC {
            out.put_u8(IAC);
        } else if rest.get(at + 1) != Some(&LF) {
            out.put_u8(NUL);
        }
        rest = &rest[at + 1..];
    }
}

/// Writes `IAC <command>`.
pub fn encode_command(command: Command, out: &mut impl BufMut) {
    out.put_slice(&[IAC, command.code()]);
}

/// Writes `IAC <verb> <option>`.
pub fn encode_negotiation(verb: Verb, option: u8, out: &mut impl BufMut) {
    out.put_slice(&[IAC, verb.code(), option]);
}

/// Writes `IAC SB <option> <payload> IAC SE`, doubling every 0xFF of the payload.
///
/// ```
/// let mut out = Vec::new();
/// vspc_telnet::encode_subnegotiation(232, &[0x29, 0xff, 0xf0], &mut out);
/// assert_eq!(out, b"\xff\xfa\xe8\x29\xff\xff\xf0\xff\xf0");
/// ```
pub fn encode_subnegotiation(option: u8, payload: &[u8], out: &mut impl BufMut) {
    out.put_slice(&[IAC, SB, option]);
    escape_iac(payload, out);
    out.put_slice(&[IAC, SE]);
}

/// Writes `bytes` with every 0xFF doubled and nothing else changed.
pub fn escape_iac(bytes: &[u8], out: &mut impl BufMut) {
    let mut rest = bytes;
    while let Some(at) = memchr::memchr(IAC, rest) {
        out.put_slice(&rest[..=at]);
        out.put_u8(IAC);
        rest = &rest[at + 1..];
    }
    out.put_slice(rest);
}

/// The length of `bytes` once escaped by [`escape_iac`].
pub fn escaped_len(bytes: &[u8]) -> usize {
    bytes.len() + memchr::memchr_iter(IAC, bytes).count()
}
