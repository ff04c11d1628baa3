//! Direct service URIs: the ten forms ESXi opens itself.

use std::fmt;
use std::str::FromStr;

use super::auth::{parse_auth, AuthParams};
use super::authority::parse_authority;
use super::error::{UriError, UriErrorKind, UriRole};
use super::host::Host;
use super::scheme::{split_scheme, Scheme, Transport};

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
        let (name, rest) = split_scheme(s);
        let scheme = match name {
            Some(name) => Some(Scheme::from_name(name).ok_or_else(|| {
                err(UriErrorKind::UnknownScheme {
                    scheme: name.to_owned(),
                })
            })?),
            None => None,
        };
        let a = parse_authority(rest).map_err(err)?;
        if a.user_info {
            return Err(UriError::user_info(role, s));
        }
        let port = a.port.ok_or_else(|| err(UriErrorKind::MissingPort))?;
        let auth = match a.auth {
            None => AuthParams::new(),
            Some(text) => {
                if !scheme.is_some_and(Scheme::accepts_auth) {
                    return Err(err(UriErrorKind::AuthNotAllowed { scheme }));
                }
                parse_auth(text).map_err(err)?
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
