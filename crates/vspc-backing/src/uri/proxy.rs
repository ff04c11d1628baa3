//! Proxy URIs: `telnet` or `telnets`, a host and a port.

use std::fmt;
use std::str::FromStr;

use super::auth::{parse_auth, AuthParams};
use super::authority::parse_authority;
use super::error::{UriError, UriErrorKind, UriRole};
use super::host::Host;
use super::scheme::{split_scheme, ProxyScheme};

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
            (Some(name), rest) => (
                ProxyScheme::from_name(name).ok_or_else(|| not_telnet(name))?,
                rest,
            ),
            (None, _) => return Err(not_telnet("")),
        };
        let a = parse_authority(rest).map_err(err)?;
        if a.user_info {
            return Err(UriError::user_info(role, s));
        }
        if a.host.is_empty() {
            return Err(err(UriErrorKind::MissingHost));
        }
        let port = a.port.ok_or_else(|| err(UriErrorKind::MissingPort))?;
        let auth = match a.auth {
            None => AuthParams::new(),
            Some(text) => parse_auth(text).map_err(err)?,
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
