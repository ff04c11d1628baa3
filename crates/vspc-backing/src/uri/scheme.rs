//! The schemes: the nine of a direct service URI and the two of a proxy URI, and the
//! `scheme "://"` prefix that introduces them.

use std::fmt;

use nom::branch::alt;
use nom::bytes::complete::tag;
use nom::combinator::{not, opt, recognize};
use nom::multi::many0_count;
use nom::sequence::terminated;
use nom::Parser;

use super::parse::{while1, PResult};

/// The scheme of a direct service URI (one that ESXi opens itself).
///
/// Schemes are read case-insensitively and written lower-case. `ssl` and `tcp+ssl` mean the
/// same transport but are kept distinct so that a URI is written back as it was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Scheme {
    /// `tcp://`: raw TCP, any address family.
    Tcp,
    /// `tcp4://`: raw TCP over IPv4.
    Tcp4,
    /// `tcp6://`: raw TCP over IPv6.
    Tcp6,
    /// `ssl://`: TLS over TCP (same as `tcp+ssl://`).
    Ssl,
    /// `tcp+ssl://`: TLS over TCP, any address family.
    TcpSsl,
    /// `tcp4+ssl://`: TLS over TCP over IPv4.
    Tcp4Ssl,
    /// `tcp6+ssl://`: TLS over TCP over IPv6.
    Tcp6Ssl,
    /// `telnet://`: telnet, which may upgrade to TLS in-band (telnet AUTHENTICATION option).
    Telnet,
    /// `telnets://`: telnet over TLS from the first byte.
    Telnets,
}

/// What carries the bytes of a service URI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Transport {
    /// Raw TCP.
    Tcp,
    /// TLS over TCP.
    Tls,
    /// Telnet over TCP (may upgrade to TLS in-band).
    Telnet,
    /// Telnet over TLS from the first byte.
    TelnetTls,
}

/// The address family a scheme restricts the connection to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressFamily {
    /// Either IPv4 or IPv6.
    Any,
    /// IPv4 only (`tcp4`, `tcp4+ssl`).
    Ipv4,
    /// IPv6 only (`tcp6`, `tcp6+ssl`).
    Ipv6,
}

impl Scheme {
    /// Every scheme, in the order of the table of direct service URIs in docs/uri-backing.md.
    pub const ALL: [Scheme; 9] = [
        Scheme::Tcp,
        Scheme::Tcp4,
        Scheme::Tcp6,
        Scheme::Ssl,
        Scheme::TcpSsl,
        Scheme::Tcp4Ssl,
        Scheme::Tcp6Ssl,
        Scheme::Telnet,
        Scheme::Telnets,
    ];

    /// The scheme as written in a URI (lower-case, without `://`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Scheme::Tcp => "tcp",
            Scheme::Tcp4 => "tcp4",
            Scheme::Tcp6 => "tcp6",
            Scheme::Ssl => "ssl",
            Scheme::TcpSsl => "tcp+ssl",
            Scheme::Tcp4Ssl => "tcp4+ssl",
            Scheme::Tcp6Ssl => "tcp6+ssl",
            Scheme::Telnet => "telnet",
            Scheme::Telnets => "telnets",
        }
    }

    /// Reads a scheme case-insensitively; `None` when it is not one of the nine.
    pub fn from_name(name: &str) -> Option<Scheme> {
        Scheme::ALL
            .into_iter()
            .find(|s| s.as_str().eq_ignore_ascii_case(name))
    }

    /// The transport this scheme selects.
    pub const fn transport(self) -> Transport {
        match self {
            Scheme::Tcp | Scheme::Tcp4 | Scheme::Tcp6 => Transport::Tcp,
            Scheme::Ssl | Scheme::TcpSsl | Scheme::Tcp4Ssl | Scheme::Tcp6Ssl => Transport::Tls,
            Scheme::Telnet => Transport::Telnet,
            Scheme::Telnets => Transport::TelnetTls,
        }
    }

    /// The address family this scheme restricts the connection to.
    pub const fn family(self) -> AddressFamily {
        match self {
            Scheme::Tcp4 | Scheme::Tcp4Ssl => AddressFamily::Ipv4,
            Scheme::Tcp6 | Scheme::Tcp6Ssl => AddressFamily::Ipv6,
            _ => AddressFamily::Any,
        }
    }

    /// Whether authentication parameters may follow (`telnet`, `telnets`, and the `ssl`
    /// family, where they are undocumented and draw a warning from validation).
    pub const fn accepts_auth(self) -> bool {
        !matches!(self.transport(), Transport::Tcp)
    }

    /// Whether authentication parameters are documented for this scheme (`telnet`,
    /// `telnets`, vSphere 5.1 and later).
    pub const fn documents_auth(self) -> bool {
        matches!(self, Scheme::Telnet | Scheme::Telnets)
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The scheme of a proxy URI: the VM reaches its concentrator over telnet or telnets only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProxyScheme {
    /// `telnet://`.
    Telnet,
    /// `telnets://` (telnet over TLS).
    Telnets,
}

impl ProxyScheme {
    /// The scheme as written in a URI (lower-case, without `://`).
    pub const fn as_str(self) -> &'static str {
        match self {
            ProxyScheme::Telnet => "telnet",
            ProxyScheme::Telnets => "telnets",
        }
    }

    /// Reads a scheme case-insensitively; `None` unless it is telnet or telnets.
    pub fn from_name(name: &str) -> Option<ProxyScheme> {
        if name.eq_ignore_ascii_case("telnet") {
            Some(ProxyScheme::Telnet)
        } else if name.eq_ignore_ascii_case("telnets") {
            Some(ProxyScheme::Telnets)
        } else {
            None
        }
    }
}

impl fmt::Display for ProxyScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Splits off `scheme "://"`, looked for before any `#` only (a `://` inside
/// authentication parameters is text): the scheme as written (`None` when the URI has none)
/// and the rest. The scheme is everything before the first `://`, colons included
/// (`a:b://` has the scheme `a:b`).
pub(super) fn split_scheme(uri: &str) -> (Option<&str>, &str) {
    let name = recognize(many0_count(alt((
        while1(|b| b != b':' && b != b'#'),
        terminated(tag(":"), not(tag("//"))),
    ))));
    let mut prefix = opt(terminated(name, tag("://")));
    let parsed: PResult<'_, Option<&str>, ()> = prefix.parse(uri);
    match parsed {
        Ok((rest, scheme)) => (scheme, rest),
        // `opt` always matches.
        Err(_) => (None, uri),
    }
}
