//! Validation (docs/uri-backing.md): every error, every warning, and the cases that must not be
//! rejected.

use vspc_backing::{
    Direction, ProxyUri, Scheme, ServiceTarget, UriBackingInfo, UriErrorKind, UriRole,
    ValidationError, ValidationPolicy, Warning,
};

const THUMB: &str = "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01";

fn backing(service: &str, direction: &str, proxy: Option<&str>) -> UriBackingInfo {
    UriBackingInfo::from_parts(service, direction, proxy.map(str::to_owned))
}

fn error(b: &UriBackingInfo) -> ValidationError {
    match b.validate() {
        Ok(v) => panic!("{b:?} should be rejected, got {v:?}"),
        Err(e) => e,
    }
}

fn warnings(b: &UriBackingInfo) -> Vec<Warning> {
    match b.validate() {
        Ok(v) => v.warnings().to_vec(),
        Err(e) => panic!("{b:?} should be accepted: {e}"),
    }
}

fn uri_error(e: &ValidationError) -> (UriRole, UriErrorKind) {
    let u = e
        .uri_error()
        .unwrap_or_else(|| panic!("{e:?} should be a URI error"));
    (u.role(), u.kind().clone())
}

// ---- errors ----

#[test]
fn missing_service_uri_is_an_error() {
    let e = error(&backing("", "server", None));
    assert_eq!(e, ValidationError::MissingServiceUri);
    assert_eq!(e.to_string(), "serviceURI is missing");
    // Also behind a proxy: the opaque URI must still be there.
    assert_eq!(
        error(&backing("", "client", Some("telnet://p:1"))),
        ValidationError::MissingServiceUri
    );
}

#[test]
fn missing_direction_is_an_error() {
    let e = error(&backing("telnet://:2000", "", None));
    assert_eq!(e, ValidationError::MissingDirection);
    assert_eq!(e.to_string(), "direction is missing");
}

#[test]
fn direction_other_than_server_or_client_is_an_error() {
    for d in ["Server", "CLIENT", "listen", " server"] {
        let e = error(&backing("telnet://:2000", d, None));
        assert_eq!(
            e,
            ValidationError::InvalidDirection {
                direction: d.into()
            },
            "{d}"
        );
    }
    assert_eq!(
        error(&backing("vSPC.py", "both", Some("telnet://p:1"))).to_string(),
        r#"direction "both": must be "server" or "client""#
    );
}

#[test]
fn proxy_that_is_not_telnet_or_telnets_is_an_error() {
    let e = error(&backing("vSPC.py", "server", Some("http://x:1")));
    assert_eq!(
        uri_error(&e),
        (
            UriRole::ProxyUri,
            UriErrorKind::NotTelnet {
                scheme: "http".into()
            }
        )
    );
    assert_eq!(
        e.to_string(),
        r#"proxyURI "http://x:1": scheme must be telnet or telnets"#
    );
    let e = error(&backing("vSPC.py", "server", Some("ssl://x:1")));
    assert_eq!(
        uri_error(&e).1,
        UriErrorKind::NotTelnet {
            scheme: "ssl".into()
        }
    );
}

#[test]
fn proxy_with_user_info_is_an_error() {
    let e = error(&backing(
        "vSPC.py",
        "server",
        Some("telnets://user:pw@vspc:13370"),
    ));
    assert_eq!(uri_error(&e), (UriRole::ProxyUri, UriErrorKind::UserInfo));
    assert_eq!(
        e.to_string(),
        r#"proxyURI "telnets://user:***@vspc:13370": user info is not allowed"#
    );
}

#[test]
fn proxy_without_host_is_an_error() {
    let e = error(&backing("vSPC.py", "server", Some("telnet://:13370")));
    assert_eq!(
        uri_error(&e),
        (UriRole::ProxyUri, UriErrorKind::MissingHost)
    );
    assert_eq!(
        e.to_string(),
        r#"proxyURI "telnet://:13370": host is missing"#
    );
}

#[test]
fn proxy_without_port_is_an_error() {
    let e = error(&backing(
        "vSPC.py",
        "server",
        Some("telnet://vspc.example.com"),
    ));
    assert_eq!(
        uri_error(&e),
        (UriRole::ProxyUri, UriErrorKind::MissingPort)
    );
    assert_eq!(
        e.to_string(),
        r#"proxyURI "telnet://vspc.example.com": port is missing"#
    );
}

#[test]
fn direct_service_uri_with_unknown_scheme_is_an_error() {
    let e = error(&backing("udp://10.0.0.5:2000", "client", None));
    assert_eq!(
        uri_error(&e),
        (
            UriRole::ServiceUri,
            UriErrorKind::UnknownScheme {
                scheme: "udp".into()
            }
        )
    );
    assert!(e
        .to_string()
        .starts_with(r#"serviceURI "udp://10.0.0.5:2000": unknown scheme "udp""#));
}

#[test]
fn direct_service_uri_without_port_is_an_error() {
    let e = error(&backing("telnet://10.0.0.5", "client", None));
    assert_eq!(
        uri_error(&e),
        (UriRole::ServiceUri, UriErrorKind::MissingPort)
    );
    assert_eq!(
        e.to_string(),
        r#"serviceURI "telnet://10.0.0.5": port is missing"#
    );
}

#[test]
fn auth_parameters_on_raw_tcp_are_an_error() {
    for (s, scheme) in [
        ("tcp://h:1#verify", Scheme::Tcp),
        ("tcp4://h:1#verify", Scheme::Tcp4),
        ("tcp6://h:1#verify", Scheme::Tcp6),
    ] {
        let e = error(&backing(s, "client", None));
        assert_eq!(
            uri_error(&e),
            (
                UriRole::ServiceUri,
                UriErrorKind::AuthNotAllowed {
                    scheme: Some(scheme)
                }
            ),
            "{s}"
        );
    }
}

#[test]
fn auth_parameters_on_a_scheme_less_uri_are_an_error() {
    let e = error(&backing("h:1#thumbprint=AB", "client", None));
    assert_eq!(
        uri_error(&e),
        (
            UriRole::ServiceUri,
            UriErrorKind::AuthNotAllowed { scheme: None }
        )
    );
    assert_eq!(
        e.to_string(),
        r#"serviceURI "h:1#thumbprint=AB": authentication parameters are not allowed without a scheme"#
    );
}

#[test]
fn unknown_auth_key_is_an_error_on_service_and_proxy_uris() {
    let e = error(&backing("telnet://h:1#user=root", "client", None));
    assert_eq!(
        uri_error(&e),
        (
            UriRole::ServiceUri,
            UriErrorKind::UnknownAuthKey { key: "user".into() }
        )
    );
    let e = error(&backing(
        "vSPC.py",
        "client",
        Some("telnets://p:1#Thumbprint=AB"),
    ));
    assert_eq!(
        uri_error(&e),
        (
            UriRole::ProxyUri,
            UriErrorKind::UnknownAuthKey {
                key: "Thumbprint".into()
            }
        )
    );
}

#[test]
fn malformed_thumbprint_is_an_error_only_when_strict() {
    let strict = ValidationPolicy::strict();
    for bad in [
        "AB:CD",
        "ABCDEF0123456789ABCDEF0123456789ABCDEF01",
        "ZZ:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01",
        "",
    ] {
        let b = backing(
            "vSPC.py",
            "server",
            Some(&format!("telnets://p:1#thumbprint={bad}")),
        );
        assert!(b.validate().is_ok(), "lenient accepts {bad:?}");
        let e = b.validate_with(&strict).expect_err("strict rejects");
        assert_eq!(
            uri_error(&e),
            (
                UriRole::ProxyUri,
                UriErrorKind::MalformedThumbprint { value: bad.into() }
            ),
            "{bad}"
        );
    }
    let b = backing("telnets://h:1#thumbprint=AB:CD", "client", None);
    assert_eq!(
        b.validate_with(&strict).map_err(|e| e.to_string()),
        Err(r#"serviceURI "telnets://h:1#thumbprint=AB:CD": malformed thumbprint "AB:CD" (expected 20 or 32 colon-separated hex pairs, such as AB:CD:...)"#.to_owned())
    );
    // A bare `thumbprint` key has no value: malformed too.
    let b = backing("telnets://h:1#thumbprint", "client", None);
    assert_eq!(
        uri_error(&b.validate_with(&strict).expect_err("no value")).1,
        UriErrorKind::MalformedThumbprint {
            value: String::new()
        }
    );
}

#[test]
fn well_formed_thumbprints_pass_strict_validation() {
    let strict = ValidationPolicy::strict();
    let sha256 = ["0A"; 32].join(":");
    for good in [THUMB.to_owned(), THUMB.to_lowercase(), sha256] {
        let b = backing(
            "vSPC.py",
            "server",
            Some(&format!("telnets://p:1#thumbprint={good}")),
        );
        assert!(b.validate_with(&strict).is_ok(), "{good}");
    }
}

// ---- warnings ----

#[test]
fn server_direction_with_a_non_local_host_warns() {
    let w = warnings(&backing("telnet://esx01.example.com:2000", "server", None));
    assert_eq!(
        w,
        [Warning::ServerHostNotLocal {
            uri: "telnet://esx01.example.com:2000".into(),
            host: "esx01.example.com".into()
        }]
    );
    assert_eq!(
        w[0].to_string(),
        r#"serviceURI "telnet://esx01.example.com:2000": direction server with host "esx01.example.com", which is not local (ESXi can only listen on its own addresses)"#
    );
    assert_eq!(
        warnings(&backing("tcp://[fe80::1]:2000", "server", None)),
        [Warning::ServerHostNotLocal {
            uri: "tcp://[fe80::1]:2000".into(),
            host: "[fe80::1]".into()
        }]
    );
}

#[test]
fn server_direction_with_local_hosts_does_not_warn() {
    for s in [
        "telnet://:2000",
        "telnet://localhost:2000",
        "telnet://127.0.0.1:2000",
        "telnet://0.0.0.0:2000",
        "tcp6://[::]:2000",
        "tcp6://[::1]:2000",
    ] {
        assert_eq!(warnings(&backing(s, "server", None)), [], "{s}");
    }
}

#[test]
fn client_direction_with_a_remote_host_does_not_warn() {
    assert_eq!(
        warnings(&backing("telnet://esx01.example.com:2000", "client", None)),
        []
    );
    assert_eq!(
        warnings(&backing("telnet://esx01.example.com:80", "client", None)),
        []
    );
}

#[test]
fn server_port_below_1024_other_than_23_warns() {
    let w = warnings(&backing("telnet://:80", "server", None));
    assert_eq!(
        w,
        [Warning::ServerPortBlocked {
            uri: "telnet://:80".into(),
            port: 80
        }]
    );
    assert_eq!(
        w[0].to_string(),
        r#"serviceURI "telnet://:80": server port 80 is below 1024 and not 23 (the ESXi firewall ruleset remoteSerialPort blocks it)"#
    );
    assert_eq!(
        warnings(&backing("telnet://:1023", "server", None)).len(),
        1
    );
    assert_eq!(warnings(&backing("telnet://:23", "server", None)), []);
    assert_eq!(warnings(&backing("telnet://:1024", "server", None)), []);
}

#[test]
fn tcp4_with_ipv6_and_tcp6_with_ipv4_warn() {
    let w = warnings(&backing("tcp4://[::1]:2000", "client", None));
    assert_eq!(
        w,
        [Warning::AddressFamilyMismatch {
            uri: "tcp4://[::1]:2000".into(),
            scheme: Scheme::Tcp4
        }]
    );
    assert_eq!(
        w[0].to_string(),
        r#"serviceURI "tcp4://[::1]:2000": tcp4 with an IPv6 literal"#
    );
    let w = warnings(&backing("tcp6://10.0.0.5:2000", "client", None));
    assert_eq!(
        w,
        [Warning::AddressFamilyMismatch {
            uri: "tcp6://10.0.0.5:2000".into(),
            scheme: Scheme::Tcp6
        }]
    );
    assert_eq!(
        w[0].to_string(),
        r#"serviceURI "tcp6://10.0.0.5:2000": tcp6 with an IPv4 address"#
    );
    // The TLS variants carry the same restriction.
    assert_eq!(
        warnings(&backing("tcp6+ssl://10.0.0.5:2000", "client", None)).len(),
        1
    );
    // Names and matching literals do not warn.
    assert_eq!(
        warnings(&backing("tcp4://10.0.0.5:2000", "client", None)),
        []
    );
    assert_eq!(
        warnings(&backing("tcp6://ip6.example.com:2000", "client", None)),
        []
    );
}

#[test]
fn auth_parameters_on_the_ssl_family_warn() {
    for (s, scheme) in [
        ("ssl://h:2000#verify", Scheme::Ssl),
        ("tcp+ssl://h:2000#peerName=h", Scheme::TcpSsl),
        ("tcp4+ssl://h:2000#verify", Scheme::Tcp4Ssl),
        ("tcp6+ssl://h:2000#verify", Scheme::Tcp6Ssl),
    ] {
        assert_eq!(
            warnings(&backing(s, "client", None)),
            [Warning::AuthOnSsl {
                uri: s.into(),
                scheme
            }],
            "{s}"
        );
    }
    assert_eq!(
        Warning::AuthOnSsl {
            uri: "ssl://h:1#verify".into(),
            scheme: Scheme::Ssl
        }
        .to_string(),
        r#"serviceURI "ssl://h:1#verify": authentication parameters with ssl are undocumented (documented for telnet and telnets only)"#
    );
}

#[test]
fn several_warnings_come_in_spec_order() {
    let w = warnings(&backing(
        "tcp4+ssl://[2001:db8::1]:443#verify",
        "server",
        None,
    ));
    let kinds: Vec<&str> = w
        .iter()
        .map(|w| match w {
            Warning::ServerHostNotLocal { .. } => "host",
            Warning::ServerPortBlocked { .. } => "port",
            Warning::AddressFamilyMismatch { .. } => "family",
            Warning::AuthOnSsl { .. } => "ssl-auth",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["host", "port", "family", "ssl-auth"]);
}

// ---- not errors ----

#[test]
fn a_proxy_with_direction_client_is_valid() {
    let v = backing("vSPC.py", "client", Some("telnet://vspc.example.com:13370"))
        .validate()
        .expect("valid");
    assert_eq!(v.direction(), Direction::Client);
    assert_eq!(v.warnings(), []);
}

#[test]
fn opaque_service_uris_behind_a_proxy_are_never_rejected() {
    for s in [
        "vSPC.py",
        "vmware-vspc",
        "vSPC.py?port=console",
        "tcp://vSPC.py:13370",
        "tcp://10.0.0.5:2377",
        "udp://whatever",
        "h:1#anything=goes",
        "no port at all",
        "telnet://:80",
    ] {
        let b = backing(s, "server", Some("telnets://vspc.example.com:13370"));
        let v = b
            .validate()
            .unwrap_or_else(|e| panic!("{s:?} rejected: {e}"));
        assert_eq!(v.warnings(), [], "{s}: nothing to warn about either");
        match v.target() {
            ServiceTarget::Proxied { proxy, service_uri } => {
                assert_eq!(service_uri, s);
                assert_eq!(proxy.to_string(), "telnets://vspc.example.com:13370");
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn a_scheme_less_service_uri_behind_a_proxy_is_valid() {
    assert!(
        backing("vspc.example.com:13370", "server", Some("telnet://p:1"))
            .validate()
            .is_ok()
    );
}

#[test]
fn an_empty_server_host_is_valid() {
    let v = backing("telnet://:12345", "server", None)
        .validate()
        .expect("valid");
    match v.target() {
        ServiceTarget::Direct(uri) => assert!(uri.host().is_empty()),
        other => panic!("{other:?}"),
    }
    assert_eq!(v.warnings(), []);
}

#[test]
fn the_govc_placeholder_is_valid() {
    assert_eq!(warnings(&backing("localhost:0", "client", None)), []);
}

#[test]
fn a_validated_proxied_backing_exposes_its_typed_proxy() {
    let proxy: ProxyUri = format!("telnets://vspc.example.com:13370#thumbprint={THUMB}")
        .parse()
        .expect("valid");
    let b = UriBackingInfo::proxied(&proxy, Direction::Server, "vSPC.py");
    assert_eq!(
        b.proxy_uri.as_deref(),
        Some(format!("telnets://vspc.example.com:13370#thumbprint={THUMB}").as_str())
    );
    let v = b.validate_with(&ValidationPolicy::strict()).expect("valid");
    assert_eq!(v.proxy(), Some(&proxy));
    assert_eq!(v.direction(), Direction::Server);
}

#[test]
fn direction_parses_only_the_exact_literals() {
    assert_eq!("server".parse::<Direction>(), Ok(Direction::Server));
    assert_eq!("client".parse::<Direction>(), Ok(Direction::Client));
    assert_eq!(
        "".parse::<Direction>(),
        Err(ValidationError::MissingDirection)
    );
    assert_eq!(Direction::Server.do_proxy_code(), b'S');
    assert_eq!(Direction::Client.do_proxy_code(), b'C');
}
