//! Pieces shared by the proxy-side and VM-side sessions.

use core::fmt;

use bytes::Bytes;
use vspc_telnet::comport::ComPortError;
use vspc_telnet::DecodeError;

use crate::command::Command;
use crate::message::MessageError;

/// An application-chosen identifier of one VM connection (one [`ProxySession`]).
///
/// The coordinator refers to sessions by it; the application maps it back to its session
/// objects. Any unique value works (a counter, a slab index).
///
/// [`ProxySession`]: crate::ProxySession
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "session#{}", self.0)
    }
}

/// A protocol violation by the peer. Never fatal: the session reports it as an event, answers
/// where the protocol defines an answer (UNKNOWN-SUBOPTION-RCVD, WONT-PROXY) and goes on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The telnet layer found a framing problem (oversized or interrupted subnegotiation).
    #[error("telnet: {0}")]
    Telnet(#[from] DecodeError),
    /// A malformed option-232 message.
    #[error("option 232: {0}")]
    Message(#[from] MessageError),
    /// A well-formed message this side does not accept from the peer (e.g. a proxy-only
    /// command sent by the VM). Answered with UNKNOWN-SUBOPTION-RCVD where the protocol says so.
    #[error("unexpected {0} from the peer")]
    UnexpectedMessage(Command),
    /// A vMotion message out of sequence (COMPLETE on a connection that is no accepted peer,
    /// ABORT without BEGIN, GOAHEAD for another sequence...). It has no effect.
    #[error("{0} out of sequence: ignored")]
    OutOfSequence(Command),
    /// A malformed RFC 2217 COM-PORT message.
    #[error("COM-PORT: {0}")]
    ComPort(#[from] ComPortError),
    /// A subnegotiation of an option this session does not handle.
    #[error("subnegotiation of option {option} ignored")]
    UnexpectedSubnegotiation {
        /// The option code.
        option: u8,
    },
}

/// Why [`ProxySession::send_data`](crate::ProxySession::send_data) did not take the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// A vMotion is under way and the bytes held for the VM would exceed
    /// [`ProxyConfig::max_held`](crate::ProxyConfig::max_held). Nothing was taken.
    #[error("vMotion hold buffer full ({held} of {limit} bytes held)")]
    HoldFull {
        /// Bytes already held.
        held: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The VM has moved to another connection: send there.
    #[error("the VM moved to {0}")]
    MigratedTo(SessionId),
    /// The connection was closed.
    #[error("the connection is closed")]
    Closed,
}

/// `now + by`, saturating at a far but representable instant instead of panicking when a
/// configured duration is absurdly large.
pub(crate) fn deadline_after(
    now: std::time::Instant,
    by: std::time::Duration,
) -> std::time::Instant {
    let mut by = by;
    loop {
        if let Some(t) = now.checked_add(by) {
            return t;
        }
        by /= 2;
    }
}

/// Makes a `Bytes` for `part`, sharing `whole` when `part` lies inside it (no copy).
pub(crate) fn share(whole: Option<&Bytes>, part: &[u8]) -> Bytes {
    if let Some(whole) = whole {
        let start = whole.as_ptr() as usize;
        let p = part.as_ptr() as usize;
        if p >= start && p.saturating_add(part.len()) <= start.saturating_add(whole.len()) {
            let offset = p - start;
            return whole.slice(offset..offset + part.len());
        }
    }
    Bytes::copy_from_slice(part)
}

/// What one telnet event means on an option-232 connection, to either side.
pub(crate) enum Inbound {
    Data(Bytes),
    Command(vspc_telnet::Command),
    Message(Result<crate::message::Message, MessageError>),
    ComPort(vspc_telnet::comport::ComPortMessage),
    OptionChanged(vspc_telnet::Side, u8, bool),
    Error(ProtocolError),
}

/// Classifies a telnet event (`None` for empty data). COM-PORT subnegotiations are parsed
/// when `accept_com_port`, and reported as unexpected otherwise, like any other option's.
pub(crate) fn classify(
    event: vspc_telnet::TelnetEvent<'_>,
    shared: Option<&Bytes>,
    accept_com_port: bool,
) -> Option<Inbound> {
    use vspc_telnet::comport::ComPortMessage;
    use vspc_telnet::{option, TelnetEvent};
    Some(match event {
        TelnetEvent::Data([]) => return None,
        TelnetEvent::Data(data) => Inbound::Data(share(shared, data)),
        TelnetEvent::Command(command) => Inbound::Command(command),
        TelnetEvent::Subnegotiation {
            option: crate::message::VMWARE_EXT,
            payload,
        } => Inbound::Message(crate::message::Message::parse(payload)),
        TelnetEvent::Subnegotiation {
            option: option::COM_PORT,
            payload,
        } if accept_com_port => match ComPortMessage::parse(payload) {
            Ok(message) => Inbound::ComPort(message),
            Err(error) => Inbound::Error(ProtocolError::ComPort(error)),
        },
        TelnetEvent::Subnegotiation { option, .. } => {
            Inbound::Error(ProtocolError::UnexpectedSubnegotiation { option })
        }
        TelnetEvent::OptionChanged {
            side,
            option,
            enabled,
        } => Inbound::OptionChanged(side, option, enabled),
        TelnetEvent::Error(error) => Inbound::Error(ProtocolError::Telnet(error)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_saturates() {
        #[allow(clippy::disallowed_methods)]
        let now = std::time::Instant::now();
        assert!(deadline_after(now, std::time::Duration::MAX) > now);
        let d = std::time::Duration::from_secs(3);
        assert_eq!(deadline_after(now, d), now + d);
    }

    #[test]
    fn share_is_zero_copy_inside_and_copies_outside() {
        let whole = Bytes::from_static(b"hello world");
        let part = &whole[6..];
        let s = share(Some(&whole), part);
        assert_eq!(s, "world");
        assert_eq!(s.as_ptr(), part.as_ptr());
        let other = b"world".to_vec();
        let c = share(Some(&whole), &other);
        assert_eq!(c, "world");
        assert_ne!(c.as_ptr(), other.as_ptr());
        assert_eq!(share(None, b""), Bytes::new());
    }
}
