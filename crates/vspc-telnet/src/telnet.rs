//! The combined endpoint: decoder, negotiator and encoder behind one sans-IO type.

use bytes::{Bytes, BytesMut};

use crate::command::{Command, Side, Verb};
use crate::consts::option::BINARY;
use crate::decoder::{Decoder, Step, DEFAULT_MAX_SUBNEGOTIATION};
use crate::encoder::{encode_command, encode_data, encode_subnegotiation};
use crate::error::DecodeError;
use crate::negotiation::{Negotiator, OptionState, Policy};

/// Configuration of a [`Telnet`] endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelnetConfig {
    /// What the peer may enable.
    pub policy: Policy,
    /// Cap on a subnegotiation payload, in bytes after unescaping.
    pub max_subnegotiation: usize,
}

impl Default for TelnetConfig {
    fn default() -> Self {
        TelnetConfig {
            policy: Policy::new(),
            max_subnegotiation: DEFAULT_MAX_SUBNEGOTIATION,
        }
    }
}

/// What a [`Telnet`] endpoint found in its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TelnetEvent<'a> {
    /// Application data, borrowed from the input (see [`Event::Data`](crate::Event::Data)).
    Data(&'a [u8]),
    /// A two-byte command.
    Command(Command),
    /// A complete subnegotiation, payload unescaped.
    Subnegotiation {
        /// The option code.
        option: u8,
        /// The unescaped payload.
        payload: &'a [u8],
    },
    /// An option came into or went out of effect. Replies were already queued.
    OptionChanged {
        /// Who performs the option.
        side: Side,
        /// The option code.
        option: u8,
        /// Whether it is now in effect.
        enabled: bool,
    },
    /// A protocol violation; decoding goes on after it.
    Error(DecodeError),
}

/// A sans-IO telnet endpoint: decoding, RFC 1143 negotiation and encoding, with an outbound
/// buffer.
///
/// # Driving it
/// Input goes in through [`next_event`](Self::next_event), called until it returns `None`;
/// each event is handled before the next is decoded, so that a BINARY change applies from the
/// exact byte where it was negotiated. Negotiation is answered from the [`Policy`] as the
/// bytes are decoded. After input, and after any `send_*` or [`request`](Self::request), drain
/// [`poll_transmit`](Self::poll_transmit) until it returns `None` and write what it returns.
///
/// The endpoint reads no clock and starts no timer; it never panics on any input. Memory is
/// bounded by the subnegotiation cap plus what the caller leaves unpolled in the outbound
/// buffer, and what it sends while our BINARY offer awaits an answer (see
/// [`send_data`](Self::send_data) and [`stop_waiting_for_binary`](Self::stop_waiting_for_binary)).
///
/// ```
/// use vspc_telnet::{option, Policy, Side, Telnet, TelnetConfig, TelnetEvent};
///
/// let policy = Policy::new().accept_both(option::BINARY);
/// let mut telnet = Telnet::new(TelnetConfig { policy, ..TelnetConfig::default() });
/// let mut input: &[u8] = b"\xff\xfb\x00\xff\xfb\x25data";
/// assert_eq!(
///     telnet.next_event(&mut input),
///     Some(TelnetEvent::OptionChanged { side: Side::Remote, option: 0, enabled: true })
/// );
/// assert_eq!(telnet.next_event(&mut input), Some(TelnetEvent::Data(b"data")));
/// assert_eq!(telnet.next_event(&mut input), None);
/// // DO BINARY, then DONT AUTHENTICATION (refused by the policy).
/// assert_eq!(telnet.poll_transmit().as_deref(), Some(&b"\xff\xfd\x00\xff\xfe\x25"[..]));
/// assert_eq!(telnet.poll_transmit(), None);
/// ```
#[derive(Debug, Clone)]
pub struct Telnet {
    decoder: Decoder,
    negotiator: Negotiator,
    outbound: BytesMut,
    /// What the application sent while our BINARY offer awaited its answer, in order.
    deferred: Vec<Deferred>,
    /// False once the application gave up waiting for the answer to our BINARY offer.
    wait_for_binary: bool,
}

/// An application send held back until BINARY settles (see [`Telnet::send_data`]).
#[derive(Debug, Clone)]
enum Deferred {
    Data(Bytes),
    Command(Command),
    Subnegotiation(u8, Bytes),
    Raw(Bytes),
}

impl Telnet {
    /// An endpoint with every option disabled.
    pub fn new(config: TelnetConfig) -> Self {
        Telnet {
            decoder: Decoder::with_max_subnegotiation(config.max_subnegotiation),
            negotiator: Negotiator::new(config.policy),
            outbound: BytesMut::new(),
            deferred: Vec::new(),
            wait_for_binary: true,
        }
    }

    /// Decodes the next event from `input`, advancing it; `None` once `input` is exhausted
    /// (a partial command is kept for the next call). Negotiation is answered internally and
    /// surfaces only as [`TelnetEvent::OptionChanged`].
    #[inline]
    pub fn next_event<'e, 'i: 'e>(&'e mut self, input: &mut &'i [u8]) -> Option<TelnetEvent<'e>> {
        loop {
            let whole: &'i [u8] = input;
            let (consumed, step) = self.decoder.step(whole);
            *input = whole.get(consumed..).unwrap_or_default();
            let event = match step? {
                Step::Negotiation(verb, option) => {
                    let change = self.negotiator.receive(verb, option, &mut self.outbound);
                    if option == BINARY {
                        self.flush_deferred();
                    }
                    match change {
                        Some(change) => {
                            self.apply_binary();
                            TelnetEvent::OptionChanged {
                                side: change.side,
                                option: change.option,
                                enabled: change.enabled,
                            }
                        }
                        None => continue,
                    }
                }
                Step::Data(start, end) => {
                    TelnetEvent::Data(whole.get(start..end).unwrap_or_default())
                }
                Step::Command(command) => TelnetEvent::Command(command),
                Step::SubnegotiationInInput(option, start, end) => TelnetEvent::Subnegotiation {
                    option,
                    payload: whole.get(start..end).unwrap_or_default(),
                },
                Step::SubnegotiationBuffered(option) => TelnetEvent::Subnegotiation {
                    option,
                    payload: self.decoder.buffered_payload(),
                },
                Step::Error(error) => TelnetEvent::Error(error),
            };
            return Some(event);
        }
    }

    /// Decodes all of `input`, calling `on_event` for each event in order.
    pub fn decode(&mut self, mut input: &[u8], mut on_event: impl FnMut(TelnetEvent<'_>)) {
        while let Some(event) = self.next_event(&mut input) {
            on_event(event);
        }
    }

    fn apply_binary(&mut self) {
        let binary = self.negotiator.is_enabled(Side::Remote, BINARY);
        self.decoder.set_binary(binary);
    }

    /// Asks the peer to enable or disable `option` on `side` (RFC 1143 rules: nothing is sent
    /// when it is already so or already asked).
    pub fn request(&mut self, side: Side, option: u8, enable: bool) {
        self.negotiator
            .request(side, option, enable, &mut self.outbound);
    }

    /// Whether `option` is in effect on `side`.
    pub fn is_enabled(&self, side: Side, option: u8) -> bool {
        self.negotiator.is_enabled(side, option)
    }

    /// The Q-method state of `option` on `side`.
    pub fn option_state(&self, side: Side, option: u8) -> OptionState {
        self.negotiator.state(side, option)
    }

    /// The negotiator, for inspection.
    pub fn negotiator(&self) -> &Negotiator {
        &self.negotiator
    }

    /// Replaces the policy for future requests from the peer.
    pub fn set_policy(&mut self, policy: Policy) {
        self.negotiator.set_policy(policy);
    }

    /// Queues application data: 0xFF doubled, and CR sent as `CR NUL` unless we perform
    /// BINARY.
    ///
    /// While our offer of BINARY awaits the peer's answer, the data is deferred and encoded
    /// once the answer comes: the peer decodes binary from the moment it agrees, so NVT
    /// encoding in that window would hand it a stray NUL after every CR. Anything sent after
    /// deferred data (commands, subnegotiations) is deferred behind it, so order is kept.
    pub fn send_data(&mut self, data: &[u8]) {
        if self.must_defer() || self.binary_offer_pending() {
            self.deferred
                .push(Deferred::Data(Bytes::copy_from_slice(data)));
            return;
        }
        let binary = self.negotiator.is_enabled(Side::Local, BINARY);
        encode_data(data, binary, &mut self.outbound);
    }

    /// Queues `IAC <command>` (after any deferred data, see [`send_data`](Self::send_data)).
    pub fn send_command(&mut self, command: Command) {
        if self.must_defer() {
            self.deferred.push(Deferred::Command(command));
            return;
        }
        encode_command(command, &mut self.outbound);
    }

    /// Queues a raw `IAC <verb> <option>` outside the Q method. Prefer
    /// [`request`](Self::request); this exists for emulating peers that misbehave.
    pub fn send_negotiation_raw(&mut self, verb: Verb, option: u8) {
        crate::encoder::encode_negotiation(verb, option, &mut self.outbound);
    }

    /// Queues `IAC SB <option> <payload> IAC SE` with the payload escaped (after any
    /// deferred data, see [`send_data`](Self::send_data)).
    pub fn send_subnegotiation(&mut self, option: u8, payload: &[u8]) {
        if self.must_defer() {
            self.deferred.push(Deferred::Subnegotiation(
                option,
                Bytes::copy_from_slice(payload),
            ));
            return;
        }
        encode_subnegotiation(option, payload, &mut self.outbound);
    }

    /// Queues bytes exactly as given, for a caller that encodes itself (after any deferred
    /// data, see [`send_data`](Self::send_data)).
    pub fn send_raw(&mut self, bytes: &[u8]) {
        if self.must_defer() {
            self.deferred
                .push(Deferred::Raw(Bytes::copy_from_slice(bytes)));
            return;
        }
        self.outbound.extend_from_slice(bytes);
    }

    /// Bytes of application sends deferred until BINARY settles.
    pub fn deferred_len(&self) -> usize {
        self.deferred
            .iter()
            .map(|item| match item {
                Deferred::Data(bytes) | Deferred::Raw(bytes) => bytes.len(),
                Deferred::Subnegotiation(_, payload) => payload.len() + 5,
                Deferred::Command(_) => 2,
            })
            .sum()
    }

    fn binary_offer_pending(&self) -> bool {
        self.wait_for_binary && self.negotiator.state(Side::Local, BINARY) == OptionState::WantYes
    }

    /// Stops deferring sends until the peer answers our BINARY offer, and encodes what was
    /// deferred in the mode now in effect. For peers that may never answer (a raw TCP client
    /// that does not speak telnet): the endpoint has no clock, so the application calls this
    /// when its own deadline passes.
    pub fn stop_waiting_for_binary(&mut self) {
        self.wait_for_binary = false;
        self.flush_deferred();
    }

    fn must_defer(&self) -> bool {
        !self.deferred.is_empty()
    }

    /// Encodes what was deferred, now that BINARY has settled one way or the other.
    fn flush_deferred(&mut self) {
        if self.deferred.is_empty() || self.binary_offer_pending() {
            return;
        }
        let binary = self.negotiator.is_enabled(Side::Local, BINARY);
        for item in std::mem::take(&mut self.deferred) {
            match item {
                Deferred::Data(data) => encode_data(&data, binary, &mut self.outbound),
                Deferred::Command(command) => encode_command(command, &mut self.outbound),
                Deferred::Subnegotiation(option, payload) => {
                    encode_subnegotiation(option, &payload, &mut self.outbound)
                }
                Deferred::Raw(bytes) => self.outbound.extend_from_slice(&bytes),
            }
        }
    }

    /// Everything queued since the last call, as one write; `None` when nothing is queued.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        (!self.outbound.is_empty()).then(|| self.outbound.split().freeze())
    }

    /// Moves everything queued into `out` (no allocation when `out` has room); returns how
    /// many bytes were moved.
    pub fn transmit_into(&mut self, out: &mut impl bytes::BufMut) -> usize {
        let len = self.outbound.len();
        out.put_slice(&self.outbound);
        self.outbound.clear();
        len
    }

    /// How many bytes are queued for transmission.
    pub fn pending_transmit_len(&self) -> usize {
        self.outbound.len()
    }

    /// Frees what the endpoint holds and does not use: an empty transmit queue's buffer, the
    /// subnegotiation buffer between subnegotiations, spare table capacity. For applications
    /// holding many idle connections: call it when a connection goes quiet (its transmit
    /// queue drained). Nothing observable changes; the next send or subnegotiation allocates
    /// afresh.
    pub fn shrink_to_fit(&mut self) {
        if self.outbound.is_empty() {
            self.outbound = BytesMut::new();
        }
        if self.deferred.is_empty() {
            self.deferred = Vec::new();
        }
        self.decoder.shrink_to_fit();
        self.negotiator.shrink_to_fit();
    }

    /// Whether the decoder is between items, not inside a command or subnegotiation.
    pub fn is_decoder_idle(&self) -> bool {
        self.decoder.is_idle()
    }
}
