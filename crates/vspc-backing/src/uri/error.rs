//! The typed errors of the URI grammar: which part of a backing, the text, and what is wrong.

use std::fmt;

use super::auth_key::AuthKey;
use super::scheme::Scheme;

/// Which part of a backing a [`UriError`] is about; it starts every message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum UriRole {
    /// `serviceURI` (a direct one: behind a proxy it is opaque and never parsed).
    ServiceUri,
    /// `proxyURI`.
    ProxyUri,
    /// Authentication parameters parsed on their own ([`crate::AuthParams`]).
    AuthParams,
    /// A host parsed on its own ([`crate::Host`]).
    Host,
}

impl fmt::Display for UriRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UriRole::ServiceUri => "serviceURI",
            UriRole::ProxyUri => "proxyURI",
            UriRole::AuthParams => "authentication parameters",
            UriRole::Host => "host",
        })
    }
}

/// A URI that does not follow the grammar (docs/uri-backing.md, "The URI grammar").
///
/// The message names the part (`serviceURI`, `proxyURI`, ...), quotes the text, then says
/// what is wrong with it: `proxyURI "http://x:1": scheme must be telnet or telnets`.
/// When the URI carries user info, its password is replaced by `***` in the quoted text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{role} {uri:?}: {kind}")]
pub struct UriError {
    role: UriRole,
    uri: String,
    kind: UriErrorKind,
}

impl UriError {
    pub(crate) fn new(role: UriRole, uri: &str, kind: UriErrorKind) -> UriError {
        UriError {
            role,
            uri: uri.to_owned(),
            kind,
        }
    }

    /// A user-info error, with the password (if any) masked in the quoted URI.
    pub(crate) fn user_info(role: UriRole, uri: &str) -> UriError {
        let masked = match uri.split_once("://") {
            Some((scheme, rest)) => match rest.rsplit_once('@') {
                Some((user_info, host)) => {
                    let user = user_info.split(':').next().unwrap_or_default();
                    let password = if user_info.contains(':') { ":***" } else { "" };
                    format!("{scheme}://{user}{password}@{host}")
                }
                None => uri.to_owned(),
            },
            None => uri.to_owned(),
        };
        UriError {
            role,
            uri: masked,
            kind: UriErrorKind::UserInfo,
        }
    }

    /// Which part of the backing the error is about.
    pub const fn role(&self) -> UriRole {
        self.role
    }

    /// The offending text (a password in user info is masked).
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// What is wrong.
    pub const fn kind(&self) -> &UriErrorKind {
        &self.kind
    }
}

/// What is wrong with a URI; see [`UriError`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UriErrorKind {
    /// The text is empty.
    #[error("is empty")]
    Empty,
    /// A direct service URI with a scheme outside the table (`udp`, `http`, ...).
    #[error(
        "unknown scheme {scheme:?} (expected tcp, tcp4, tcp6, ssl, tcp+ssl, tcp4+ssl, \
         tcp6+ssl, telnet, telnets, or none)"
    )]
    UnknownScheme {
        /// The scheme as written.
        scheme: String,
    },
    /// A proxy URI whose scheme is not telnet or telnets (or that has no scheme: `""`).
    #[error("scheme must be telnet or telnets")]
    NotTelnet {
        /// The scheme as written (empty when there is none).
        scheme: String,
    },
    /// User info (`user[:password]@`) before the host.
    #[error("user info is not allowed")]
    UserInfo,
    /// A proxy URI without a host.
    #[error("host is missing")]
    MissingHost,
    /// A host that is neither a DNS name, an IPv4 address nor a bracketed IPv6 literal.
    #[error("invalid host {host:?}: {reason}")]
    InvalidHost {
        /// The host as written.
        host: String,
        /// Why it is invalid.
        reason: &'static str,
    },
    /// No port (there is no default port).
    #[error("port is missing")]
    MissingPort,
    /// A port that is not a decimal number from 0 to 65535.
    #[error("invalid port {port:?} (expected 0 to 65535)")]
    InvalidPort {
        /// The port as written.
        port: String,
    },
    /// A path, a query or other text after the port.
    #[error(
        "unexpected {text:?} after the host and port (only #authentication parameters may follow)"
    )]
    UnexpectedText {
        /// The text from where it went wrong.
        text: String,
    },
    /// Authentication parameters after `tcp`, `tcp4`, `tcp6` or a scheme-less URI.
    #[error("authentication parameters are not allowed {}", scheme_phrase(*.scheme))]
    AuthNotAllowed {
        /// The scheme (`None` for the `<host>:<port>` form).
        scheme: Option<Scheme>,
    },
    /// An authentication parameter with an empty key (`#&verify`, `#=x`, a trailing `&`).
    #[error("authentication parameter {n} is empty", n = .index + 1)]
    EmptyAuthParam {
        /// Its position, from 0.
        index: usize,
    },
    /// An authentication parameter key outside certificate, thumbprint, peerName, verify and
    /// cipherList (keys are case-sensitive).
    #[error(
        "unknown authentication parameter {key:?} (expected certificate, thumbprint, \
         peerName, verify or cipherList)"
    )]
    UnknownAuthKey {
        /// The key as written.
        key: String,
    },
    /// A value containing `&`, which would split it in two.
    #[error("the value of {key} contains '&'")]
    AmpersandInValue {
        /// The parameter's key.
        key: AuthKey,
    },
    /// A thumbprint that is not colon-separated hex pairs of a SHA-1 or SHA-256 digest
    /// (reported only by strict validation).
    #[error(
        "malformed thumbprint {value:?} (expected 20 or 32 colon-separated hex pairs, \
         such as AB:CD:...)"
    )]
    MalformedThumbprint {
        /// The value as written.
        value: String,
    },
}

fn scheme_phrase(scheme: Option<Scheme>) -> String {
    match scheme {
        Some(s) => format!("with {s}"),
        None => "without a scheme".to_owned(),
    }
}
