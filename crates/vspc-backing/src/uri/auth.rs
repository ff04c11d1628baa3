//! Authentication parameters (`#key[=value]&...`) and their grammar.

use std::fmt;
use std::str::FromStr;

use nom::character::complete::char;
use nom::combinator::{map, opt};
use nom::multi::separated_list1;
use nom::sequence::preceded;
use nom::Parser;

use super::auth_key::AuthKey;
use super::error::{UriError, UriErrorKind, UriRole};
use super::parse::{complete, invalid, till, PResult};

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
}

/// Reads `auth-params = param *("&" param)` (the text after `#`), where
/// `param = key ["=" value]`: every key is one of [`AuthKey`], and the first faulty parameter
/// is the one reported.
pub(super) fn parse_auth(text: &str) -> Result<AuthParams, UriErrorKind> {
    let mut index = 0;
    let param = move |input| {
        let parsed = param(input, index);
        index += 1;
        parsed
    };
    // Every text is a list of `param`s (an empty key is a typed failure, not a mismatch),
    // so `mismatch` is never asked.
    let params = map(separated_list1(char('&'), param), AuthParams);
    complete(params, text, || UriErrorKind::EmptyAuthParam { index: 0 })
}

/// One parameter, the `index`-th (from 0).
fn param(input: &str, index: usize) -> PResult<'_, AuthParam, UriErrorKind> {
    let (rest, (key, value)) = (till(b"&="), opt(preceded(char('='), till(b"&")))).parse(input)?;
    if key.is_empty() {
        return Err(invalid(UriErrorKind::EmptyAuthParam { index }));
    }
    let key = AuthKey::from_name(key).ok_or_else(|| {
        invalid(UriErrorKind::UnknownAuthKey {
            key: key.to_owned(),
        })
    })?;
    let value = value.map(str::to_owned);
    Ok((rest, AuthParam { key, value }))
}

impl FromStr for AuthParams {
    type Err = UriError;

    /// Parses `key[=value][&key[=value]...]` (without the `#`). At least one parameter.
    fn from_str(s: &str) -> Result<AuthParams, UriError> {
        parse_auth(s).map_err(|kind| UriError::new(UriRole::AuthParams, s, kind))
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
