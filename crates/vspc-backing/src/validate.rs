//! Validation of a URI backing (docs/uri-backing.md, "Validation"): typed errors, typed warnings.

use std::fmt;

use crate::error::ValidationError;
use crate::model::{Direction, UriBackingInfo};
use crate::thumbprint::Thumbprint;
use crate::uri::{
    AddressFamily, AuthKey, AuthParams, ProxyUri, Scheme, ServiceUri, Transport, UriError,
    UriErrorKind, UriRole,
};

/// How strict validation is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ValidationPolicy {
    /// Reject a `thumbprint=` value that is not colon-separated hex pairs of a SHA-1 or
    /// SHA-256 digest ([`Thumbprint`]). Off by default: ESXi's own check is undocumented.
    pub strict_thumbprint: bool,
}

impl ValidationPolicy {
    /// The default policy: thumbprints are not checked.
    pub const fn lenient() -> ValidationPolicy {
        ValidationPolicy {
            strict_thumbprint: false,
        }
    }

    /// Thumbprints must be well-formed.
    pub const fn strict() -> ValidationPolicy {
        ValidationPolicy {
            strict_thumbprint: true,
        }
    }
}

/// Something ESXi accepts but that probably does not do what was meant (docs/uri-backing.md,
/// "Validation").
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Warning {
    /// Direction `server` with a host that is not local: ESXi listens on its own addresses.
    ServerHostNotLocal {
        /// The service URI.
        uri: String,
        /// The host as written.
        host: String,
    },
    /// Direction `server` on a port below 1024 other than 23: the ESXi firewall ruleset
    /// `remoteSerialPort` blocks it.
    ServerPortBlocked {
        /// The service URI.
        uri: String,
        /// The port.
        port: u16,
    },
    /// `tcp4` (or `tcp4+ssl`) with an IPv6 literal, or `tcp6` (or `tcp6+ssl`) with an IPv4
    /// address.
    AddressFamilyMismatch {
        /// The service URI.
        uri: String,
        /// The scheme.
        scheme: Scheme,
    },
    /// Authentication parameters after a scheme of the `ssl` family, where they are
    /// undocumented.
    AuthOnSsl {
        /// The service URI.
        uri: String,
        /// The scheme.
        scheme: Scheme,
    },
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::ServerHostNotLocal { uri, host } => write!(
                f,
                "serviceURI {uri:?}: direction server with host {host:?}, which is not local \
                 (ESXi can only listen on its own addresses)"
            ),
            Warning::ServerPortBlocked { uri, port } => write!(
                f,
                "serviceURI {uri:?}: server port {port} is below 1024 and not 23 \
                 (the ESXi firewall ruleset remoteSerialPort blocks it)"
            ),
            Warning::AddressFamilyMismatch { uri, scheme } => {
                let literal = match scheme.family() {
                    AddressFamily::Ipv6 => "an IPv4 address",
                    _ => "an IPv6 literal",
                };
                write!(f, "serviceURI {uri:?}: {scheme} with {literal}")
            }
            Warning::AuthOnSsl { uri, scheme } => write!(
                f,
                "serviceURI {uri:?}: authentication parameters with {scheme} are undocumented \
                 (documented for telnet and telnets only)"
            ),
        }
    }
}

/// Where a valid backing's service URI leads.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ServiceTarget {
    /// No proxy: ESXi opens this URI itself.
    Direct(ServiceUri),
    /// Behind a proxy: forwarded verbatim to the proxy, which alone gives it a meaning.
    Proxied {
        /// The concentrator.
        proxy: ProxyUri,
        /// The opaque service URI.
        service_uri: String,
    },
}

/// A backing that passed validation: its parts, typed, and the warnings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedBacking {
    direction: Direction,
    target: ServiceTarget,
    warnings: Vec<Warning>,
}

impl ValidatedBacking {
    /// The direction.
    pub const fn direction(&self) -> Direction {
        self.direction
    }

    /// The service URI, parsed when direct, opaque behind a proxy.
    pub const fn target(&self) -> &ServiceTarget {
        &self.target
    }

    /// The proxy, if any.
    pub const fn proxy(&self) -> Option<&ProxyUri> {
        match &self.target {
            ServiceTarget::Proxied { proxy, .. } => Some(proxy),
            ServiceTarget::Direct(_) => None,
        }
    }

    /// The warnings, in the order of docs/uri-backing.md, "Validation".
    pub fn warnings(&self) -> &[Warning] {
        &self.warnings
    }
}

impl UriBackingInfo {
    /// Validates with the default (lenient) policy.
    pub fn validate(&self) -> Result<ValidatedBacking, ValidationError> {
        self.validate_with(&ValidationPolicy::default())
    }

    /// Validates: the first error (in the order of docs/uri-backing.md, "Validation"), or the
    /// typed parts and the warnings.
    pub fn validate_with(
        &self,
        policy: &ValidationPolicy,
    ) -> Result<ValidatedBacking, ValidationError> {
        if self.service_uri.is_empty() {
            return Err(ValidationError::MissingServiceUri);
        }
        let direction: Direction = self.direction.parse()?;
        if let Some(proxy) = &self.proxy_uri {
            let proxy: ProxyUri = proxy.parse()?;
            check_thumbprints(proxy.auth(), policy, UriRole::ProxyUri, &proxy.to_string())?;
            return Ok(ValidatedBacking {
                direction,
                target: ServiceTarget::Proxied {
                    proxy,
                    service_uri: self.service_uri.clone(),
                },
                warnings: Vec::new(),
            });
        }
        let uri: ServiceUri = self.service_uri.parse()?;
        check_thumbprints(uri.auth(), policy, UriRole::ServiceUri, &self.service_uri)?;
        let warnings = direct_warnings(&uri, direction, &self.service_uri);
        Ok(ValidatedBacking {
            direction,
            target: ServiceTarget::Direct(uri),
            warnings,
        })
    }
}

fn check_thumbprints(
    auth: &AuthParams,
    policy: &ValidationPolicy,
    role: UriRole,
    uri: &str,
) -> Result<(), UriError> {
    if !policy.strict_thumbprint {
        return Ok(());
    }
    for param in auth.iter().filter(|p| p.key() == AuthKey::Thumbprint) {
        let value = param.value().unwrap_or_default();
        if value.parse::<Thumbprint>().is_err() {
            return Err(UriError::new(
                role,
                uri,
                UriErrorKind::MalformedThumbprint {
                    value: value.to_owned(),
                },
            ));
        }
    }
    Ok(())
}

fn direct_warnings(uri: &ServiceUri, direction: Direction, text: &str) -> Vec<Warning> {
    let mut warnings = Vec::new();
    if direction == Direction::Server {
        if !uri.host().is_local() {
            warnings.push(Warning::ServerHostNotLocal {
                uri: text.to_owned(),
                host: uri.host().to_string(),
            });
        }
        if uri.port() < 1024 && uri.port() != 23 {
            warnings.push(Warning::ServerPortBlocked {
                uri: text.to_owned(),
                port: uri.port(),
            });
        }
    }
    if let Some(scheme) = uri.scheme() {
        let mismatch = match (scheme.family(), uri.host().ip()) {
            (AddressFamily::Ipv4, Some(ip)) => ip.is_ipv6(),
            (AddressFamily::Ipv6, Some(ip)) => ip.is_ipv4(),
            _ => false,
        };
        if mismatch {
            warnings.push(Warning::AddressFamilyMismatch {
                uri: text.to_owned(),
                scheme,
            });
        }
        if scheme.transport() == Transport::Tls && !uri.auth().is_empty() {
            warnings.push(Warning::AuthOnSsl {
                uri: text.to_owned(),
                scheme,
            });
        }
    }
    warnings
}
