//! The host of a URI and its grammar: empty, a bracketed IPv6 literal, an IPv4 address or an
//! RFC 3986 `reg-name`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use nom::branch::alt;
use nom::bytes::complete::take_while_m_n;
use nom::character::complete::char;
use nom::combinator::{eof, map, map_opt, recognize, rest, value};
use nom::multi::many0_count;
use nom::sequence::{preceded, terminated};
use nom::Parser;

use super::error::{UriError, UriErrorKind, UriRole};
use super::parse::{complete, expect, invalid, till, while1, PResult};

/// The host part of a URI: a DNS name, an IPv4 address, a bracketed IPv6 literal, or empty
/// (a server-direction listener on every interface: `telnet://:12345`).
///
/// The text is kept as written, so `[FE80::0001]` is displayed as `[FE80::0001]`.
///
/// ```
/// use vspc_backing::Host;
///
/// let host: Host = "[fe80::1]".parse()?;
/// assert!(host.ip().is_some_and(|ip| ip.is_ipv6()));
/// assert_eq!(host.to_string(), "[fe80::1]");
/// assert_eq!(host.as_str(), "fe80::1");
/// # Ok::<(), vspc_backing::UriError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Host(HostRepr);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum HostRepr {
    Empty,
    Name(String),
    /// The address and its text (always canonical: `std` rejects leading zeros).
    V4(Ipv4Addr, String),
    /// The address and the text between the brackets, as written.
    V6(Ipv6Addr, String),
}

impl Host {
    /// The empty host (listen on every interface).
    pub const fn empty() -> Host {
        Host(HostRepr::Empty)
    }

    /// The host text without brackets (`fe80::1` for `[fe80::1]`; `""` when empty).
    pub fn as_str(&self) -> &str {
        match &self.0 {
            HostRepr::Empty => "",
            HostRepr::Name(text) | HostRepr::V4(_, text) | HostRepr::V6(_, text) => text,
        }
    }

    /// The IP address, when the host is an IPv4 address or an IPv6 literal.
    pub fn ip(&self) -> Option<IpAddr> {
        match &self.0 {
            HostRepr::V4(a, _) => Some(IpAddr::V4(*a)),
            HostRepr::V6(a, _) => Some(IpAddr::V6(*a)),
            HostRepr::Empty | HostRepr::Name(_) => None,
        }
    }

    /// Whether the host is empty.
    pub fn is_empty(&self) -> bool {
        matches!(self.0, HostRepr::Empty)
    }

    /// Whether the host is a DNS name (neither empty nor an IP address).
    pub fn is_name(&self) -> bool {
        matches!(self.0, HostRepr::Name(_))
    }

    /// Whether the host designates the local machine for a listener: empty, `localhost`
    /// (any case), an unspecified address (`0.0.0.0`, `::`) or a loopback address
    /// (`127.0.0.0/8`, `::1`).
    pub fn is_local(&self) -> bool {
        match &self.0 {
            HostRepr::Empty => true,
            HostRepr::Name(name) => name.eq_ignore_ascii_case("localhost"),
            HostRepr::V4(a, _) => a.is_loopback() || a.is_unspecified(),
            HostRepr::V6(a, _) => a.is_loopback() || a.is_unspecified(),
        }
    }
}

const UNCLOSED: &str = "unclosed bracket";
const NOT_IPV6: &str = "not an IPv6 address";
/// The reason for a colon outside brackets.
pub(super) const UNBRACKETED: &str = "an IPv6 literal must be in brackets";
const NOT_ALLOWED: &str = "character not allowed in a host name";
const PERCENT: &str = "incomplete percent-encoding";

/// Reads a host as it appears in a URI (the whole of `text`).
pub(super) fn parse_host(text: &str) -> Result<Host, UriErrorKind> {
    complete(host, text, || NOT_ALLOWED)
        .map(Host)
        .map_err(|reason| UriErrorKind::InvalidHost {
            host: text.to_owned(),
            reason,
        })
}

/// `host = "" / "[" IPv6address "]" / IPv4address / reg-name`. A colon outside brackets is
/// an IPv6 literal that lacks them, which is the reason given whatever else is wrong.
fn host(input: &str) -> PResult<'_, HostRepr, &'static str> {
    let unbracketed = |e| match e {
        nom::Err::Failure(_) if input.contains(':') => invalid(UNBRACKETED),
        e => e,
    };
    alt((
        value(HostRepr::Empty, eof),
        preceded(char('['), ip_literal),
        |input| alt((ipv4, reg_name)).parse(input).map_err(unbracketed),
    ))
    .parse(input)
}

/// What follows `[`: an IPv6 address and the closing bracket, which ends the host. A host
/// that ends in `]` but holds another one reads as a malformed address, one that does not end
/// in `]` as an unclosed bracket.
fn ip_literal(input: &str) -> PResult<'_, HostRepr, &'static str> {
    let unclosed = |_| {
        if input.ends_with(']') {
            NOT_IPV6
        } else {
            UNCLOSED
        }
    };
    let (rest, inner) = expect(terminated(till(b"]"), (char(']'), eof)), unclosed)(input)?;
    let addr = inner.parse().map_err(|_| invalid(NOT_IPV6))?;
    Ok((rest, HostRepr::V6(addr, inner.to_owned())))
}

/// A dotted-quad IPv4 address, as `std` reads it (no leading zeros).
fn ipv4(input: &str) -> PResult<'_, HostRepr, &'static str> {
    map_opt(rest, |text: &str| {
        Some(HostRepr::V4(text.parse().ok()?, text.to_owned()))
    })
    .parse(input)
}

/// RFC 3986 `reg-name`: unreserved, percent-encoded and sub-delimiter characters.
fn reg_name(input: &str) -> PResult<'_, HostRepr, &'static str> {
    let pct_encoded = preceded(
        char('%'),
        expect(
            take_while_m_n(2, 2, |c: char| c.is_ascii_hexdigit()),
            |_| PERCENT,
        ),
    );
    let name = recognize(terminated(
        many0_count(alt((while1(is_reg_name_char), pct_encoded))),
        expect(eof, |_| NOT_ALLOWED),
    ));
    map(name, |text: &str| HostRepr::Name(text.to_owned())).parse(input)
}

/// Unreserved and sub-delimiter characters (`%` starts a percent-encoding).
fn is_reg_name_char(b: u8) -> bool {
    matches!(b,
        b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~'
        | b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=')
}

impl FromStr for Host {
    type Err = UriError;

    /// Parses a host as written in a URI (IPv6 literals in brackets).
    fn from_str(s: &str) -> Result<Host, UriError> {
        parse_host(s).map_err(|kind| UriError::new(UriRole::Host, s, kind))
    }
}

impl From<IpAddr> for Host {
    fn from(ip: IpAddr) -> Host {
        match ip {
            IpAddr::V4(a) => Host(HostRepr::V4(a, a.to_string())),
            IpAddr::V6(a) => Host(HostRepr::V6(a, a.to_string())),
        }
    }
}

impl From<Ipv4Addr> for Host {
    fn from(ip: Ipv4Addr) -> Host {
        Host::from(IpAddr::V4(ip))
    }
}

impl From<Ipv6Addr> for Host {
    fn from(ip: Ipv6Addr) -> Host {
        Host::from(IpAddr::V6(ip))
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            HostRepr::Empty => Ok(()),
            HostRepr::Name(text) | HostRepr::V4(_, text) => f.write_str(text),
            HostRepr::V6(_, text) => write!(f, "[{text}]"),
        }
    }
}
