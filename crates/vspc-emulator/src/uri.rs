//! The proxy URI of a URI backing: `telnet://host:port` or `telnets://host:port`.

use core::fmt;
use core::str::FromStr;

/// `telnet` (plain) or `telnets` (TLS from the first byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// `telnet://`.
    Telnet,
    /// `telnets://`.
    Telnets,
}

/// Where the emulated host connects: a backing's `proxyURI`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProxyUri {
    /// The scheme.
    pub scheme: Scheme,
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// TCP port (default 13370 when the URI names none).
    pub port: u16,
}

/// Why a proxy URI did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UriError {
    /// Neither `telnet://` nor `telnets://`.
    #[error("the scheme must be telnet:// or telnets://")]
    Scheme,
    /// No host.
    #[error("no host")]
    Host,
    /// The port is not a number from 1 to 65535.
    #[error("bad port {0:?}")]
    Port(String),
}

/// The conventional proxy port.
pub const DEFAULT_PROXY_PORT: u16 = 13370;

impl FromStr for ProxyUri {
    type Err = UriError;

    fn from_str(text: &str) -> Result<Self, UriError> {
        let (scheme, rest) = if let Some(rest) = strip_prefix_ci(text, "telnets://") {
            (Scheme::Telnets, rest)
        } else if let Some(rest) = strip_prefix_ci(text, "telnet://") {
            (Scheme::Telnet, rest)
        } else {
            return Err(UriError::Scheme);
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (host, after) = bracketed.split_once(']').ok_or(UriError::Host)?;
            (host, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(UriError::Host);
        }
        let port = match port {
            None => DEFAULT_PROXY_PORT,
            Some(p) => match p.parse::<u16>() {
                Ok(port) if port > 0 => port,
                _ => return Err(UriError::Port(p.to_owned())),
            },
        };
        Ok(ProxyUri {
            scheme,
            host: host.to_owned(),
            port,
        })
    }
}

fn strip_prefix_ci<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

impl fmt::Display for ProxyUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.scheme {
            Scheme::Telnet => "telnet",
            Scheme::Telnets => "telnets",
        };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_schemes_default_port_and_ipv6() {
        let uri: ProxyUri = "telnet://127.0.0.1:13370".parse().unwrap();
        assert_eq!(uri.scheme, Scheme::Telnet);
        assert_eq!(uri.to_string(), "telnet://127.0.0.1:13370");
        let uri: ProxyUri = "TELNETS://vspc.example.com".parse().unwrap();
        assert_eq!((uri.scheme, uri.port), (Scheme::Telnets, 13370));
        let uri: ProxyUri = "telnets://[::1]:9000/x".parse().unwrap();
        assert_eq!((uri.host.as_str(), uri.port), ("::1", 9000));
        assert_eq!(uri.to_string(), "telnets://[::1]:9000");
        assert_eq!("tcp://x:1".parse::<ProxyUri>(), Err(UriError::Scheme));
        assert_eq!("telnet://:1".parse::<ProxyUri>(), Err(UriError::Host));
        assert!(matches!(
            "telnet://h:0".parse::<ProxyUri>(),
            Err(UriError::Port(_))
        ));
        assert!(matches!(
            "telnet://h:x".parse::<ProxyUri>(),
            Err(UriError::Port(_))
        ));
    }
}
