//! The URI grammar of docs/uri-backing.md: every form of the table, the host forms, the
//! authentication parameters, exact round-trips, and `url` interop.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use vspc_backing::{
    AddressFamily, AuthKey, AuthParam, AuthParams, Host, ProxyScheme, ProxyUri, Scheme, ServiceUri,
    Transport, UriErrorKind, UriRole, UrlConversionError,
};

fn service(s: &str) -> ServiceUri {
    match s.parse() {
        Ok(uri) => uri,
        Err(e) => panic!("{s:?} should parse: {e}"),
    }
}

fn service_err(s: &str) -> vspc_backing::UriError {
    match s.parse::<ServiceUri>() {
        Ok(uri) => panic!("{s:?} should not parse, got {uri:?}"),
        Err(e) => e,
    }
}

fn proxy(s: &str) -> ProxyUri {
    match s.parse() {
        Ok(uri) => uri,
        Err(e) => panic!("{s:?} should parse: {e}"),
    }
}

fn proxy_err(s: &str) -> vspc_backing::UriError {
    match s.parse::<ProxyUri>() {
        Ok(uri) => panic!("{s:?} should not parse, got {uri:?}"),
        Err(e) => e,
    }
}

#[test]
fn every_form_of_the_table_parses_with_its_transport_and_family() {
    let cases: [(&str, Option<Scheme>, Transport, AddressFamily); 10] = [
        (
            "vspc.example.com:2000",
            None,
            Transport::Tcp,
            AddressFamily::Any,
        ),
        (
            "tcp://vspc.example.com:2000",
            Some(Scheme::Tcp),
            Transport::Tcp,
            AddressFamily::Any,
        ),
        (
            "tcp4://10.0.0.5:2000",
            Some(Scheme::Tcp4),
            Transport::Tcp,
            AddressFamily::Ipv4,
        ),
        (
            "tcp6://[fe80::1]:2000",
            Some(Scheme::Tcp6),
            Transport::Tcp,
            AddressFamily::Ipv6,
        ),
        (
            "ssl://vspc.example.com:2000",
            Some(Scheme::Ssl),
            Transport::Tls,
            AddressFamily::Any,
        ),
        (
            "tcp+ssl://vspc.example.com:2000",
            Some(Scheme::TcpSsl),
            Transport::Tls,
            AddressFamily::Any,
        ),
        (
            "tcp4+ssl://10.0.0.5:2000",
            Some(Scheme::Tcp4Ssl),
            Transport::Tls,
            AddressFamily::Ipv4,
        ),
        (
            "tcp6+ssl://[::1]:2000",
            Some(Scheme::Tcp6Ssl),
            Transport::Tls,
            AddressFamily::Ipv6,
        ),
        (
            "telnet://vspc.example.com:2000",
            Some(Scheme::Telnet),
            Transport::Telnet,
            AddressFamily::Any,
        ),
        (
            "telnets://vspc.example.com:2000",
            Some(Scheme::Telnets),
            Transport::TelnetTls,
            AddressFamily::Any,
        ),
    ];
    for (text, scheme, transport, family) in cases {
        let uri = service(text);
        assert_eq!(uri.scheme(), scheme, "{text}");
        assert_eq!(uri.transport(), transport, "{text}");
        assert_eq!(
            uri.scheme().map_or(AddressFamily::Any, Scheme::family),
            family,
            "{text}"
        );
        assert_eq!(uri.port(), 2000, "{text}");
        assert!(uri.auth().is_empty(), "{text}");
        assert_eq!(uri.to_string(), text, "{text} round-trips exactly");
    }
}

#[test]
fn ssl_and_tcp_plus_ssl_are_the_same_transport_but_stay_distinct_when_written() {
    let ssl = service("ssl://h:1");
    let tcp_ssl = service("tcp+ssl://h:1");
    assert_eq!(ssl.transport(), tcp_ssl.transport());
    assert_ne!(ssl, tcp_ssl);
    assert_eq!(ssl.to_string(), "ssl://h:1");
    assert_eq!(tcp_ssl.to_string(), "tcp+ssl://h:1");
}

#[test]
fn schemes_are_read_case_insensitively_and_written_lower_case() {
    assert_eq!(service("TELNET://h:23").to_string(), "telnet://h:23");
    assert_eq!(
        service("Tcp6+SSL://[::1]:5").to_string(),
        "tcp6+ssl://[::1]:5"
    );
    assert_eq!(proxy("TelNetS://h:13370").to_string(), "telnets://h:13370");
    assert_eq!(proxy("TelNetS://h:13370").scheme(), ProxyScheme::Telnets);
}

#[test]
fn host_forms_dns_ipv4_bracketed_ipv6_and_empty() {
    let dns = service("telnet://Vspc.Example.com:23");
    assert!(dns.host().is_name());
    assert_eq!(
        dns.host().as_str(),
        "Vspc.Example.com",
        "host text kept as written"
    );

    let v4 = service("telnet://192.0.2.7:23");
    assert_eq!(
        v4.host().ip(),
        Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)))
    );

    let v6 = service("telnet://[fe80::1]:13370");
    assert_eq!(
        v6.host().ip(),
        Some(IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1)))
    );
    assert_eq!(v6.host().as_str(), "fe80::1");
    assert_eq!(v6.to_string(), "telnet://[fe80::1]:13370");

    let empty = service("telnet://:12345");
    assert!(empty.host().is_empty());
    assert_eq!(empty.port(), 12345);
    assert_eq!(empty.to_string(), "telnet://:12345");

    let schemeless_v6 = service("[2001:db8::5]:2000");
    assert_eq!(schemeless_v6.scheme(), None);
    assert_eq!(schemeless_v6.to_string(), "[2001:db8::5]:2000");
}

#[test]
fn ipv6_literal_text_is_kept_verbatim_not_canonicalised() {
    let uri = service("telnet://[FE80:0::0001]:1");
    assert_eq!(uri.to_string(), "telnet://[FE80:0::0001]:1");
    assert_eq!(
        uri.host().ip(),
        Some(IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1)))
    );
}

#[test]
fn govc_inert_placeholder_localhost_port_zero_parses() {
    let uri = service("localhost:0");
    assert_eq!(uri.scheme(), None);
    assert_eq!(uri.host().as_str(), "localhost");
    assert_eq!(uri.port(), 0);
}

#[test]
fn port_bounds_and_leading_zeros() {
    assert_eq!(service("h:65535").port(), 65535);
    assert_eq!(service("h:0").port(), 0);
    assert_eq!(
        service("h:023").to_string(),
        "h:23",
        "leading zeros are dropped"
    );
    assert_eq!(
        service_err("h:65536").kind(),
        &UriErrorKind::InvalidPort {
            port: "65536".into()
        }
    );
    assert_eq!(
        service_err("h:-1").kind(),
        &UriErrorKind::InvalidPort { port: "-1".into() }
    );
    assert_eq!(
        service_err("h:99999999999999999999").kind(),
        &UriErrorKind::InvalidPort {
            port: "99999999999999999999".into()
        }
    );
}

#[test]
fn authentication_parameters_on_telnet_keep_values_verbatim_and_in_order() {
    let text = "telnets://vspc.example.com:13370#cipherList=ECDHE+AESGCM:!aNULL, HIGH&peerName=vspc.example.com&verify&thumbprint=AB:CD";
    let uri = service(text);
    let params: Vec<(AuthKey, Option<&str>)> =
        uri.auth().iter().map(|p| (p.key(), p.value())).collect();
    assert_eq!(
        params,
        [
            (AuthKey::CipherList, Some("ECDHE+AESGCM:!aNULL, HIGH")),
            (AuthKey::PeerName, Some("vspc.example.com")),
            (AuthKey::Verify, None),
            (AuthKey::Thumbprint, Some("AB:CD")),
        ]
    );
    assert!(uri.auth().enables_verification());
    assert_eq!(uri.to_string(), text);
}

#[test]
fn auth_values_are_not_percent_decoded_and_may_contain_equals_and_hash() {
    let text = "telnet://h:1#certificate=-----BEGIN CERTIFICATE-----\nMIIB%41==\n-----END CERTIFICATE-----#x";
    let uri = service(text);
    assert_eq!(
        uri.auth().get(AuthKey::Certificate),
        Some("-----BEGIN CERTIFICATE-----\nMIIB%41==\n-----END CERTIFICATE-----#x")
    );
    assert_eq!(uri.to_string(), text);
}

#[test]
fn a_bare_key_and_an_empty_value_are_distinct() {
    let bare = service("telnet://h:1#verify");
    let empty = service("telnet://h:1#verify=");
    assert_ne!(bare, empty);
    assert_eq!(bare.auth().get(AuthKey::Verify), None);
    assert!(bare.auth().contains(AuthKey::Verify));
    assert_eq!(empty.auth().get(AuthKey::Verify), Some(""));
    assert_eq!(empty.to_string(), "telnet://h:1#verify=");
}

#[test]
fn cipher_list_alone_does_not_turn_verification_on() {
    let uri = service("telnets://h:1#cipherList=HIGH");
    assert!(!uri.auth().enables_verification());
}

#[test]
fn auth_on_the_ssl_family_parses_and_validation_warns_about_it() {
    for s in [
        "ssl://h:1#verify",
        "tcp+ssl://h:1#verify",
        "tcp4+ssl://h:1#verify",
        "tcp6+ssl://h:1#verify",
    ] {
        assert_eq!(service(s).auth().len(), 1, "{s}");
    }
}

#[test]
fn auth_on_raw_tcp_or_without_a_scheme_is_rejected() {
    for (s, scheme) in [
        ("tcp://h:1#verify", Some(Scheme::Tcp)),
        ("tcp4://h:1#verify", Some(Scheme::Tcp4)),
        ("tcp6://h:1#verify", Some(Scheme::Tcp6)),
        ("h:1#verify", None),
    ] {
        let e = service_err(s);
        assert_eq!(e.kind(), &UriErrorKind::AuthNotAllowed { scheme }, "{s}");
    }
    assert_eq!(
        service_err("tcp://h:1#verify").to_string(),
        r#"serviceURI "tcp://h:1#verify": authentication parameters are not allowed with tcp"#
    );
    assert_eq!(
        service_err("h:1#verify").to_string(),
        r#"serviceURI "h:1#verify": authentication parameters are not allowed without a scheme"#
    );
}

#[test]
fn unknown_auth_keys_are_rejected_case_sensitively() {
    let e = service_err("telnet://h:1#peername=x");
    assert_eq!(
        e.kind(),
        &UriErrorKind::UnknownAuthKey {
            key: "peername".into()
        }
    );
    assert_eq!(
        e.to_string(),
        r#"serviceURI "telnet://h:1#peername=x": unknown authentication parameter "peername" (expected certificate, thumbprint, peerName, verify or cipherList)"#
    );
    let e = proxy_err("telnets://h:1#verify&password=x");
    assert_eq!(e.role(), UriRole::ProxyUri);
    assert_eq!(
        e.kind(),
        &UriErrorKind::UnknownAuthKey {
            key: "password".into()
        }
    );
}

#[test]
fn empty_auth_parameters_are_rejected_with_their_position() {
    assert_eq!(
        service_err("telnet://h:1#").kind(),
        &UriErrorKind::EmptyAuthParam { index: 0 }
    );
    assert_eq!(
        service_err("telnet://h:1#verify&").kind(),
        &UriErrorKind::EmptyAuthParam { index: 1 }
    );
    assert_eq!(
        service_err("telnet://h:1#=x").kind(),
        &UriErrorKind::EmptyAuthParam { index: 0 }
    );
    assert_eq!(
        service_err("telnet://h:1#verify&&verify").to_string(),
        r#"serviceURI "telnet://h:1#verify&&verify": authentication parameter 2 is empty"#
    );
}

#[test]
fn unknown_schemes_are_rejected_naming_the_scheme() {
    for (s, scheme) in [
        ("udp://h:1", "udp"),
        ("http://h:1", "http"),
        ("file://h:1", "file"),
        ("://h:1", ""),
        ("tcp+tls://h:1", "tcp+tls"),
    ] {
        assert_eq!(
            service_err(s).kind(),
            &UriErrorKind::UnknownScheme {
                scheme: scheme.into()
            },
            "{s}"
        );
    }
    assert_eq!(
        service_err("udp://10.0.0.5:2000").to_string(),
        r#"serviceURI "udp://10.0.0.5:2000": unknown scheme "udp" (expected tcp, tcp4, tcp6, ssl, tcp+ssl, tcp4+ssl, tcp6+ssl, telnet, telnets, or none)"#
    );
}

#[test]
fn a_missing_port_is_rejected_in_every_form() {
    for s in [
        "telnet://h",
        "telnet://h:",
        "h",
        "tcp://[::1]",
        "telnet://",
        "ssl://h:",
    ] {
        assert_eq!(service_err(s).kind(), &UriErrorKind::MissingPort, "{s}");
    }
    assert_eq!(
        service_err("telnet://vspc.example.com").to_string(),
        r#"serviceURI "telnet://vspc.example.com": port is missing"#
    );
}

#[test]
fn malformed_hosts_are_rejected_with_a_reason() {
    let cases = [
        ("telnet://[fe80::1:1", "[fe80::1:1", "unclosed bracket"),
        ("telnet://[nothex]:1", "[nothex]", "not an IPv6 address"),
        (
            "fe80::1:2000",
            "fe80::1:2000",
            "an IPv6 literal must be in brackets",
        ),
        (
            "telnet://ho st:1",
            "ho st",
            "character not allowed in a host name",
        ),
        ("telnet://h%4:1", "h%4", "incomplete percent-encoding"),
    ];
    for (s, host, reason) in cases {
        assert_eq!(
            service_err(s).kind(),
            &UriErrorKind::InvalidHost {
                host: host.into(),
                reason
            },
            "{s}"
        );
    }
}

#[test]
fn paths_queries_and_user_info_are_rejected_in_direct_service_uris() {
    assert_eq!(
        service_err("telnet://h:1/console").kind(),
        &UriErrorKind::UnexpectedText {
            text: "/console".into()
        }
    );
    assert_eq!(
        service_err("telnet://h:1?port=1").kind(),
        &UriErrorKind::UnexpectedText {
            text: "?port=1".into()
        }
    );
    assert_eq!(
        service_err("telnet://u@h:1").kind(),
        &UriErrorKind::UserInfo
    );
    assert_eq!(service_err("").kind(), &UriErrorKind::Empty);
    assert_eq!(service_err("").to_string(), r#"serviceURI "": is empty"#);
}

#[test]
fn proxy_uris_accept_telnet_and_telnets_with_auth() {
    let p = proxy("telnets://vspc.example.com:13370#thumbprint=AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01");
    assert_eq!(p.scheme(), ProxyScheme::Telnets);
    assert_eq!(p.host().as_str(), "vspc.example.com");
    assert_eq!(p.port(), 13370);
    assert_eq!(
        p.auth().get(AuthKey::Thumbprint),
        Some("AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01")
    );
    let p = proxy("telnet://[2001:db8::1]:13370");
    assert_eq!(p.scheme(), ProxyScheme::Telnet);
    assert_eq!(p.to_string(), "telnet://[2001:db8::1]:13370");
}

#[test]
fn proxy_uri_errors_name_the_proxy_and_the_fault() {
    let cases: [(&str, UriErrorKind, &str); 7] = [
        (
            "http://x:1",
            UriErrorKind::NotTelnet {
                scheme: "http".into(),
            },
            r#"proxyURI "http://x:1": scheme must be telnet or telnets"#,
        ),
        (
            "tcp://x:1",
            UriErrorKind::NotTelnet {
                scheme: "tcp".into(),
            },
            r#"proxyURI "tcp://x:1": scheme must be telnet or telnets"#,
        ),
        (
            "vspc.example.com:13370",
            UriErrorKind::NotTelnet {
                scheme: String::new(),
            },
            r#"proxyURI "vspc.example.com:13370": scheme must be telnet or telnets"#,
        ),
        (
            "telnet://admin@vspc:13370",
            UriErrorKind::UserInfo,
            r#"proxyURI "telnet://admin@vspc:13370": user info is not allowed"#,
        ),
        (
            "telnet://admin:secret@vspc:13370",
            UriErrorKind::UserInfo,
            r#"proxyURI "telnet://admin:***@vspc:13370": user info is not allowed"#,
        ),
        (
            "telnet://:13370",
            UriErrorKind::MissingHost,
            r#"proxyURI "telnet://:13370": host is missing"#,
        ),
        (
            "telnets://vspc.example.com",
            UriErrorKind::MissingPort,
            r#"proxyURI "telnets://vspc.example.com": port is missing"#,
        ),
    ];
    for (s, kind, message) in cases {
        let e = proxy_err(s);
        assert_eq!(e.role(), UriRole::ProxyUri, "{s}");
        assert_eq!(e.kind(), &kind, "{s}");
        assert_eq!(e.to_string(), message, "{s}");
    }
}

#[test]
fn the_password_of_user_info_never_appears_in_the_error() {
    let e = proxy_err("telnet://admin:hunter2@vspc:13370");
    assert!(!e.to_string().contains("hunter2"));
    assert!(!format!("{e:?}").contains("hunter2"));
    assert_eq!(e.uri(), "telnet://admin:***@vspc:13370");
}

#[test]
fn auth_params_parse_on_their_own_and_reject_ampersands_in_built_values() {
    let params: AuthParams = "thumbprint=AB&verify".parse().expect("valid");
    assert_eq!(params.to_string(), "thumbprint=AB&verify");
    assert_eq!(params.len(), 2);
    let e = "nope".parse::<AuthParams>().expect_err("unknown key");
    assert_eq!(e.role(), UriRole::AuthParams);
    assert_eq!(
        e.to_string(),
        r#"authentication parameters "nope": unknown authentication parameter "nope" (expected certificate, thumbprint, peerName, verify or cipherList)"#
    );
    let e = AuthParam::new(AuthKey::PeerName, Some("a&b")).expect_err("ampersand");
    assert_eq!(
        e.kind(),
        &UriErrorKind::AmpersandInValue {
            key: AuthKey::PeerName
        }
    );
    assert_eq!(
        e.to_string(),
        r#"authentication parameters "peerName=a&b": the value of peerName contains '&'"#
    );
}

#[test]
fn built_uris_display_as_they_would_be_written() {
    let auth = AuthParams::new()
        .with(AuthParam::new(AuthKey::PeerName, Some("vspc")).expect("no ampersand"))
        .with(AuthParam::verify());
    let uri = ServiceUri::new(Some(Scheme::Telnets), Host::from(Ipv4Addr::LOCALHOST), 23)
        .with_auth(auth.clone())
        .expect("telnets accepts auth");
    assert_eq!(
        uri.to_string(),
        "telnets://127.0.0.1:23#peerName=vspc&verify"
    );
    assert_eq!(uri.to_string().parse::<ServiceUri>(), Ok(uri));

    let e = ServiceUri::new(Some(Scheme::Tcp), Host::empty(), 1)
        .with_auth(auth.clone())
        .expect_err("tcp refuses auth");
    assert_eq!(
        e.kind(),
        &UriErrorKind::AuthNotAllowed {
            scheme: Some(Scheme::Tcp)
        }
    );

    let p = ProxyUri::new(ProxyScheme::Telnet, Host::from(Ipv6Addr::LOCALHOST), 13370)
        .expect("host present")
        .with_auth(auth);
    assert_eq!(p.to_string(), "telnet://[::1]:13370#peerName=vspc&verify");
    assert_eq!(
        ProxyUri::new(ProxyScheme::Telnet, Host::empty(), 1)
            .expect_err("empty host")
            .kind(),
        &UriErrorKind::MissingHost
    );
}

#[test]
fn host_parses_on_its_own() {
    assert_eq!(
        "[::1]".parse::<Host>().map(|h| h.to_string()),
        Ok("[::1]".to_owned())
    );
    assert!("".parse::<Host>().is_ok_and(|h| h.is_empty()));
    let e = "a b".parse::<Host>().expect_err("space");
    assert_eq!(
        e.to_string(),
        r#"host "a b": invalid host "a b": character not allowed in a host name"#
    );
}

#[test]
fn local_hosts_are_recognised() {
    for h in [
        "",
        "localhost",
        "LOCALHOST",
        "127.0.0.1",
        "127.1.2.3",
        "0.0.0.0",
        "[::1]",
        "[::]",
    ] {
        assert!(h.parse::<Host>().is_ok_and(|h| h.is_local()), "{h}");
    }
    for h in ["example.com", "10.0.0.5", "[fe80::1]"] {
        assert!(h.parse::<Host>().is_ok_and(|h| !h.is_local()), "{h}");
    }
}

#[test]
fn conversion_to_url_where_representable() {
    let uri = service("telnets://vspc.example.com:13370#thumbprint=AB:CD");
    let url = url::Url::try_from(&uri).expect("representable");
    assert_eq!(url.scheme(), "telnets");
    assert_eq!(url.host_str(), Some("vspc.example.com"));
    assert_eq!(url.port(), Some(13370));
    assert_eq!(url.fragment(), Some("thumbprint=AB:CD"));
    assert_eq!(ServiceUri::try_from(&url), Ok(uri));

    let p = proxy("telnet://[fe80::1]:13370");
    let url = url::Url::try_from(&p).expect("representable");
    assert_eq!(url.as_str(), "telnet://[fe80::1]:13370");
    assert_eq!(ProxyUri::try_from(&url), Ok(p));
}

#[test]
fn conversion_to_url_fails_with_a_typed_error_where_not_representable() {
    assert_eq!(
        url::Url::try_from(&service("vspc.example.com:2000")),
        Err(UrlConversionError::NoScheme {
            uri: "vspc.example.com:2000".into()
        })
    );
    assert_eq!(
        url::Url::try_from(&service("telnet://:12345")),
        Err(UrlConversionError::EmptyHost {
            uri: "telnet://:12345".into()
        })
    );
    assert_eq!(
        url::Url::try_from(&service("h:1")).map_err(|e| e.to_string()),
        Err(r#""h:1": a URI without a scheme has no url::Url equivalent"#.to_owned())
    );
}

#[test]
fn conversion_from_url_applies_the_grammar() {
    let url = url::Url::parse("telnet://h:1/path").expect("url accepts paths");
    assert_eq!(
        ServiceUri::try_from(&url).map_err(|e| e.kind().clone()),
        Err(UriErrorKind::UnexpectedText {
            text: "/path".into()
        })
    );
    let url = url::Url::parse("http://h:1").expect("url accepts http");
    assert_eq!(
        ProxyUri::try_from(&url).map_err(|e| e.kind().clone()),
        Err(UriErrorKind::NotTelnet {
            scheme: "http".into()
        })
    );
}

/// Where a text has several faults, the one reported is fixed by the grammar: a path or a
/// query first, then the split of host and port, the host, the port, user info, the missing
/// port, and the authentication parameters last.
#[test]
fn the_first_fault_in_grammar_order_is_the_one_reported() {
    let invalid_host = |host: &str, reason| UriErrorKind::InvalidHost {
        host: host.into(),
        reason,
    };
    let cases = [
        // A path wins over everything in the address, and runs to the `#`.
        (
            "telnet://u@[x:99999/p@q#verify",
            UriErrorKind::UnexpectedText {
                text: "/p@q".into(),
            },
        ),
        // Text after a closed bracket, before the host is read.
        (
            "telnet://[zz]x:1",
            UriErrorKind::UnexpectedText { text: "x:1".into() },
        ),
        // Two colons outside brackets: the whole host and port is named.
        (
            "telnet://h%zz:1:2",
            invalid_host("h%zz:1:2", "an IPv6 literal must be in brackets"),
        ),
        // The host before the port, and both before user info.
        (
            "telnet://u:pw@b%d:99999",
            invalid_host("b%d", "incomplete percent-encoding"),
        ),
        (
            "telnet://u@h:99999",
            UriErrorKind::InvalidPort {
                port: "99999".into(),
            },
        ),
        // User info before a missing port, which comes before the parameters.
        ("telnet://u@h#bogus", UriErrorKind::UserInfo),
        ("telnet://h#bogus", UriErrorKind::MissingPort),
        // The scheme is everything before the first `://` ahead of any `#`.
        (
            "a:b://h:1",
            UriErrorKind::UnknownScheme {
                scheme: "a:b".into(),
            },
        ),
        ("h:1#x://y", UriErrorKind::AuthNotAllowed { scheme: None }),
        // The first faulty parameter.
        (
            "telnet://h:1#verify&&bogus",
            UriErrorKind::EmptyAuthParam { index: 1 },
        ),
        (
            "telnet://h:1#Verify&",
            UriErrorKind::UnknownAuthKey {
                key: "Verify".into(),
            },
        ),
    ];
    for (s, kind) in cases {
        assert_eq!(service_err(s).kind(), &kind, "{s}");
    }
    // A host on its own: a final `]` makes it a malformed address, anything else after the
    // first `]` an unclosed bracket; a colon outside brackets outranks any other fault.
    for (s, reason) in [
        ("[::1]]", "not an IPv6 address"),
        ("[::1]x", "unclosed bracket"),
        ("[", "unclosed bracket"),
        ("[]", "not an IPv6 address"),
        ("%z:a", "an IPv6 literal must be in brackets"),
        ("01.2.3.4", ""),
    ] {
        let parsed = s.parse::<Host>();
        if reason.is_empty() {
            assert!(parsed.is_ok_and(|h| h.is_name()), "{s}");
        } else {
            assert_eq!(
                parsed.map_err(|e| e.kind().clone()),
                Err(invalid_host(s, reason)),
                "{s}"
            );
        }
    }
}
