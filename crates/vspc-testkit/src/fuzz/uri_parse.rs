//! The invariant of the URI parsers on arbitrary input, shared by the fuzz target
//! `uri_parse`, the corpus replay test and the proptests of vspc-backing.
//!
//! For every parser (service URI, proxy URI, authentication parameters, host): no panic, and
//! when the input parses, `parse(display(parse(s))) == parse(s)` and displaying again gives
//! the same text. Validation of a backing made of the input (direct, proxied, strict) never
//! panics either.

use std::fmt::{Debug, Display};
use std::str::FromStr;

use vspc_backing::{AuthParams, Host, ProxyUri, ServiceUri, UriBackingInfo, ValidationPolicy};

/// Checks the invariant on raw bytes (non-UTF-8 input is skipped).
pub fn check_bytes(input: &[u8]) {
    if let Ok(s) = std::str::from_utf8(input) {
        check(s);
    }
}

/// Checks the invariant on a string.
pub fn check(input: &str) {
    round_trip::<ServiceUri>(input);
    round_trip::<ProxyUri>(input);
    round_trip::<AuthParams>(input);
    round_trip::<Host>(input);
    let strict = ValidationPolicy::strict();
    for direction in ["server", "client", input] {
        let _ = UriBackingInfo::from_parts(input, direction, None).validate_with(&strict);
        let _ = UriBackingInfo::from_parts(input, direction, Some(input.to_owned()))
            .validate_with(&strict);
    }
}

fn round_trip<T>(input: &str)
where
    T: FromStr + Display + PartialEq + Debug,
    T::Err: Debug + Display,
{
    let Ok(parsed) = input.parse::<T>() else {
        return;
    };
    let shown = parsed.to_string();
    match shown.parse::<T>() {
        Ok(again) => {
            assert_eq!(
                again, parsed,
                "parse(display(parse({input:?}))) != parse({input:?})"
            );
            assert_eq!(
                again.to_string(),
                shown,
                "display is not stable for {input:?}"
            );
        }
        Err(e) => {
            panic!("{input:?} parsed as {parsed:?}, displayed as {shown:?}, which fails: {e}")
        }
    }
}
