//! The errors of validation.

use crate::uri::UriError;

/// A URI backing that ESXi would refuse (docs/uri-backing.md, "Validation").
///
/// ```
/// use vspc_backing::{UriBackingInfo, ValidationError};
///
/// let backing = UriBackingInfo::from_parts("vSPC.py", "Server", None);
/// let err = backing.validate().unwrap_err();
/// assert_eq!(err.to_string(), r#"direction "Server": must be "server" or "client""#);
/// assert!(matches!(err, ValidationError::InvalidDirection { .. }));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValidationError {
    /// `serviceURI` is absent or empty.
    #[error("serviceURI is missing")]
    MissingServiceUri,
    /// `direction` is absent or empty.
    #[error("direction is missing")]
    MissingDirection,
    /// `direction` is neither `server` nor `client` (the literals are exact and lower-case).
    #[error("direction {direction:?}: must be \"server\" or \"client\"")]
    InvalidDirection {
        /// The direction as written.
        direction: String,
    },
    /// The proxyURI or the direct serviceURI is invalid; [`UriError::kind`] says how
    /// (including an unknown authentication key and, when strict, a malformed thumbprint).
    #[error(transparent)]
    Uri(#[from] UriError),
}

impl ValidationError {
    /// The URI error, when the error is about a URI.
    pub const fn uri_error(&self) -> Option<&UriError> {
        match self {
            ValidationError::Uri(e) => Some(e),
            _ => None,
        }
    }
}
