//! What a VM says about itself: UUIDs (vmx form, canonical and compact text) and its name.

use core::fmt;
use core::str::FromStr;

/// A 128-bit UUID, with the three textual forms found around vSphere.
///
/// ```
/// use vspc_proto::Uuid;
///
/// let uuid: Uuid = "01 23 45 67 89 ab cd ef-fe dc ba 98 00 00 00 00".parse().unwrap();
/// assert_eq!(uuid.to_string(), "01234567-89ab-cdef-fedc-ba9800000000");
/// assert_eq!(uuid.to_compact(), "0123456789abcdeffedcba9800000000");
/// assert_eq!(uuid.to_vmx(), "01 23 45 67 89 ab cd ef-fe dc ba 98 00 00 00 00");
/// assert_eq!("01234567-89AB-CDEF-FEDC-BA9800000000".parse::<Uuid>(), Ok(uuid));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Uuid([u8; 16]);

/// Why a text is not a UUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum UuidError {
    /// A byte that is neither a hex digit nor a separator (space, `-`, braces around).
    #[error("invalid character {byte:#04x} at offset {offset}")]
    InvalidCharacter {
        /// The offending byte.
        byte: u8,
        /// Its offset in the text.
        offset: usize,
    },
    /// Not exactly 32 hex digits.
    #[error("expected 32 hex digits, found {digits}")]
    WrongLength {
        /// How many hex digits were found.
        digits: usize,
    },
}

impl Uuid {
    /// The UUID with these 16 bytes (big-endian, as written).
    pub const fn from_bytes(bytes: [u8; 16]) -> Uuid {
        Uuid(bytes)
    }

    /// The 16 bytes.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// Parses any of the textual forms: ESXi's vmx form
    /// (`01 23 45 67 89 ab cd ef-fe dc ba 98 00 00 00 00`), RFC 4122
    /// (`01234567-89ab-cdef-fedc-ba9800000000`, optionally in braces) and compact 32-digit hex,
    /// in either case. Leading and trailing whitespace and NUL bytes are ignored. Spaces and
    /// dashes between digits are separators wherever they are.
    pub fn parse_ascii(text: &[u8]) -> Result<Uuid, UuidError> {
        let start = text
            .iter()
            .position(|b| !is_padding(*b))
            .unwrap_or(text.len());
        let end = text
            .iter()
            .rposition(|b| !is_padding(*b))
            .map_or(start, |p| p + 1);
        let mut body = text.get(start..end).unwrap_or_default();
        let mut offset = start;
        if let [b'{', inner @ .., b'}'] = body {
            body = inner;
            offset += 1;
        }
        let mut out = [0u8; 16];
        let mut digits = 0usize;
        for (i, &byte) in body.iter().enumerate() {
            let nibble = match byte {
                b'0'..=b'9' => byte - b'0',
                b'a'..=b'f' => byte - b'a' + 10,
                b'A'..=b'F' => byte - b'A' + 10,
                b' ' | b'-' => continue,
                _ => {
                    return Err(UuidError::InvalidCharacter {
                        byte,
                        offset: offset + i,
                    })
                }
            };
            if let Some(slot) = out.get_mut(digits / 2) {
                *slot |= if digits.is_multiple_of(2) {
                    nibble << 4
                } else {
                    nibble
                };
            }
            digits += 1;
        }
        if digits != 32 {
            return Err(UuidError::WrongLength { digits });
        }
        Ok(Uuid(out))
    }

    /// RFC 4122 text, lowercase: `01234567-89ab-cdef-fedc-ba9800000000` (also `Display`).
    pub fn to_canonical(&self) -> String {
        self.to_string()
    }

    /// 32 lowercase hex digits without separators: `0123456789abcdeffedcba9800000000`.
    pub fn to_compact(&self) -> String {
        let mut s = String::with_capacity(32);
        for b in self.0 {
            push_hex(&mut s, b);
        }
        s
    }

    /// ESXi's vmx form: `01 23 45 67 89 ab cd ef-fe dc ba 98 00 00 00 00`.
    pub fn to_vmx(&self) -> String {
        let mut s = String::with_capacity(47);
        for (i, b) in self.0.iter().enumerate() {
            match i {
                0 => {}
                8 => s.push('-'),
                _ => s.push(' '),
            }
            push_hex(&mut s, *b);
        }
        s
    }
}

fn is_padding(b: u8) -> bool {
    b == 0 || b.is_ascii_whitespace()
}

fn push_hex(s: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    s.push(char::from(HEX[usize::from(b >> 4)]));
    s.push(char::from(HEX[usize::from(b & 15)]));
}

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.to_compact();
        let (a, rest) = c.split_at(8);
        let (b, rest) = rest.split_at(4);
        let (cc, rest) = rest.split_at(4);
        let (d, e) = rest.split_at(4);
        write!(f, "{a}-{b}-{cc}-{d}-{e}")
    }
}

impl FromStr for Uuid {
    type Err = UuidError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_ascii(s.as_bytes())
    }
}

/// A UUID as a VM reported it (VM-VC-UUID, VM-BIOS-UUID, VM-LOCATION-UUID): the raw text,
/// always kept, and the parsed value when the text is a UUID in any accepted form.
///
/// Equality compares the raw text: two reports are the same when the VM sent the same bytes.
/// Use [`VmUuid::uuid`] to compare values across spellings.
///
/// ```
/// use vspc_proto::VmUuid;
///
/// let id = VmUuid::new(&b"01 23 45 67 89 ab cd ef-fe dc ba 98 00 00 00 00"[..]);
/// assert_eq!(id.canonical().as_deref(), Some("01234567-89ab-cdef-fedc-ba9800000000"));
/// let odd = VmUuid::new(&b"not a uuid"[..]);
/// assert_eq!(odd.uuid(), None);
/// assert_eq!(odd.raw(), b"not a uuid");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VmUuid {
    /// Exactly what arrived, in an allocation of its own: a held identity pins no larger
    /// buffer, and 16 bytes inline (the parsed form is recomputed on demand, cheaply).
    raw: Box<[u8]>,
}

impl VmUuid {
    /// Wraps the text a VM sent; never fails.
    pub fn new(raw: impl AsRef<[u8]>) -> VmUuid {
        VmUuid {
            raw: raw.as_ref().into(),
        }
    }

    /// The text in ESXi's vmx form, as ESXi would send it.
    pub fn from_uuid(uuid: Uuid) -> VmUuid {
        VmUuid::new(uuid.to_vmx())
    }

    /// The bytes exactly as received.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// The raw text, invalid UTF-8 replaced by U+FFFD.
    pub fn raw_lossy(&self) -> String {
        String::from_utf8_lossy(&self.raw).into_owned()
    }

    /// The parsed value, if the text is a UUID.
    pub fn uuid(&self) -> Option<Uuid> {
        Uuid::parse_ascii(&self.raw).ok()
    }

    /// RFC 4122 text, if the text is a UUID.
    pub fn canonical(&self) -> Option<String> {
        self.uuid().map(|u| u.to_canonical())
    }

    /// 32 hex digits, if the text is a UUID.
    pub fn compact(&self) -> Option<String> {
        self.uuid().map(|u| u.to_compact())
    }
}

impl fmt::Display for VmUuid {
    /// The canonical form when parsed, the lossy raw text otherwise.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.uuid() {
            Some(uuid) => fmt::Display::fmt(&uuid, f),
            None => f.write_str(&String::from_utf8_lossy(&self.raw)),
        }
    }
}

/// A VM's display name as sent in VM-NAME: the raw bytes and a lossy UTF-8 rendering (invalid
/// sequences become U+FFFD; never an error).
///
/// ```
/// use vspc_proto::VmName;
///
/// let name = VmName::new(&b"vm-\xff00"[..]);
/// assert_eq!(name.as_str(), "vm-\u{fffd}00");
/// assert_eq!(name.raw(), b"vm-\xff00");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VmName {
    raw: Box<[u8]>,
    /// The lossy rendering, only when `raw` is not valid UTF-8 (names almost always are).
    lossy: Option<Box<str>>,
}

impl VmName {
    /// Wraps the bytes a VM sent; never fails.
    pub fn new(raw: impl AsRef<[u8]>) -> VmName {
        let raw: Box<[u8]> = raw.as_ref().into();
        let lossy = match String::from_utf8_lossy(&raw) {
            std::borrow::Cow::Borrowed(_) => None,
            std::borrow::Cow::Owned(text) => Some(text.into_boxed_str()),
        };
        VmName { raw, lossy }
    }

    /// The name, lossily decoded.
    pub fn as_str(&self) -> &str {
        match &self.lossy {
            Some(text) => text,
            // Valid UTF-8: checked in `new`.
            None => std::str::from_utf8(&self.raw).unwrap_or_default(),
        }
    }

    /// The bytes exactly as received.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }
}

impl From<&str> for VmName {
    fn from(name: &str) -> Self {
        VmName::new(name)
    }
}

impl fmt::Display for VmName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything a VM connection has told about itself so far.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Identity {
    /// VM-VC-UUID: the stable key of a VM (shared by all its serial ports).
    pub vc_uuid: Option<VmUuid>,
    /// VM-NAME: the display name (changes, and repeats across VMs).
    pub name: Option<VmName>,
    /// VM-BIOS-UUID.
    pub bios_uuid: Option<VmUuid>,
    /// VM-LOCATION-UUID.
    pub location_uuid: Option<VmUuid>,
}

impl Identity {
    /// Whether the VC UUID, the identity key, is known.
    pub fn is_identified(&self) -> bool {
        self.vc_uuid.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    const VMX: &str = "01 23 45 67 89 ab cd ef-fe dc ba 98 00 00 00 00";

    #[test]
    fn forms() {
        let u: Uuid = VMX.parse().unwrap();
        assert_eq!(
            u.as_bytes(),
            &[0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xfe, 0xdc, 0xba, 0x98, 0, 0, 0, 0]
        );
        assert_eq!(u.to_vmx(), VMX);
        for text in [
            "01234567-89ab-cdef-fedc-ba9800000000",
            "{01234567-89AB-CDEF-FEDC-BA9800000000}",
            "0123456789abcdeffedcba9800000000",
            "  01 23 45 67 89 AB CD EF-FE DC BA 98 00 00 00 00\0",
        ] {
            assert_eq!(text.parse::<Uuid>(), Ok(u), "{text}");
        }
    }

    #[test]
    fn errors() {
        assert_eq!(
            "0123".parse::<Uuid>(),
            Err(UuidError::WrongLength { digits: 4 })
        );
        assert_eq!(
            "0123456789abcdeffedcba98000000000".parse::<Uuid>(),
            Err(UuidError::WrongLength { digits: 33 })
        );
        assert_eq!(
            " 01x".parse::<Uuid>(),
            Err(UuidError::InvalidCharacter {
                byte: b'x',
                offset: 3
            })
        );
        assert_eq!(
            "".parse::<Uuid>(),
            Err(UuidError::WrongLength { digits: 0 })
        );
    }

    #[test]
    fn vm_uuid_keeps_raw() {
        let v = VmUuid::new(Bytes::from_static(VMX.as_bytes()));
        assert_eq!(v.raw(), VMX.as_bytes());
        assert_eq!(
            v.compact().as_deref(),
            Some("0123456789abcdeffedcba9800000000")
        );
        assert_eq!(v.to_string(), "01234567-89ab-cdef-fedc-ba9800000000");
        let bad = VmUuid::new(Bytes::from_static(b"\xff\xfe"));
        assert_eq!(bad.to_string(), "\u{fffd}\u{fffd}");
        assert_eq!(VmUuid::from_uuid(v.uuid().unwrap()), v);
    }
}
