//! Typed option-232 messages: parsing and encoding of unescaped subnegotiation payloads.

use core::fmt;
use core::hash::{Hash, Hasher};

use bytes::Bytes;

use crate::command::Command;
use crate::identity::{VmName, VmUuid};

/// The telnet option that carries every message: VMWARE-TELNET-EXT (232).
pub const VMWARE_EXT: u8 = 232;

const IAC: u8 = 255;
const SB: u8 = 250;
const SE: u8 = 240;

/// The direction byte of DO-PROXY.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// `S`: the VM side is the server; remote systems connect to the proxy, which relays them
    /// to the VM (the console-server case).
    Server,
    /// `C`: the VM side is the client; the proxy connects to the system the service URI names.
    Client,
}

impl Direction {
    /// The wire byte, `b'S'` or `b'C'`.
    pub const fn byte(self) -> u8 {
        match self {
            Direction::Server => b'S',
            Direction::Client => b'C',
        }
    }

    /// The direction for a wire byte (exactly `S` or `C`).
    pub const fn from_byte(byte: u8) -> Option<Direction> {
        match byte {
            b'S' => Some(Direction::Server),
            b'C' => Some(Direction::Client),
            _ => None,
        }
    }
}

/// The opaque vMotion key `sequence ++ secret` carried by VMOTION-GOAHEAD and VMOTION-PEER.
///
/// The wire carries no length and no delimiter, so a parsed key does not know where the
/// sequence ends. [`VmotionKey::new`] records the split; [`VmotionKey::split_after`] recovers it
/// given the sequence from VMOTION-BEGIN. Equality and hashing compare the bytes only: the split
/// is a convenience, not part of the key.
///
/// ```
/// use vspc_proto::VmotionKey;
///
/// let key = VmotionKey::new(b"\x44\xda\x87\xf1", b"\x3c\xe6\x4d\xab");
/// assert_eq!(key.as_bytes(), b"\x44\xda\x87\xf1\x3c\xe6\x4d\xab");
/// assert_eq!(key.secret(), Some(&b"\x3c\xe6\x4d\xab"[..]));
/// let parsed = VmotionKey::from_wire(key.bytes().clone());
/// assert_eq!(parsed, key);
/// assert_eq!(parsed.secret(), None);
/// assert_eq!(parsed.split_after(b"\x44\xda\x87\xf1"), Some(&b"\x3c\xe6\x4d\xab"[..]));
/// ```
#[derive(Clone)]
pub struct VmotionKey {
    bytes: Bytes,
    sequence_len: Option<usize>,
}

impl VmotionKey {
    /// The key for a sequence and a secret.
    pub fn new(sequence: &[u8], secret: &[u8]) -> VmotionKey {
        let mut bytes = Vec::with_capacity(sequence.len() + secret.len());
        bytes.extend_from_slice(sequence);
        bytes.extend_from_slice(secret);
        VmotionKey {
            bytes: Bytes::from(bytes),
            sequence_len: Some(sequence.len()),
        }
    }

    /// A key as read from the wire, split unknown.
    pub fn from_wire(bytes: impl Into<Bytes>) -> VmotionKey {
        VmotionKey {
            bytes: bytes.into(),
            sequence_len: None,
        }
    }

    /// `sequence ++ secret`.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// `sequence ++ secret`, shared.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The sequence, when the split is known.
    pub fn sequence(&self) -> Option<&[u8]> {
        self.sequence_len.and_then(|n| self.bytes.get(..n))
    }

    /// The secret, when the split is known.
    pub fn secret(&self) -> Option<&[u8]> {
        self.sequence_len.and_then(|n| self.bytes.get(n..))
    }

    /// The secret, if the key starts with `sequence`.
    pub fn split_after(&self, sequence: &[u8]) -> Option<&[u8]> {
        self.bytes.strip_prefix(sequence)
    }

    /// The same key with the split set after `sequence`, if it starts with it.
    pub fn with_sequence(&self, sequence: &[u8]) -> Option<VmotionKey> {
        self.bytes.starts_with(sequence).then(|| VmotionKey {
            bytes: self.bytes.clone(),
            sequence_len: Some(sequence.len()),
        })
    }
}

impl PartialEq for VmotionKey {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl Eq for VmotionKey {}

impl Hash for VmotionKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.bytes.hash(state);
    }
}

impl fmt::Debug for VmotionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("VmotionKey(")?;
        for (i, b) in self.bytes.iter().enumerate() {
            if Some(i) == self.sequence_len {
                f.write_str("|")?;
            }
            write!(f, "{b:02x}")?;
        }
        f.write_str(")")
    }
}

/// One option-232 message.
///
/// [`Message::parse`] reads an unescaped payload `[command, payload...]` (what the telnet layer
/// delivers between `IAC SB 232` and `IAC SE`); [`Message::encode`] writes one. Parsing is
/// total for unknown commands ([`Message::Unknown`]) and lenient where the meaning is clear:
/// payload bytes after a command that takes none are ignored; VMOTION-NOTNOW and
/// VMOTION-PEER-OK may carry `sequence ++ secret` (some proxies send that) and are kept whole.
///
/// ```
/// use vspc_proto::{Direction, Message};
///
/// let msg = Message::parse(b"\x46SvSPC.py").unwrap();
/// assert_eq!(
///     msg,
///     Message::DoProxy { direction: Direction::Server, service_uri: "vSPC.py".into() }
/// );
/// assert_eq!(msg.to_vec(), b"\x46SvSPC.py");
/// // On the wire, with telnet framing and escaping:
/// let goahead = Message::VmotionGoahead(vspc_proto::VmotionKey::new(b"\x01", b"\xff"));
/// assert_eq!(goahead.to_wire(), b"\xff\xfa\xe8\x29\x01\xff\xff\xff\xf0");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Message {
    /// KNOWN-SUBOPTIONS-1 (VM): the codes it knows, in its order.
    KnownSuboptions1(Vec<Command>),
    /// KNOWN-SUBOPTIONS-2 (proxy): the codes it knows.
    KnownSuboptions2(Vec<Command>),
    /// UNKNOWN-SUBOPTION-RCVD-1 (VM): the code it did not know.
    UnknownSuboptionRcvd1(Command),
    /// UNKNOWN-SUBOPTION-RCVD-2 (proxy): the code it did not know.
    UnknownSuboptionRcvd2(Command),
    /// VMOTION-BEGIN (source host).
    VmotionBegin {
        /// Opaque, chosen by the source host (4 bytes in every observed case).
        sequence: Bytes,
    },
    /// VMOTION-GOAHEAD (proxy): `sequence ++ secret`.
    VmotionGoahead(VmotionKey),
    /// VMOTION-NOTNOW (proxy).
    VmotionNotNow {
        /// The sequence; from some proxies followed by a secret (compare with `starts_with`).
        sequence: Bytes,
    },
    /// VMOTION-PEER (destination host): `sequence ++ secret`.
    VmotionPeer(VmotionKey),
    /// VMOTION-PEER-OK (proxy).
    VmotionPeerOk {
        /// The sequence; from some proxies followed by the secret (compare with `starts_with`).
        sequence: Bytes,
    },
    /// VMOTION-COMPLETE (destination host).
    VmotionComplete {
        /// The sequence.
        sequence: Bytes,
    },
    /// VMOTION-ABORT (source host).
    VmotionAbort,
    /// DO-PROXY (VM).
    DoProxy {
        /// `S` or `C`.
        direction: Direction,
        /// The serviceURI of the port's backing, as sent (no terminator).
        service_uri: Bytes,
    },
    /// WILL-PROXY (proxy).
    WillProxy,
    /// WONT-PROXY (proxy).
    WontProxy,
    /// VM-VC-UUID (VM).
    VmVcUuid(VmUuid),
    /// GET-VM-VC-UUID (proxy).
    GetVmVcUuid,
    /// VM-NAME (VM).
    VmName(VmName),
    /// GET-VM-NAME (proxy).
    GetVmName,
    /// VM-BIOS-UUID (VM).
    VmBiosUuid(VmUuid),
    /// GET-VM-BIOS-UUID (proxy).
    GetVmBiosUuid,
    /// VM-LOCATION-UUID (VM).
    VmLocationUuid(VmUuid),
    /// GET-VM-LOCATION-UUID (proxy).
    GetVmLocationUuid,
    /// An unassigned command code with its payload.
    Unknown {
        /// The code (never one of the 22 named ones when parsed).
        command: u8,
        /// The payload after the code.
        payload: Bytes,
    },
}

/// Why a payload is not a valid message. "Need more bytes" never occurs: payloads are complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// The payload is empty: no command byte.
    #[error("empty option-232 subnegotiation")]
    Empty,
    /// A vMotion command without its sequence (or key).
    #[error("{command} without a sequence")]
    MissingSequence {
        /// The command.
        command: Command,
    },
    /// UNKNOWN-SUBOPTION-RCVD-1/-2 not carrying exactly one code byte.
    #[error("{command} carries {len} bytes, expected 1")]
    WrongLength {
        /// The command.
        command: Command,
        /// The payload length after the command byte.
        len: usize,
    },
    /// DO-PROXY without a direction byte.
    #[error("DO-PROXY without a direction")]
    MissingDirection,
    /// DO-PROXY with a direction other than `S` or `C`.
    #[error("DO-PROXY with direction {0:#04x}, expected 'S' or 'C'")]
    InvalidDirection(u8),
}

impl MessageError {
    /// The command byte of the rejected payload, if it had one.
    pub fn command(&self) -> Option<Command> {
        match *self {
            MessageError::Empty => None,
            MessageError::MissingSequence { command }
            | MessageError::WrongLength { command, .. } => Some(command),
            MessageError::MissingDirection | MessageError::InvalidDirection(_) => {
                Some(Command::DoProxy)
            }
        }
    }
}

impl Message {
    /// Parses an unescaped payload `[command, payload...]`.
    pub fn parse(payload: &[u8]) -> Result<Message, MessageError> {
        let (&code, rest) = payload.split_first().ok_or(MessageError::Empty)?;
        let command = Command::from_code(code);
        let owned = || Bytes::copy_from_slice(rest);
        let sequence = || {
            if rest.is_empty() {
                Err(MessageError::MissingSequence { command })
            } else {
                Ok(Bytes::copy_from_slice(rest))
            }
        };
        let one = || match rest {
            [code] => Ok(Command::from_code(*code)),
            _ => Err(MessageError::WrongLength {
                command,
                len: rest.len(),
            }),
        };
        Ok(match command {
            Command::KnownSuboptions1 => {
                Message::KnownSuboptions1(rest.iter().map(|&c| Command::from_code(c)).collect())
            }
            Command::KnownSuboptions2 => {
                Message::KnownSuboptions2(rest.iter().map(|&c| Command::from_code(c)).collect())
            }
            Command::UnknownSuboptionRcvd1 => Message::UnknownSuboptionRcvd1(one()?),
            Command::UnknownSuboptionRcvd2 => Message::UnknownSuboptionRcvd2(one()?),
            Command::VmotionBegin => Message::VmotionBegin {
                sequence: sequence()?,
            },
            Command::VmotionGoahead => Message::VmotionGoahead(VmotionKey::from_wire(sequence()?)),
            Command::VmotionNotNow => Message::VmotionNotNow {
                sequence: sequence()?,
            },
            Command::VmotionPeer => Message::VmotionPeer(VmotionKey::from_wire(sequence()?)),
            Command::VmotionPeerOk => Message::VmotionPeerOk {
                sequence: sequence()?,
            },
            Command::VmotionComplete => Message::VmotionComplete {
                sequence: sequence()?,
            },
            Command::VmotionAbort => Message::VmotionAbort,
            Command::DoProxy => {
                let (&dir, uri) = rest.split_first().ok_or(MessageError::MissingDirection)?;
                let direction =
                    Direction::from_byte(dir).ok_or(MessageError::InvalidDirection(dir))?;
                Message::DoProxy {
                    direction,
                    service_uri: Bytes::copy_from_slice(uri),
                }
            }
            Command::WillProxy => Message::WillProxy,
            Command::WontProxy => Message::WontProxy,
            Command::VmVcUuid => Message::VmVcUuid(VmUuid::new(rest)),
            Command::GetVmVcUuid => Message::GetVmVcUuid,
            Command::VmName => Message::VmName(VmName::new(rest)),
            Command::GetVmName => Message::GetVmName,
            Command::VmBiosUuid => Message::VmBiosUuid(VmUuid::new(rest)),
            Command::GetVmBiosUuid => Message::GetVmBiosUuid,
            Command::VmLocationUuid => Message::VmLocationUuid(VmUuid::new(rest)),
            Command::GetVmLocationUuid => Message::GetVmLocationUuid,
            Command::Unknown(command) => Message::Unknown {
                command,
                payload: owned(),
            },
        })
    }

    /// The command code of this message.
    pub fn command(&self) -> Command {
        match self {
            Message::KnownSuboptions1(_) => Command::KnownSuboptions1,
            Message::KnownSuboptions2(_) => Command::KnownSuboptions2,
            Message::UnknownSuboptionRcvd1(_) => Command::UnknownSuboptionRcvd1,
            Message::UnknownSuboptionRcvd2(_) => Command::UnknownSuboptionRcvd2,
            Message::VmotionBegin { .. } => Command::VmotionBegin,
            Message::VmotionGoahead(_) => Command::VmotionGoahead,
            Message::VmotionNotNow { .. } => Command::VmotionNotNow,
            Message::VmotionPeer(_) => Command::VmotionPeer,
            Message::VmotionPeerOk { .. } => Command::VmotionPeerOk,
            Message::VmotionComplete { .. } => Command::VmotionComplete,
            Message::VmotionAbort => Command::VmotionAbort,
            Message::DoProxy { .. } => Command::DoProxy,
            Message::WillProxy => Command::WillProxy,
            Message::WontProxy => Command::WontProxy,
            Message::VmVcUuid(_) => Command::VmVcUuid,
            Message::GetVmVcUuid => Command::GetVmVcUuid,
            Message::VmName(_) => Command::VmName,
            Message::GetVmName => Command::GetVmName,
            Message::VmBiosUuid(_) => Command::VmBiosUuid,
            Message::GetVmBiosUuid => Command::GetVmBiosUuid,
            Message::VmLocationUuid(_) => Command::VmLocationUuid,
            Message::GetVmLocationUuid => Command::GetVmLocationUuid,
            Message::Unknown { command, .. } => Command::Unknown(*command),
        }
    }

    fn payload_parts(&self) -> (Option<u8>, &[u8]) {
        match self {
            Message::KnownSuboptions1(_) | Message::KnownSuboptions2(_) => (None, &[]),
            Message::UnknownSuboptionRcvd1(_) | Message::UnknownSuboptionRcvd2(_) => (None, &[]),
            Message::VmotionBegin { sequence }
            | Message::VmotionNotNow { sequence }
            | Message::VmotionPeerOk { sequence }
            | Message::VmotionComplete { sequence } => (None, sequence),
            Message::VmotionGoahead(key) | Message::VmotionPeer(key) => (None, key.as_bytes()),
            Message::DoProxy {
                direction,
                service_uri,
            } => (Some(direction.byte()), service_uri),
            Message::VmVcUuid(u) | Message::VmBiosUuid(u) | Message::VmLocationUuid(u) => {
                (None, u.raw())
            }
            Message::VmName(name) => (None, name.raw()),
            Message::Unknown { payload, .. } => (None, payload),
            Message::VmotionAbort
            | Message::WillProxy
            | Message::WontProxy
            | Message::GetVmVcUuid
            | Message::GetVmName
            | Message::GetVmBiosUuid
            | Message::GetVmLocationUuid => (None, &[]),
        }
    }

    /// Appends the unescaped payload `[command, payload...]` to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.command().code());
        match self {
            Message::KnownSuboptions1(list) | Message::KnownSuboptions2(list) => {
                out.extend(list.iter().map(|c| c.code()));
            }
            Message::UnknownSuboptionRcvd1(c) | Message::UnknownSuboptionRcvd2(c) => {
                out.push(c.code());
            }
            _ => {
                let (prefix, body) = self.payload_parts();
                out.extend(prefix);
                out.extend_from_slice(body);
            }
        }
    }

    /// The unescaped payload as a new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode(&mut out);
        out
    }

    /// The length of the unescaped payload.
    pub fn encoded_len(&self) -> usize {
        1 + match self {
            Message::KnownSuboptions1(list) | Message::KnownSuboptions2(list) => list.len(),
            Message::UnknownSuboptionRcvd1(_) | Message::UnknownSuboptionRcvd2(_) => 1,
            _ => {
                let (prefix, body) = self.payload_parts();
                usize::from(prefix.is_some()) + body.len()
            }
        }
    }

    /// Appends the complete telnet subnegotiation `IAC SB 232 <payload, 0xFF doubled> IAC SE`.
    pub fn encode_wire(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[IAC, SB, VMWARE_EXT]);
        for b in self.to_vec() {
            out.push(b);
            if b == IAC {
                out.push(IAC);
            }
        }
        out.extend_from_slice(&[IAC, SE]);
    }

    /// The complete telnet subnegotiation as a new vector (see [`Message::encode_wire`]).
    pub fn to_wire(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len() + 8);
        self.encode_wire(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn esxi_known_suboptions() {
        // ESXi's KNOWN-SUBOPTIONS-1 (docs/esxi-wire.md, block A).
        let payload = [
            0x00, 0x00, 0x01, 0x02, 0x03, 0x28, 0x29, 0x2b, 0x2c, 0x2d, 0x2e, 0x30, 0x46, 0x47,
            0x49, 0x50, 0x51, 0x54, 0x55, 0x56, 0x57, 0x52, 0x53,
        ];
        let msg = Message::parse(&payload).unwrap();
        let Message::KnownSuboptions1(ref list) = msg else {
            panic!("{msg:?}")
        };
        assert_eq!(list.len(), 22);
        assert!(list.iter().all(|c| c.is_known()));
        assert_eq!(msg.to_vec(), payload);
    }

    #[test]
    fn errors() {
        assert_eq!(Message::parse(b""), Err(MessageError::Empty));
        assert_eq!(
            Message::parse(b"\x28"),
            Err(MessageError::MissingSequence {
                command: Command::VmotionBegin
            })
        );
        assert_eq!(
            Message::parse(b"\x03"),
            Err(MessageError::WrongLength {
                command: Command::UnknownSuboptionRcvd2,
                len: 0
            })
        );
        assert_eq!(Message::parse(b"\x46"), Err(MessageError::MissingDirection));
        assert_eq!(
            Message::parse(b"\x46Xuri"),
            Err(MessageError::InvalidDirection(b'X'))
        );
        assert_eq!(
            MessageError::InvalidDirection(b'X').command(),
            Some(Command::DoProxy)
        );
    }

    #[test]
    fn lenient_empty_commands() {
        assert_eq!(Message::parse(b"\x30junk"), Ok(Message::VmotionAbort));
        assert_eq!(Message::parse(b"\x51"), Ok(Message::GetVmVcUuid));
    }

    #[test]
    fn notnow_and_peer_ok_with_secret() {
        let m = Message::parse(b"\x2b\xcd\x52\x67\x55\x11\x22").unwrap();
        let Message::VmotionNotNow { sequence } = m else {
            panic!()
        };
        assert!(sequence.starts_with(b"\xcd\x52\x67\x55"));
        assert_eq!(
            Message::parse(b"\x2d\x44\xda\x87\xf1").unwrap(),
            Message::VmotionPeerOk {
                sequence: Bytes::from_static(b"\x44\xda\x87\xf1")
            }
        );
    }

    #[test]
    fn wire_escaping() {
        let m = Message::VmotionPeer(VmotionKey::new(&[0xff, 0xf0], &[0xff, 0xff]));
        assert_eq!(
            m.to_wire(),
            b"\xff\xfa\xe8\x2c\xff\xff\xf0\xff\xff\xff\xff\xff\xf0"
        );
    }
}
