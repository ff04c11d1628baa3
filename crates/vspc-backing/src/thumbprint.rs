//! Certificate thumbprints as vSphere writes them: colon-separated upper-case hex pairs.

use std::fmt;
use std::str::FromStr;

use sha1::{Digest, Sha1};

/// A certificate fingerprint, as the `thumbprint=` authentication parameter carries it:
/// colon-separated upper-case hex pairs (what `openssl x509 -sha1 -fingerprint` prints).
///
/// ```
/// use vspc_backing::Thumbprint;
///
/// // The SHA-1 of the (not really DER) bytes "abc".
/// let t = Thumbprint::sha1_of_der(b"abc");
/// assert_eq!(t.to_string(), "A9:99:3E:36:47:06:81:6A:BA:3E:25:71:78:50:C2:6C:9C:D0:D8:9D");
/// assert_eq!("a9:99:3e:36:47:06:81:6a:ba:3e:25:71:78:50:c2:6c:9c:d0:d8:9d".parse::<Thumbprint>(), Ok(t));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Thumbprint(Vec<u8>);

impl Thumbprint {
    /// The SHA-1 fingerprint of a DER-encoded certificate (what vSphere expects).
    pub fn sha1_of_der(der: &[u8]) -> Thumbprint {
        Thumbprint(Sha1::digest(der).to_vec())
    }

    /// A thumbprint from digest bytes computed elsewhere (e.g. a SHA-256 by the caller's
    /// crypto library): 20 (SHA-1) or 32 (SHA-256) bytes, as the grammar allows.
    ///
    /// ```
    /// use vspc_backing::Thumbprint;
    ///
    /// let t = Thumbprint::from_digest(&[0xab; 32])?;
    /// assert_eq!(t.as_bytes().len(), 32);
    /// assert!(Thumbprint::from_digest(&[0xab; 16]).is_err());
    /// # Ok::<(), vspc_backing::ThumbprintError>(())
    /// ```
    pub fn from_digest(digest: &[u8]) -> Result<Thumbprint, ThumbprintError> {
        if digest.len() == 20 || digest.len() == 32 {
            Ok(Thumbprint(digest.to_vec()))
        } else {
            Err(ThumbprintError {
                text: Thumbprint(digest.to_vec()).to_string(),
            })
        }
    }

    /// The digest bytes (20 for SHA-1, 32 for SHA-256).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Why a text is not a [`Thumbprint`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed thumbprint {text:?} (expected 20 or 32 colon-separated hex pairs, such as AB:CD:...)")]
pub struct ThumbprintError {
    text: String,
}

impl FromStr for Thumbprint {
    type Err = ThumbprintError;

    /// Reads 20 (SHA-1) or 32 (SHA-256) colon-separated pairs of hex digits, in either case.
    fn from_str(s: &str) -> Result<Thumbprint, ThumbprintError> {
        let err = || ThumbprintError { text: s.to_owned() };
        let bytes = s
            .split(':')
            .map(|pair| match pair.as_bytes() {
                [hi, lo] => Some(hex_value(*hi)? << 4 | hex_value(*lo)?),
                _ => None,
            })
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(err)?;
        if bytes.len() == 20 || bytes.len() == 32 {
            Ok(Thumbprint(bytes))
        } else {
            Err(err())
        }
    }
}

const fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

impl fmt::Display for Thumbprint {
    /// Upper-case hex pairs separated by colons.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}
