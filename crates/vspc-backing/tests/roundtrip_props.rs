//! Property tests: generated URIs of every form display exactly as written (scheme
//! lower-cased) and parse back to the same value; arbitrary text never breaks the parsers.

use std::net::{Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use vspc_backing::{AuthKey, ProxyUri, Scheme, ServiceUri};
use vspc_testkit::fuzz::uri_parse as uri_invariant;

/// Randomises the case of an ASCII string.
fn random_case(s: &'static str) -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<bool>(), s.len()).prop_map(move |upper| {
        s.chars()
            .zip(upper)
            .map(|(c, u)| if u { c.to_ascii_uppercase() } else { c })
            .collect()
    })
}

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[A-Za-z0-9]([A-Za-z0-9.-]{0,20}[A-Za-z0-9])?",
        "[a-z0-9_~!$'()*+,;=-]{1,8}(%[0-9A-Fa-f]{2})?",
        any::<[u8; 4]>().prop_map(|o| Ipv4Addr::from(o).to_string()),
        (any::<[u16; 8]>(), 0..3u8).prop_map(|(segs, style)| {
            let a = Ipv6Addr::from(segs);
            let text = match style {
                0 => a.to_string(),
                1 => a.to_string().to_uppercase(),
                _ => segs
                    .iter()
                    .map(|s| format!("{s:x}"))
                    .collect::<Vec<_>>()
                    .join(":"),
            };
            format!("[{text}]")
        }),
    ]
}

fn auth_text() -> impl Strategy<Value = String> {
    let param = (
        proptest::sample::select(AuthKey::ALL.to_vec()),
        proptest::option::of("[^&]{0,24}"),
    )
        .prop_map(|(k, v)| match v {
            Some(v) => format!("{}={v}", k.as_str()),
            None => k.as_str().to_owned(),
        });
    proptest::collection::vec(param, 1..5).prop_map(|p| p.join("&"))
}

/// (text as written, text as displayed) for a direct service URI.
fn service_text() -> impl Strategy<Value = (String, String)> {
    let scheme = proptest::option::of(proptest::sample::select(Scheme::ALL.to_vec()));
    (
        scheme,
        host(),
        any::<u16>(),
        proptest::option::of(auth_text()),
    )
        .prop_flat_map(|(scheme, host, port, auth)| {
            let scheme_case = match scheme {
                Some(s) => random_case(s.as_str()).prop_map(Some).boxed(),
                None => Just(None).boxed(),
            };
            scheme_case.prop_map(move |written_scheme| {
                let auth = auth
                    .as_ref()
                    .filter(|_| scheme.is_some_and(Scheme::accepts_auth))
                    .map(|a| format!("#{a}"))
                    .unwrap_or_default();
                let body = format!("{host}:{port}{auth}");
                match (&written_scheme, scheme) {
                    (Some(w), Some(s)) => (format!("{w}://{body}"), format!("{s}://{body}")),
                    _ => (body.clone(), body),
                }
            })
        })
}

fn proxy_text() -> impl Strategy<Value = (String, String)> {
    (
        prop_oneof![random_case("telnet"), random_case("telnets")],
        host().prop_filter("proxy needs a host", |h| !h.is_empty()),
        any::<u16>(),
        proptest::option::of(auth_text()),
    )
        .prop_map(|(scheme, host, port, auth)| {
            let body = format!(
                "{host}:{port}{}",
                auth.map(|a| format!("#{a}")).unwrap_or_default()
            );
            (
                format!("{scheme}://{body}"),
                format!("{}://{body}", scheme.to_ascii_lowercase()),
            )
        })
}

proptest! {
    #[test]
    fn generated_service_uris_round_trip_exactly((written, displayed) in service_text()) {
        let uri: ServiceUri = written.parse().map_err(|e| TestCaseError::fail(format!("{e}")))?;
        prop_assert_eq!(uri.to_string(), displayed.clone());
        prop_assert_eq!(displayed.parse::<ServiceUri>(), Ok(uri));
    }

    #[test]
    fn generated_proxy_uris_round_trip_exactly((written, displayed) in proxy_text()) {
        let uri: ProxyUri = written.parse().map_err(|e| TestCaseError::fail(format!("{e}")))?;
        prop_assert_eq!(uri.to_string(), displayed.clone());
        prop_assert_eq!(displayed.parse::<ProxyUri>(), Ok(uri));
    }

    #[test]
    fn arbitrary_text_never_breaks_the_invariant(s in "\\PC{0,64}") {
        uri_invariant::check(&s);
    }

    #[test]
    fn uri_shaped_text_never_breaks_the_invariant(s in "([a-zA-Z+]{0,8}://)?[\\[\\]a-zA-Z0-9.:@%/?-]{0,24}(#[a-zA-Z=&:#]{0,24})?") {
        uri_invariant::check(&s);
    }
}
