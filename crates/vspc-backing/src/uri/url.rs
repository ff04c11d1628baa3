//! Conversions to and from [`url::Url`], where `url` can represent the URI.

use super::error::UriError;
use super::host::Host;
use super::proxy::ProxyUri;
use super::service::ServiceUri;

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
        to_url(uri.to_string(), uri.scheme().is_some(), uri.host())
    }
}

impl TryFrom<&ProxyUri> for url::Url {
    type Error = UrlConversionError;

    /// Converts a proxy URI (always representable unless `url` rejects the host).
    fn try_from(uri: &ProxyUri) -> Result<url::Url, UrlConversionError> {
        to_url(uri.to_string(), true, uri.host())
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
