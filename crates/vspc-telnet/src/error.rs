//! Errors reported by the codec. None of them stops decoding: the stream resynchronises and
//! the next event is decoded as usual.

/// A protocol violation found while decoding. Reported as [`Event::Error`](crate::Event::Error)
/// in stream order; decoding continues after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// A subnegotiation payload grew past the configured limit. The rest of it, up to
    /// `IAC SE`, was discarded; none of it was delivered as data.
    #[error("subnegotiation of option {option} longer than {limit} bytes: discarded")]
    SubnegotiationTooLong {
        /// The option being subnegotiated.
        option: u8,
        /// The configured payload limit in bytes.
        limit: usize,
    },
    /// Inside a subnegotiation, `IAC` was followed by a byte other than `IAC` or `SE`. The
    /// subnegotiation (unterminated, so possibly truncated) was discarded and `IAC <byte>` was
    /// decoded as an ordinary command.
    #[error("subnegotiation of option {option} interrupted by IAC {byte}: discarded")]
    SubnegotiationInterrupted {
        /// The option being subnegotiated.
        option: u8,
        /// The byte that followed `IAC`.
        byte: u8,
    },
}
