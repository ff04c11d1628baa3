//! The resumable, zero-copy telnet decoder.

use crate::command::{Command, Verb};
use crate::consts::{CR, IAC, NUL, SB, SE};
use crate::error::DecodeError;
use crate::scan::{find_iac, find_iac_or_cr};

/// Default cap on a subnegotiation payload (after unescaping).
pub const DEFAULT_MAX_SUBNEGOTIATION: usize = 16 * 1024;

/// One decoded item of a telnet stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// Application data, borrowed from the input. Consecutive events may split what was one
    /// run of data on the wire (at chunk boundaries, at `IAC IAC`, after a CR); concatenate
    /// them to recover the stream.
    Data(&'a [u8]),
    /// A two-byte command such as `IAC NOP`.
    Command(Command),
    /// `IAC WILL|WONT|DO|DONT <option>`.
    Negotiation {
        /// The verb.
        verb: Verb,
        /// The option code.
        option: u8,
    },
    /// `IAC SB <option> <payload> IAC SE`, with `IAC IAC` in the payload already unescaped.
    Subnegotiation {
        /// The option code.
        option: u8,
        /// The unescaped payload.
        payload: &'a [u8],
    },
    /// A protocol violation; decoding goes on after it.
    Error(DecodeError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Data,
    /// After a CR in NVT (non-binary) mode: a NUL here is padding to drop.
    AfterCr,
    Iac,
    Verb(Verb),
    SbOption,
    SbData,
    SbIac,
    /// Discarding an oversized subnegotiation up to `IAC SE`.
    SbDiscard,
    SbDiscardIac,
}

/// A decoded item expressed without borrowing: ranges refer to the input of the same `step`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Step {
    Data(usize, usize),
    Command(Command),
    Negotiation(Verb, u8),
    SubnegotiationInInput(u8, usize, usize),
    SubnegotiationBuffered(u8),
    Error(DecodeError),
}

/// A sans-IO telnet decoder: bytes in, [`Event`]s out, resumable at every byte.
///
/// Feed input in any chunking; a command split across chunks is completed by the next call.
/// "Need more bytes" is simply `None` from [`next_event`](Self::next_event) with the input
/// consumed: the partial command is kept in the decoder's state (a few bytes, or a
/// subnegotiation payload bounded by the configured limit).
///
/// Receive-side NVT rules apply unless [`set_binary`](Self::set_binary) says the peer sends
/// binary (it performs BINARY): `CR NUL` is delivered as `CR`, `CR LF` and everything else
/// unchanged. NUL and DC1 (0x11) are always data.
///
/// ```
/// use vspc_telnet::{Decoder, Event, Verb};
///
/// let mut decoder = Decoder::new();
/// let mut input: &[u8] = b"\xff\xfb\x00hello\xff\xff";
/// assert_eq!(
///     decoder.next_event(&mut input),
///     Some(Event::Negotiation { verb: Verb::Will, option: 0 })
/// );
/// assert_eq!(decoder.next_event(&mut input), Some(Event::Data(b"hello\xff")));
/// assert_eq!(decoder.next_event(&mut input), None);
/// ```
#[derive(Debug, Clone)]
pub struct Decoder {
    state: State,
    binary: bool,
    sb_option: u8,
    sb_buffer: Vec<u8>,
    max_subnegotiation: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    /// A decoder in NVT mode with the default subnegotiation cap (16 KiB).
    pub fn new() -> Self {
        Self::with_max_subnegotiation(DEFAULT_MAX_SUBNEGOTIATION)
    }

    /// A decoder whose subnegotiation payloads are capped at `max` bytes (after unescaping).
    pub fn with_max_subnegotiation(max: usize) -> Self {
        Decoder {
            state: State::Data,
            binary: false,
            sb_option: 0,
            sb_buffer: Vec::new(),
            max_subnegotiation: max,
        }
    }

    /// Whether the peer sends binary (it performs BINARY): when true the NVT CR rules are off.
    pub fn set_binary(&mut self, binary: bool) {
        self.binary = binary;
        if binary && self.state == State::AfterCr {
            self.state = State::Data;
        }
    }

    /// Whether binary receive mode is in effect.
    pub fn is_binary(&self) -> bool {
        self.binary
    }

    /// Whether the decoder is between items (not inside a command or subnegotiation).
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Data | State::AfterCr)
    }

    /// Frees the subnegotiation buffer when no subnegotiation is in progress (it keeps its
    /// capacity between subnegotiations so that steady-state decoding allocates nothing).
    pub fn shrink_to_fit(&mut self) {
        if self.is_idle() {
            self.sb_buffer = Vec::new();
        }
    }

    /// Decodes the next event from `input` and advances `input` past it.
    ///
    /// Returns `None` once `input` is exhausted. Data borrows `input`; a subnegotiation
    /// payload borrows `input` when it arrived whole and unescaped, and the decoder otherwise.
    #[inline(always)]
    pub fn next_event<'e, 'i: 'e>(&'e mut self, input: &mut &'i [u8]) -> Option<Event<'e>> {
        let whole: &'i [u8] = input;
        let (consumed, step) = self.step(whole);
        *input = whole.get(consumed..).unwrap_or_default();
        step.map(|step| self.materialize(step, whole))
    }

    /// Decodes all of `input`, calling `on_event` for each event in order.
    pub fn decode(&mut self, mut input: &[u8], mut on_event: impl FnMut(Event<'_>)) {
        while let Some(event) = self.next_event(&mut input) {
            on_event(event);
        }
    }

    #[inline]
    pub(crate) fn materialize<'e>(&'e self, step: Step, input: &'e [u8]) -> Event<'e> {
        match step {
            Step::Data(start, end) => Event::Data(input.get(start..end).unwrap_or_default()),
            Step::Command(command) => Event::Command(command),
            Step::Negotiation(verb, option) => Event::Negotiation { verb, option },
            Step::SubnegotiationInInput(option, start, end) => Event::Subnegotiation {
                option,
                payload: input.get(start..end).unwrap_or_default(),
            },
            Step::SubnegotiationBuffered(option) => Event::Subnegotiation {
                option,
                payload: self.buffered_payload(),
            },
            Step::Error(error) => Event::Error(error),
        }
    }

    /// The state machine. Returns how much of `input` was consumed and the event found, if
    /// any; stops right after the first event so that the caller can act on it (a BINARY
    /// change, say) before the following bytes are decoded.
    #[inline(always)]
    pub(crate) fn step(&mut self, input: &[u8]) -> (usize, Option<Step>) {
        // The common case on a VM connection, a data run in binary mode, without the
        // general loop: the state machine below handles everything else.
        if self.state == State::Data && self.binary {
            match find_iac(input) {
                None if input.is_empty() => return (0, None),
                None => return (input.len(), Some(Step::Data(0, input.len()))),
                Some(0) => {}
                Some(at) if input.get(at + 1) == Some(&IAC) => {
                    return (at + 2, Some(Step::Data(0, at + 1)));
                }
                Some(at) => {
                    self.state = State::Iac;
                    return (at + 1, Some(Step::Data(0, at)));
                }
            }
        }
        // Right after a data run: a two-byte command, or a subnegotiation that arrived whole.
        if self.state == State::Iac {
            match input {
                [SB, option, payload @ ..] => {
                    if let Some(end) = find_iac(payload) {
                        if payload.get(end + 1) == Some(&SE) && end <= self.max_subnegotiation {
                            self.state = State::Data;
                            return (
                                end + 4,
                                Some(Step::SubnegotiationInInput(*option, 2, end + 2)),
                            );
                        }
                    }
                }
                [code, ..] => {
                    if let Some(command) = Command::from_code(*code) {
                        self.state = State::Data;
                        return (1, Some(Step::Command(command)));
                    }
                }
                [] => return (0, None),
            }
        }
        let mut pos = 0;
        while pos < input.len() {
            let rest = &input[pos..];
            match self.state {
                State::Data => {
                    let found = if self.binary {
                        find_iac(rest)
                    } else {
                        find_iac_or_cr(rest)
                    };
                    let Some(offset) = found else {
                        return (input.len(), Some(Step::Data(pos, input.len())));
                    };
                    let at = pos + offset;
                    if rest[offset] == CR {
                        self.state = State::AfterCr;
                        return (at + 1, Some(Step::Data(pos, at + 1)));
                    }
                    // IAC IAC in one chunk: deliver the first 0xFF with the data before it.
                    if rest.get(offset + 1) == Some(&IAC) {
                        return (at + 2, Some(Step::Data(pos, at + 1)));
                    }
                    self.state = State::Iac;
                    if offset > 0 {
                        return (at + 1, Some(Step::Data(pos, at)));
                    }
                    pos = at + 1;
                }
                State::AfterCr => {
                    self.state = State::Data;
                    if rest[0] == NUL {
                        pos += 1;
                    }
                }
                State::Iac => {
                    let byte = rest[0];
                    pos += 1;
                    self.state = State::Data;
                    if byte == IAC {
                        return (pos, Some(Step::Data(pos - 1, pos)));
                    }
                    if byte == SB {
                        self.state = State::SbOption;
                        continue;
                    }
                    if let Some(verb) = Verb::from_code(byte) {
                        self.state = State::Verb(verb);
                        continue;
                    }
                    if let Some(command) = Command::from_code(byte) {
                        return (pos, Some(Step::Command(command)));
                    }
                }
                State::Verb(verb) => {
                    self.state = State::Data;
                    return (pos + 1, Some(Step::Negotiation(verb, rest[0])));
                }
                State::SbOption => {
                    self.sb_option = rest[0];
                    self.sb_buffer.clear();
                    self.state = State::SbData;
                    pos += 1;
                    // Fast path: the whole payload is here, unescaped, so borrow it.
                    let payload = &input[pos..];
                    if let Some(end) = find_iac(payload) {
                        if payload.get(end + 1) == Some(&SE) && end <= self.max_subnegotiation {
                            self.state = State::Data;
                            let option = self.sb_option;
                            return (
                                pos + end + 2,
                                Some(Step::SubnegotiationInInput(option, pos, pos + end)),
                            );
                        }
                    }
                }
                State::SbData => {
                    let run = find_iac(rest).unwrap_or(rest.len());
                    if !self.append_subnegotiation(&rest[..run]) {
                        self.state = State::SbDiscard;
                        return (pos + run, Some(Step::Error(self.too_long())));
                    }
                    pos += run;
                    if pos < input.len() {
                        self.state = State::SbIac;
                        pos += 1;
                    }
                }
                State::SbIac => {
                    let byte = rest[0];
                    match byte {
                        IAC => {
                            pos += 1;
                            self.state = State::SbData;
                            if !self.append_subnegotiation(&[IAC]) {
                                self.state = State::SbDiscard;
                                return (pos, Some(Step::Error(self.too_long())));
                            }
                        }
                        SE => {
                            self.state = State::Data;
                            let option = self.sb_option;
                            return (pos + 1, Some(Step::SubnegotiationBuffered(option)));
                        }
                        _ => {
                            // As libtelnet does: the subnegotiation ends here and `IAC <byte>`
                            // is decoded as a command. Unlike libtelnet the truncated payload
                            // is not delivered, so a half message is never acted upon.
                            self.state = State::Iac;
                            self.sb_buffer.clear();
                            let option = self.sb_option;
                            return (
                                pos,
                                Some(Step::Error(DecodeError::SubnegotiationInterrupted {
                                    option,
                                    byte,
                                })),
                            );
                        }
                    }
                }
                State::SbDiscard => {
                    match find_iac(rest) {
                        Some(offset) => {
                            pos += offset + 1;
                            self.state = State::SbDiscardIac;
                        }
                        None => pos = input.len(),
                    };
                }
                State::SbDiscardIac => match rest[0] {
                    IAC => {
                        pos += 1;
                        self.state = State::SbDiscard;
                    }
                    SE => {
                        pos += 1;
                        self.state = State::Data;
                    }
                    // Same resynchronisation as above; the overflow was already reported.
                    _ => self.state = State::Iac,
                },
            }
        }
        (pos, None)
    }

    #[inline]
    pub(crate) fn buffered_payload(&self) -> &[u8] {
        &self.sb_buffer
    }

    fn append_subnegotiation(&mut self, bytes: &[u8]) -> bool {
        if self.sb_buffer.len() + bytes.len() > self.max_subnegotiation {
            self.sb_buffer.clear();
            return false;
        }
        self.sb_buffer.extend_from_slice(bytes);
        true
    }

    fn too_long(&self) -> DecodeError {
        DecodeError::SubnegotiationTooLong {
            option: self.sb_option,
            limit: self.max_subnegotiation,
        }
    }
}
