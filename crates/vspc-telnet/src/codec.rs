//! A `tokio-util` codec over the sans-IO [`Decoder`] and the `encode_*` functions, for
//! `Framed`, `FramedRead` and `FramedWrite`.
//!
//! The codec frames the stream; it does not negotiate. Answer `WILL`/`DO` yourself (or drive
//! a [`crate::Telnet`] by hand when you want RFC 1143 negotiation), and tell the codec when
//! BINARY takes effect in either direction.

use std::io;
use std::ops::Range;

use bytes::{Bytes, BytesMut};

use crate::command::{Command, Verb};
use crate::decoder::{Decoder, Event};
use crate::encoder::{encode_command, encode_data, encode_negotiation, encode_subnegotiation};
use crate::error::DecodeError;

/// One item of a telnet stream, owned: what [`TelnetCodec`] yields and accepts.
///
/// Data and whole, unescaped subnegotiation payloads share the read buffer (no copy).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TelnetFrame {
    /// Application data (`0xFF` unescaped on receive, escaped on send). Consecutive frames
    /// may split what was one run of data on the wire.
    Data(Bytes),
    /// A two-byte command such as `IAC NOP`.
    Command(Command),
    /// `IAC WILL|WONT|DO|DONT <option>`.
    Negotiation {
        /// The verb.
        verb: Verb,
        /// The option code.
        option: u8,
    },
    /// `IAC SB <option> <payload> IAC SE`, the payload unescaped.
    Subnegotiation {
        /// The option code.
        option: u8,
        /// The unescaped payload.
        payload: Bytes,
    },
    /// A protocol violation in the received stream; decoding goes on after it. Never sent:
    /// encoding one is an [`io::ErrorKind::InvalidInput`] error.
    Error(DecodeError),
}

/// A telnet codec for `tokio_util::codec`: [`TelnetFrame`]s in and out, any chunking of the
/// input giving the same frames.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use bytes::Bytes;
/// use futures_util::{SinkExt, StreamExt};
/// use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt};
/// use tokio_util::codec::Framed;
/// use vspc_telnet::{option, TelnetCodec, TelnetFrame, Verb};
///
/// let (ours, mut peer) = duplex(64);
/// let mut telnet = Framed::new(ours, TelnetCodec::new());
///
/// // The peer offers BINARY, then sends data with an escaped 0xFF.
/// peer.write_all(b"\xff\xfb\x00up \xff\xff").await?;
/// let offer = TelnetFrame::Negotiation { verb: Verb::Will, option: option::BINARY };
/// assert_eq!(telnet.next().await.transpose()?, Some(offer));
/// assert_eq!(telnet.next().await.transpose()?, Some(TelnetFrame::Data(Bytes::from_static(b"up \xff"))));
///
/// // Accept it (the codec frames, the application negotiates), then send data.
/// telnet.send(TelnetFrame::Negotiation { verb: Verb::Do, option: option::BINARY }).await?;
/// telnet.codec_mut().set_binary_receive(true);
/// telnet.send(TelnetFrame::Data(Bytes::from_static(b"\xffok"))).await?;
/// let mut wire = [0; 7];
/// peer.read_exact(&mut wire).await?;
/// assert_eq!(&wire, b"\xff\xfd\x00\xff\xffok");
/// # Ok::<(), std::io::Error>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone, Default)]
pub struct TelnetCodec {
    decoder: Decoder,
    binary_send: bool,
}

impl TelnetCodec {
    /// A codec in NVT mode both ways, with the default subnegotiation cap (16 KiB).
    pub fn new() -> Self {
        Self::default()
    }

    /// A codec whose received subnegotiation payloads are capped at `max` bytes.
    pub fn with_max_subnegotiation(max: usize) -> Self {
        TelnetCodec {
            decoder: Decoder::with_max_subnegotiation(max),
            binary_send: false,
        }
    }

    /// Whether the peer sends binary (it performs BINARY): the NVT `CR NUL` rule is then off
    /// on receive.
    pub fn set_binary_receive(&mut self, binary: bool) {
        self.decoder.set_binary(binary);
    }

    /// Whether we send binary (we perform BINARY): a lone CR is then sent as is, not as
    /// `CR NUL`.
    pub fn set_binary_send(&mut self, binary: bool) {
        self.binary_send = binary;
    }

    /// The underlying decoder.
    pub fn decoder(&self) -> &Decoder {
        &self.decoder
    }
}

/// Where a borrowed slice of an event lies in the read buffer, if it lies there.
fn range_in(buffer: &[u8], slice: &[u8]) -> Option<Range<usize>> {
    let start = (slice.as_ptr() as usize).checked_sub(buffer.as_ptr() as usize)?;
    let end = start.checked_add(slice.len())?;
    (end <= buffer.len()).then_some(start..end)
}

/// A frame's bytes: a range of the consumed part of the read buffer, or a copy.
enum Piece {
    Shared(Range<usize>),
    Copied(Bytes),
}

impl Piece {
    fn of(buffer: &[u8], slice: &[u8]) -> Piece {
        match range_in(buffer, slice) {
            Some(range) => Piece::Shared(range),
            None => Piece::Copied(Bytes::copy_from_slice(slice)),
        }
    }

    fn bytes(self, consumed: &Bytes) -> Bytes {
        match self {
            Piece::Shared(range) => consumed.slice(range),
            Piece::Copied(bytes) => bytes,
        }
    }
}

/// A decoded event, detached from the borrow of the read buffer.
enum Decoded {
    Data(Piece),
    Subnegotiation(u8, Piece),
    Other(TelnetFrame),
}

impl tokio_util::codec::Decoder for TelnetCodec {
    type Item = TelnetFrame;
    type Error = io::Error;

    /// The next frame; `None` once the buffer is consumed (a command cut by the end of the
    /// buffer waits in the decoder for the next read).
    fn decode(&mut self, src: &mut BytesMut) -> io::Result<Option<TelnetFrame>> {
        let mut input: &[u8] = src;
        let decoded = match self.decoder.next_event(&mut input) {
            None => None,
            Some(Event::Data(data)) => Some(Decoded::Data(Piece::of(src, data))),
            Some(Event::Subnegotiation { option, payload }) => {
                Some(Decoded::Subnegotiation(option, Piece::of(src, payload)))
            }
            Some(Event::Command(command)) => Some(Decoded::Other(TelnetFrame::Command(command))),
            Some(Event::Negotiation { verb, option }) => {
                Some(Decoded::Other(TelnetFrame::Negotiation { verb, option }))
            }
            Some(Event::Error(error)) => Some(Decoded::Other(TelnetFrame::Error(error))),
        };
        let consumed = src.len() - input.len();
        let consumed = src.split_to(consumed).freeze();
        Ok(decoded.map(|decoded| match decoded {
            Decoded::Data(piece) => TelnetFrame::Data(piece.bytes(&consumed)),
            Decoded::Subnegotiation(option, piece) => TelnetFrame::Subnegotiation {
                option,
                payload: piece.bytes(&consumed),
            },
            Decoded::Other(frame) => frame,
        }))
    }
}

impl tokio_util::codec::Encoder<TelnetFrame> for TelnetCodec {
    type Error = io::Error;

    fn encode(&mut self, frame: TelnetFrame, dst: &mut BytesMut) -> io::Result<()> {
        match frame {
            TelnetFrame::Data(data) => encode_data(&data, self.binary_send, dst),
            TelnetFrame::Command(command) => encode_command(command, dst),
            TelnetFrame::Negotiation { verb, option } => encode_negotiation(verb, option, dst),
            TelnetFrame::Subnegotiation { option, payload } => {
                encode_subnegotiation(option, &payload, dst)
            }
            TelnetFrame::Error(error) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("a received protocol violation is not a frame to send: {error}"),
                ))
            }
        }
        Ok(())
    }
}
