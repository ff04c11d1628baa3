//! The keys of authentication parameters.

use std::fmt;

/// The key of an authentication parameter. Keys are case-sensitive, spelled as vSphere
/// documents them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuthKey {
    /// `certificate=<PEM>`: the peer's certificate.
    Certificate,
    /// `thumbprint=<hex>`: the peer certificate's fingerprint (see [`crate::Thumbprint`]).
    Thumbprint,
    /// `peerName=<name>`: the name the peer certificate must carry.
    PeerName,
    /// `verify`: verify the peer certificate (no value).
    Verify,
    /// `cipherList=<list>`: the OpenSSL cipher list (may contain `:`, `,` and spaces).
    CipherList,
}

impl AuthKey {
    /// Every key.
    pub const ALL: [AuthKey; 5] = [
        AuthKey::Certificate,
        AuthKey::Thumbprint,
        AuthKey::PeerName,
        AuthKey::Verify,
        AuthKey::CipherList,
    ];

    /// The key as written.
    pub const fn as_str(self) -> &'static str {
        match self {
            AuthKey::Certificate => "certificate",
            AuthKey::Thumbprint => "thumbprint",
            AuthKey::PeerName => "peerName",
            AuthKey::Verify => "verify",
            AuthKey::CipherList => "cipherList",
        }
    }

    /// Reads a key (case-sensitive); `None` when unknown.
    pub fn from_name(name: &str) -> Option<AuthKey> {
        AuthKey::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// Whether this key turns certificate verification on (`certificate`, `thumbprint`,
    /// `peerName`, `verify`).
    pub const fn enables_verification(self) -> bool {
        !matches!(self, AuthKey::CipherList)
    }
}

impl fmt::Display for AuthKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
