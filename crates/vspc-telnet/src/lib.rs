//! A sans-IO telnet codec for serial-console traffic: a zero-copy decoder, an encoder, RFC 1143
//! option negotiation and RFC 2217 COM-PORT messages.
//!
//! Built for VMware virtual serial port concentrators (option 232 rides on it, see the
//! `vspc-proto` crate), useful for any telnet peer.
//!
//! # Pieces
//! - [`Decoder`]: bytes in any chunking to [`Event`]s; data borrows the input.
//! - [`encode_data`], [`encode_command`], [`encode_negotiation`], [`encode_subnegotiation`]:
//!   stateless encoding into any [`bytes::BufMut`] (`BytesMut`, `Vec<u8>`).
//! - [`Negotiator`]: the Q method of RFC 1143 for both sides of every option, under a
//!   [`Policy`]; it never answers an answer, so negotiation cannot loop.
//! - [`Telnet`]: the three together with an outbound buffer: the type most users want.
//! - [`comport`]: RFC 2217 messages, typed.
//! - With the `tokio-codec` feature, `TelnetCodec`: the decoder and the encoder as a
//!   `tokio_util::codec` `Decoder` and `Encoder`, for `Framed`.
//!
//! # The driving contract
//! Nothing here performs I/O, reads a clock or spawns anything. Feed received bytes to
//! [`Telnet::next_event`] until it returns `None`, handling each event as it comes; after
//! input or any `send_*` call, drain [`Telnet::poll_transmit`] and write the bytes to the
//! peer. There is no time model: telnet itself has no timers.
//!
//! # Data rules
//! 0xFF is sent as `IAC IAC` and delivered as one 0xFF. NUL and DC1 are always data. While
//! BINARY is off in a direction the NVT rules apply to it: a received `CR NUL` is delivered as
//! CR, and a CR sent without a following LF goes out as `CR NUL`. With BINARY on (as on every
//! VM connection) bytes pass unchanged.
//!
//! # Features
//! - `tokio-codec`: `TelnetCodec` and `TelnetFrame`, for `tokio_util::codec::Framed`. The
//!   sans-IO core depends on neither tokio nor tokio-util; this feature adds tokio-util only.
//!
//! # Panics and bounds
//! No function panics on any input. The only accumulator is the subnegotiation buffer,
//! capped by [`TelnetConfig::max_subnegotiation`] (default 16 KiB): a longer payload is
//! reported as [`DecodeError::SubnegotiationTooLong`] and discarded up to `IAC SE`, and none
//! of it leaks into data. Steady-state decoding allocates nothing.
//!
//! ```
//! use vspc_telnet::{option, Decoder, Event, Verb};
//!
//! // ESXi's first bytes on a VM connection, split across two reads.
//! let mut decoder = Decoder::new();
//! let mut events = Vec::new();
//! for chunk in [&b"\xff\xfb"[..], &b"\x25\xff\xfa\xe8\x46S"[..], &b"vSPC.py\xff\xf0"[..]] {
//!     decoder.decode(chunk, |event| events.push(format!("{event:?}")));
//! }
//! assert_eq!(events, [
//!     format!("{:?}", Event::Negotiation { verb: Verb::Will, option: option::AUTHENTICATION }),
//!     format!("{:?}", Event::Subnegotiation { option: option::VMWARE_EXT, payload: b"\x46SvSPC.py" }),
//! ]);
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

#[cfg(feature = "tokio-codec")]
mod codec;
mod command;
pub mod comport;
pub mod consts;
mod decoder;
mod encoder;
mod error;
mod negotiation;
mod scan;
mod telnet;

#[cfg(feature = "tokio-codec")]
pub use codec::{TelnetCodec, TelnetFrame};
pub use command::{Command, Side, UnknownCommand, Verb};
pub use consts::option;
pub use decoder::{Decoder, Event, DEFAULT_MAX_SUBNEGOTIATION};
pub use encoder::{
    encode_command, encode_data, encode_negotiation, encode_subnegotiation, escape_iac, escaped_len,
};
pub use error::DecodeError;
pub use negotiation::{Negotiator, OptionChange, OptionState, Policy};
pub use telnet::{Telnet, TelnetConfig, TelnetEvent};

// The README's example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
