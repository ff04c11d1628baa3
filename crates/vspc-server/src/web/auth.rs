//! Who may use the web console, and what they may do.
//!
//! Today one bearer token from the configuration admits a request, and an admitted
//! [`Principal`] may attach to any VM in any mode; its terminals are core clients of the user
//! `web:<principal>`, so the audit trail SSH sessions use records them too. [`Access`] is the one place that decides:
//! per-user rules (what the SSH access checks for a key) plug in at
//! [`Access::authenticate`] and [`Access::may_attach`] without touching the handlers.

use axum::http::header::{AUTHORIZATION, COOKIE, HOST, ORIGIN};
use axum::http::HeaderMap;
use vspc_concentrator::{Mode, VmId};

/// The cookie the page sets after `/?token=...`, so that its own requests (the WebSocket and
/// the event stream, which cannot carry an `Authorization` header) are admitted.
pub(crate) const COOKIE_NAME: &str = "vspc_token";

/// Who a request comes from, once admitted (named in the log lines of attaches and detaches).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Principal {
    pub(crate) name: String,
}

/// The console's access policy.
#[derive(Debug)]
pub(crate) struct Access {
    token: String,
}

impl Access {
    pub(crate) fn new(token: String) -> Access {
        Access { token }
    }

    /// Whether `candidate` is the token (compared in constant time: a timing probe learns
    /// nothing of it).
    pub(crate) fn token_matches(&self, candidate: &str) -> bool {
        constant_time_eq(self.token.as_bytes(), candidate.as_bytes())
    }

    /// The principal a request speaks for: its `Authorization: Bearer` header or its
    /// cookie must carry the token.
    pub(crate) fn authenticate(&self, headers: &HeaderMap) -> Option<Principal> {
        let bearer = headers
            .get_all(AUTHORIZATION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.strip_prefix("Bearer "))
            .any(|t| self.token_matches(t.trim()));
        let cookie = || {
            headers
                .get_all(COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .filter_map(|pair| pair.trim().split_once('='))
                .any(|(name, value)| name == COOKIE_NAME && self.token_matches(value))
        };
        (bearer || cookie()).then(|| Principal {
            name: "token".to_owned(),
        })
    }

    /// Whether `principal` may attach to `vm` in `mode` (the token admits everything).
    pub(crate) fn may_attach(&self, principal: &Principal, vm: VmId, mode: Mode) -> bool {
        let _ = (principal, vm, mode);
        true
    }
}

/// Whether a browser request comes from the console's own page: a browser always sends
/// `Origin` on a WebSocket handshake, and another site's page must not drive a terminal with
/// the operator's cookie. Tools that send no `Origin` are judged by their token alone.
pub(crate) fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(ORIGIN) else {
        return true;
    };
    let (Ok(origin), Some(Ok(host))) = (origin.to_str(), headers.get(HOST).map(|h| h.to_str()))
    else {
        return false;
    };
    let authority = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    authority.is_some_and(|a| a.eq_ignore_ascii_case(host))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A fresh random token (128 bits, hex) for a console configured without one; `None` when
/// the OS has no randomness to give (the console must then not start with a guessable one).
pub(crate) fn random_token() -> Option<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).ok()?;
    Some(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(axum::http::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn bearer_or_cookie_admits_nothing_else_does() {
        let access = Access::new("0123456789abcdef".to_owned());
        let ok = |h: &[(axum::http::HeaderName, &str)]| access.authenticate(&headers(h)).is_some();
        assert!(ok(&[(AUTHORIZATION, "Bearer 0123456789abcdef")]));
        assert!(ok(&[(COOKIE, "a=b; vspc_token=0123456789abcdef")]));
        assert!(!ok(&[]));
        assert!(!ok(&[(AUTHORIZATION, "Bearer 0123456789abcdeX")]));
        assert!(!ok(&[(AUTHORIZATION, "Basic 0123456789abcdef")]));
        assert!(!ok(&[(COOKIE, "vspc_token=0123456789abcde")]));
        assert!(!ok(&[(COOKIE, "other=0123456789abcdef")]));
    }

    #[test]
    fn origin_must_be_the_host() {
        assert!(same_origin(&headers(&[(HOST, "127.0.0.1:9")])));
        assert!(same_origin(&headers(&[
            (HOST, "127.0.0.1:9"),
            (ORIGIN, "http://127.0.0.1:9")
        ])));
        assert!(same_origin(&headers(&[
            (HOST, "console:9"),
            (ORIGIN, "https://console:9")
        ])));
        assert!(!same_origin(&headers(&[
            (HOST, "127.0.0.1:9"),
            (ORIGIN, "http://evil.example")
        ])));
        assert!(!same_origin(&headers(&[(ORIGIN, "http://127.0.0.1:9")])));
        assert!(!same_origin(&headers(&[
            (HOST, "127.0.0.1:9"),
            (ORIGIN, "null")
        ])));
    }

    #[test]
    fn random_tokens_differ() {
        let (a, b) = (random_token().unwrap(), random_token().unwrap());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }
}
