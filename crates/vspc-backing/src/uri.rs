//! Typed parsers for the URIs of a network serial port: service URIs, proxy URIs and
//! authentication parameters (docs/uri-backing.md, "The URI grammar").
//!
//! The `url` crate follows the WHATWG rules, which reject `telnet://:12345` and read
//! `host:port` as scheme `host`; these parsers implement the grammar ESXi actually reads.
//! Every type here round-trips exactly through [`FromStr`] and [`Display`], with two
//! normalisations only: the scheme is written lower-case, and leading zeros of the port are
//! dropped (`h:023` is written `h:23`).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use crate::error::{UriError, UriErrorKind, UriRole};

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

    /// Parses a host as it appears in a URI; errors carry `role` and `uri` for context.
    fn parse_in(text: &str, role: UriRole, uri: &str) -> Result<Host, UriError> {
        let invalid = |reason: &'static str| {
            UriError::new(
                role,
                uri,
                UriErrorKind::InvalidHost {
                    host: text.to_owned(),
                    reason,
                },
            )
        };
        if text.is_empty() {
            return Ok(Host::empty());
        }
        if let Some(rest) = text.strip_prefix('[') {
            let inner = rest
                .strip_suffix(']')
                .ok_or_else(|| invalid("unclosed bracket"))?;
            let addr = inner
                .parse::<Ipv6Addr>()
                .map_err(|_| invalid("not an IPv6 address"))?;
            return Ok(Host(HostRepr::V6(addr, inner.to_owned())));
        }
        if text.contains(':') {
            return Err(invalid("an IPv6 literal must be in brackets"));
        }
        if let Ok(addr) = text.parse::<Ipv4Addr>() {
            return Ok(Host(HostRepr::V4(addr, text.to_owned())));
        }
        check_reg_name(text).map_err(invalid)?;
        Ok(Host(HostRepr::Name(text.to_owned())))
    }
}

/// RFC 3986 `reg-name`: unreserved, percent-encoded and sub-delimiter characters.
fn check_reg_name(text: &str) -> Result<(), &'static str> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let pair = bytes
                    .get(i + 1..i + 3)
                    .ok_or("incomplete percent-encoding")?;
                if !pair.iter().all(u8::is_ascii_hexdigit) {
                    return Err("incomplete percent-encoding");
                }
                i += 3;
            }
            b if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&b) => i += 1,
            _ => return Err("character not allowed in a host name"),
        }
    }
    Ok(())
}

impl FromStr for Host {
    type Err = UriError;

    /// Parses a host as written in a URI (IPv6 literals in brackets).
    fn from_str(s: &str) -> Result<Host, UriError> {
        Host::parse_in(s, UriRole::Host, s)
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

/// One authentication parameter, `key` or `key=value`. The value is kept verbatim (no
/// percent-decoding); `key=` (empty value) and `key` (no value) are distinct.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AuthParam {
    key: AuthKey,
    value: Option<String>,
}

impl AuthParam {
    /// A parameter; fails if the value contains `&`, which would split it in two.
    pub fn new(key: AuthKey, value: Option<&str>) -> Result<AuthParam, UriError> {
        if let Some(v) = value {
            if v.contains('&') {
                let text = format!("{}={v}", key.as_str());
                return Err(UriError::new(
                    UriRole::AuthParams,
                    &text,
                    UriErrorKind::AmpersandInValue { key },
                ));
            }
        }
        Ok(AuthParam {
            key,
            value: value.map(str::to_owned),
        })
    }

    /// `thumbprint=<AB:CD:...>`.
    pub fn thumbprint(thumbprint: &crate::Thumbprint) -> AuthParam {
        AuthParam {
            key: AuthKey::Thumbprint,
            value: Some(thumbprint.to_string()),
        }
    }

    /// `verify`.
    pub const fn verify() -> AuthParam {
        AuthParam {
            key: AuthKey::Verify,
            value: None,
        }
    }

    /// The key.
    pub const fn key(&self) -> AuthKey {
        self.key
    }

    /// The value, verbatim; `None` for a bare key.
    pub fn value(&self) -> Option<&str> {
        self.value.as_deref()
    }
}

impl fmt::Display for AuthParam {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key.as_str())?;
        if let Some(v) = &self.value {
            write!(f, "={v}")?;
        }
        Ok(())
    }
}

/// The authentication parameters of a telnet(s) URI, in the order written:
/// `key[=value][&key[=value]...]` (what follows the `#`).
///
/// [`Display`](fmt::Display) writes them without the leading `#`; [`FromStr`] reads them
/// the same way.
///
/// ```
/// use vspc_backing::{AuthKey, AuthParams};
///
/// let params: AuthParams = "peerName=vspc.example.com&verify&cipherList=HIGH:!aNULL".parse()?;
/// assert_eq!(params.get(AuthKey::CipherList), Some("HIGH:!aNULL"));
/// assert!(params.enables_verification());
/// assert_eq!(params.to_string(), "peerName=vspc.example.com&verify&cipherList=HIGH:!aNULL");
/// # Ok::<(), vspc_backing::UriError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct AuthParams(Vec<AuthParam>);

impl AuthParams {
    /// No parameters.
    pub const fn new() -> AuthParams {
        AuthParams(Vec::new())
    }

    /// Appends a parameter.
    pub fn push(&mut self, param: AuthParam) {
        self.0.push(param);
    }

    /// Appends a parameter, builder style.
    #[must_use]
    pub fn with(mut self, param: AuthParam) -> AuthParams {
        self.0.push(param);
        self
    }

    /// Whether there are no parameters.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The number of parameters.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The parameters, in order.
    pub fn iter(&self) -> std::slice::Iter<'_, AuthParam> {
        self.0.iter()
    }

    /// The value of the first parameter with this key (`Some("")` for `key=`, `None` both
    /// for an absent key and a bare key; use [`AuthParams::contains`] for the latter).
    pub fn get(&self, key: AuthKey) -> Option<&str> {
        self.0
            .iter()
            .find(|p| p.key == key)
            .and_then(AuthParam::value)
    }

    /// Whether a parameter with this key is present.
    pub fn contains(&self, key: AuthKey) -> bool {
        self.0.iter().any(|p| p.key == key)
    }

    /// Whether any parameter turns certificate verification on.
    pub fn enables_verification(&self) -> bool {
        self.0.iter().any(|p| p.key.enables_verification())
    }

    /// Parses the text after `#`; errors carry `role` and `uri` for context.
    fn parse_in(text: &str, role: UriRole, uri: &str) -> Result<AuthParams, UriError> {
        let mut params = Vec::new();
        for (index, item) in text.split('&').enumerate() {
            let (key, value) = match item.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (item, None),
            };
            if key.is_empty() {
                return Err(UriError::new(
                    role,
                    uri,
                    UriErrorKind::EmptyAuthParam { index },
                ));
            }
            let key = AuthKey::from_name(key).ok_or_else(|| {
                UriError::new(
                    role,
                    uri,
                    UriErrorKind::UnknownAuthKey {
                        key: key.to_owned(),
                    },
                )
            })?;
            params.push(AuthParam {
                key,
                value: value.map(str::to_owned),
            });
        }
        Ok(AuthParams(params))
    }
}

impl FromStr for AuthParams {
    type Err = UriError;

    /// Parses `key[=value][&key[=value]...]` (without the `#`). At least one parameter.
    fn from_str(s: &str) -> Result<AuthParams, UriError> {
        AuthParams::parse_in(s, UriRole::AuthParams, s)
    }
}

impl fmt::Display for AuthParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("&")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl<'a> IntoIterator for &'a AuthParams {
    type Item = &'a AuthParam;
    type IntoIter = std::slice::Iter<'a, AuthParam>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl FromIterator<AuthParam> for AuthParams {
    fn from_iter<I: IntoIterator<Item = AuthParam>>(iter: I) -> AuthParams {
        AuthParams(iter.into_iter().collect())
    }
}

/// The pieces every URI form shares once the scheme is off.
struct Authority<'a> {
    user_info: Option<&'a str>,
    host: Host,
    port: Option<u16>,
    auth: Option<&'a str>,
}

/// Splits `[user@]host[:port][#auth]`; `rest` is what follows `scheme://` (or the whole
/// text when there is no scheme).
fn split_authority<'a>(rest: &'a str, role: UriRole, uri: &str) -> Result<Authority<'a>, UriError> {
    let err = |kind| UriError::new(role, uri, kind);
    let (authority, auth) = match rest.split_once('#') {
        Some((a, f)) => (a, Some(f)),
        None => (rest, None),
    };
    if let Some(pos) = authority.find(['/', '?']) {
        let text = authority.get(pos..).unwrap_or_default();
        return Err(err(UriErrorKind::UnexpectedText {
            text: text.to_owned(),
        }));
    }
    let (user_info, host_port) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    // Split host and port: the port follows the last ':' outside brackets.
    let (host_text, port_text) = if host_port.starts_with('[') {
        match host_port.find(']') {
            Some(close) => {
                let (h, after) = host_port.split_at(close + 1);
                match after.strip_prefix(':') {
                    Some(p) => (h, Some(p)),
                    None if after.is_empty() => (h, None),
                    None => {
                        return Err(err(UriErrorKind::UnexpectedText {
                            text: after.to_owned(),
                        }))
                    }
                }
            }
            None => (host_port, None),
        }
    } else {
        match host_port.split_once(':') {
            Some((_, p)) if p.contains(':') => {
                // More than one colon outside brackets: an unbracketed IPv6 literal.
                return Err(err(UriErrorKind::InvalidHost {
                    host: host_port.to_owned(),
                    reason: "an IPv6 literal must be in brackets",
                }));
            }
            Some((h, p)) => (h, Some(p)),
            None => (host_port, None),
        }
    };
    let host = Host::parse_in(host_text, role, uri)?;
    let port = match port_text {
        None | Some("") => None,
        Some(p) => Some(
            parse_port(p).ok_or_else(|| err(UriErrorKind::InvalidPort { port: p.to_owned() }))?,
        ),
    };
    Ok(Authority {
        user_info,
        host,
        port,
        auth,
    })
}

/// A decimal port, 0 to 65535 (leading zeros allowed).
fn parse_port(text: &str) -> Option<u16> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits = text.trim_start_matches('0');
    if digits.len() > 5 {
        return None;
    }
    if digits.is_empty() {
        return Some(0);
    }
    digits.parse().ok()
}

/// Splits off `scheme://` (looked for before any `#` only), returning the scheme text and
/// the rest; `None` when there is no `://`.
fn split_scheme(s: &str) -> Option<(&str, &str)> {
    let head = s.split('#').next().unwrap_or_default();
    let end = head.find("://")?;
    let scheme = s.get(..end)?;
    let rest = s.get(end + 3..)?;
    Some((scheme, rest))
}

/// A service URI that ESXi opens itself (no proxy): one of the ten forms of docs/uri-backing.md.
///
/// | form | transport |
/// |---|---|
/// | `<host>:<port>` | same as `tcp://` |
/// | `tcp://`, `tcp4://`, `tcp6://` | raw TCP (any / IPv4 / IPv6) |
/// | `ssl://`, `tcp+ssl://`, `tcp4+ssl://`, `tcp6+ssl://` | TLS over TCP |
/// | `telnet://` | telnet (may upgrade to TLS in-band) |
/// | `telnets://` | telnet over TLS |
///
/// The port is mandatory; the host may be empty (a listener on every interface).
/// Authentication parameters (`#key[=value]&...`) are accepted after `telnet`, `telnets`
/// and the `ssl` family (where validation warns that they are undocumented), and rejected
/// after `tcp`, `tcp4`, `tcp6` and scheme-less URIs.
///
/// ```
/// use vspc_backing::{Scheme, ServiceUri};
///
/// let uri: ServiceUri = "TELNETS://[fe80::1]:13370#thumbprint=AB:CD&verify".parse()?;
/// assert_eq!(uri.scheme(), Some(Scheme::Telnets));
/// assert_eq!(uri.port(), 13370);
/// assert_eq!(uri.to_string(), "telnets://[fe80::1]:13370#thumbprint=AB:CD&verify");
///
/// let listener: ServiceUri = "telnet://:12345".parse()?;
/// assert!(listener.host().is_empty());
/// # Ok::<(), vspc_backing::UriError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServiceUri {
    scheme: Option<Scheme>,
    host: Host,
    port: u16,
    auth: AuthParams,
}

impl ServiceUri {
    /// A service URI without authentication parameters; `scheme` `None` is the
    /// `<host>:<port>` form.
    pub const fn new(scheme: Option<Scheme>, host: Host, port: u16) -> ServiceUri {
        ServiceUri {
            scheme,
            host,
            port,
            auth: AuthParams::new(),
        }
    }

    /// Sets the authentication parameters; fails unless the scheme accepts them
    /// ([`Scheme::accepts_auth`]).
    pub fn with_auth(mut self, auth: AuthParams) -> Result<ServiceUri, UriError> {
        if !auth.is_empty() && !self.scheme.is_some_and(Scheme::accepts_auth) {
            let uri = self.to_string();
            return Err(UriError::new(
                UriRole::ServiceUri,
                &format!("{uri}#{auth}"),
                UriErrorKind::AuthNotAllowed {
                    scheme: self.scheme,
                },
            ));
        }
        self.auth = auth;
        Ok(self)
    }

    /// The scheme; `None` for the `<host>:<port>` form.
    pub const fn scheme(&self) -> Option<Scheme> {
        self.scheme
    }

    /// The transport (`<host>:<port>` is raw TCP).
    pub fn transport(&self) -> Transport {
        self.scheme.map_or(Transport::Tcp, Scheme::transport)
    }

    /// The host.
    pub const fn host(&self) -> &Host {
        &self.host
    }

    /// The port.
    pub const fn port(&self) -> u16 {
        self.port
    }

    /// The authentication parameters (empty when none were written).
    pub const fn auth(&self) -> &AuthParams {
        &self.auth
    }
}

impl FromStr for ServiceUri {
    type Err = UriError;

    fn from_str(s: &str) -> Result<ServiceUri, UriError> {
        let role = UriRole::ServiceUri;
        let err = |kind| UriError::new(role, s, kind);
        if s.is_empty() {
            return Err(err(UriErrorKind::Empty));
        }
        let (scheme, rest) = match split_scheme(s) {
            Some((name, rest)) => {
                let scheme = Scheme::from_name(name).ok_or_else(|| {
                    err(UriErrorKind::UnknownScheme {
                        scheme: name.to_owned(),
                    })
                })?;
                (Some(scheme), rest)
            }
            None => (None, s),
        };
        let a = split_authority(rest, role, s)?;
        if a.user_info.is_some() {
            return Err(UriError::user_info(role, s));
        }
        let port = a.port.ok_or_else(|| err(UriErrorKind::MissingPort))?;
        let auth = match a.auth {
            None => AuthParams::new(),
            Some(text) => {
                if !scheme.is_some_and(Scheme::accepts_auth) {
                    return Err(err(UriErrorKind::AuthNotAllowed { scheme }));
                }
                AuthParams::parse_in(text, role, s)?
            }
        };
        Ok(ServiceUri {
            scheme,
            host: a.host,
            port,
            auth,
        })
    }
}

impl fmt::Display for ServiceUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(scheme) = self.scheme {
            write!(f, "{scheme}://")?;
        }
        write!(f, "{}:{}", self.host, self.port)?;
        if !self.auth.is_empty() {
            write!(f, "#{}", self.auth)?;
        }
        Ok(())
    }
}

/// A proxy URI: `telnet://<host>:<port>` or `telnets://<host>:<port>`, optionally followed
/// by authentication parameters, never with user info; host and port are mandatory.
///
/// ```
/// use vspc_backing::{AuthKey, ProxyScheme, ProxyUri};
///
/// let proxy: ProxyUri = "telnets://vspc.example.com:13370#thumbprint=AB:CD".parse()?;
/// assert_eq!(proxy.scheme(), ProxyScheme::Telnets);
/// assert_eq!(proxy.host().as_str(), "vspc.example.com");
/// assert_eq!(proxy.auth().get(AuthKey::Thumbprint), Some("AB:CD"));
///
/// let err = "http://x:1".parse::<ProxyUri>().unwrap_err();
/// assert_eq!(err.to_string(), r#"proxyURI "http://x:1": scheme must be telnet or telnets"#);
/// # Ok::<(), vspc_backing::UriError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProxyUri {
    scheme: ProxyScheme,
    host: Host,
    port: u16,
    auth: AuthParams,
}

impl ProxyUri {
    /// A proxy URI without authentication parameters; fails when the host is empty.
    pub fn new(scheme: ProxyScheme, host: Host, port: u16) -> Result<ProxyUri, UriError> {
        if host.is_empty() {
            let uri = format!("{scheme}://:{port}");
            return Err(UriError::new(
                UriRole::ProxyUri,
                &uri,
                UriErrorKind::MissingHost,
            ));
        }
        Ok(ProxyUri {
            scheme,
            host,
            port,
            auth: AuthParams::new(),
        })
    }

    /// Sets the authentication parameters.
    #[must_use]
    pub fn with_auth(mut self, auth: AuthParams) -> ProxyUri {
        self.auth = auth;
        self
    }

    /// The scheme.
    pub const fn scheme(&self) -> ProxyScheme {
        self.scheme
    }

    /// The host (never empty).
    pub const fn host(&self) -> &Host {
        &self.host
    }

    /// The port.
    pub const fn port(&self) -> u16 {
        self.port
    }

    /// The authentication parameters (empty when none were written).
    pub const fn auth(&self) -> &AuthParams {
        &self.auth
    }
}

impl FromStr for ProxyUri {
    type Err = UriError;

    fn from_str(s: &str) -> Result<ProxyUri, UriError> {
        let role = UriRole::ProxyUri;
        let err = |kind| UriError::new(role, s, kind);
        if s.is_empty() {
            return Err(err(UriErrorKind::Empty));
        }
        let not_telnet = |scheme: &str| {
            err(UriErrorKind::NotTelnet {
                scheme: scheme.to_owned(),
            })
        };
        let (scheme, rest) = match split_scheme(s) {
            Some((name, rest)) => (
                ProxyScheme::from_name(name).ok_or_else(|| not_telnet(name))?,
                rest,
            ),
            None => return Err(not_telnet("")),
        };
        let a = split_authority(rest, role, s)?;
        if a.user_info.is_some() {
            return Err(UriError::user_info(role, s));
        }
        if a.host.is_empty() {
            return Err(err(UriErrorKind::MissingHost));
        }
        let port = a.port.ok_or_else(|| err(UriErrorKind::MissingPort))?;
        let auth = match a.auth {
            None => AuthParams::new(),
            Some(text) => AuthParams::parse_in(text, role, s)?,
        };
        Ok(ProxyUri {
            scheme,
            host: a.host,
            port,
            auth,
        })
    }
}

impl fmt::Display for ProxyUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)?;
        if !self.auth.is_empty() {
            write!(f, "#{}", self.auth)?;
        }
        Ok(())
    }
}

/// Why a URI cannot be converted to a [`url::Url`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UrlConversionError {
    /// The `<host>:<port>` form has no scheme; `url` would read the host as a scheme.
    #[error("{uri:?}: a URI without a scheme has no url::Url equivalent")]
    NoScheme {
        /// The URI.
        uri: String,
    },
    /// `url` rejects an empty host followed by a port (`telnet://:12345`).
    #[error("{uri:?}: a URI with an empty host has no url::Url equivalent")]
    EmptyHost {
        /// The URI.
        uri: String,
    },
    /// `url` rejected the URI for another reason.
    #[error("{uri:?}: url::Url rejects it: {source}")]
    Rejected {
        /// The URI.
        uri: String,
        /// What `url` said.
        source: url::ParseError,
    },
}

fn to_url(text: String, has_scheme: bool, host: &Host) -> Result<url::Url, UrlConversionError> {
    if !has_scheme {
        return Err(UrlConversionError::NoScheme { uri: text });
    }
    if host.is_empty() {
        return Err(UrlConversionError::EmptyHost { uri: text });
    }
    url::Url::parse(&text).map_err(|source| UrlConversionError::Rejected { uri: text, source })
}

impl TryFrom<&ServiceUri> for url::Url {
    type Error = UrlConversionError;

    /// Converts where `url` can represent the URI. `url` may normalise the result (for
    /// instance compress an IPv6 literal or percent-encode spaces in the fragment).
    fn try_from(uri: &ServiceUri) -> Result<url::Url, UrlConversionError> {
        to_url(uri.to_string(), uri.scheme.is_some(), &uri.host)
    }
}

impl TryFrom<&ProxyUri> for url::Url {
    type Error = UrlConversionError;

    /// Converts a proxy URI (always representable unless `url` rejects the host).
    fn try_from(uri: &ProxyUri) -> Result<url::Url, UrlConversionError> {
        to_url(uri.to_string(), true, &uri.host)
    }
}

impl TryFrom<&url::Url> for ServiceUri {
    type Error = UriError;

    /// Reads the URL's text with the service URI grammar (so a path, a query or user info
    /// is rejected).
    fn try_from(url: &url::Url) -> Result<ServiceUri, UriError> {
        url.as_str().parse()
    }
}

impl TryFrom<&url::Url> for ProxyUri {
    type Error = UriError;

    /// Reads the URL's text with the proxy URI grammar.
    fn try_from(url: &url::Url) -> Result<ProxyUri, UriError> {
        url.as_str().parse()
    }
}
