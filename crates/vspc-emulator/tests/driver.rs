//! The tokio driver over real loopback sockets, `telnet` and `telnets`, against a minimal
//! proxy built from `vspc_proto::ProxySession`: every VM connects and identifies, every serial
//! byte reaches the proxy exactly (checked against the VM's pattern), and client bytes sent by
//! the proxy reach the VM exactly (checked by the VM's own verifier).
#![cfg(feature = "tokio")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;
use vspc_emulator::driver::{
    run_fleet, spawn, ConnectError, EventKind, Report, Target, TlsRejection,
};
use vspc_emulator::vspc_backing::{ProxyUri, Thumbprint};
use vspc_emulator::{EmulatorConfig, EmulatorEvent, OutputConfig, Pattern, Rate, VmIdentity};
use vspc_proto::{ProxyConfig, ProxyEvent, ProxySession, SessionId};

/// Bytes the proxy sends each VM once it is identified.
const CLIENT_BYTES: usize = 3000;

/// What the test proxy saw on one connection.
#[derive(Debug, Default)]
struct Seen {
    name: Option<String>,
    uuid: Option<String>,
    serial: Vec<u8>,
}

fn vm_config(n: u64) -> EmulatorConfig {
    let mut config = EmulatorConfig::new(VmIdentity::numbered(n));
    config.output = Some(OutputConfig {
        pattern: Pattern::Counter,
        rate: Rate::new(512, Duration::from_millis(20)),
        limit: None,
    });
    config.client_pattern = Some(Pattern::Ramp);
    config
}

/// One VM connection as a proxy serves it: identify, collect serial output, and send
/// `CLIENT_BYTES` of the ramp pattern once identified.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, id: u64) -> Seen {
    let mut session = ProxySession::new(SessionId(id), ProxyConfig::default());
    let mut seen = Seen::default();
    let mut sent_client_bytes = false;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        while let Some(event) = session.poll_event() {
            match event {
                ProxyEvent::Identified(identity) => {
                    seen.name = identity.name.map(|name| name.as_str().to_owned());
                    seen.uuid = identity.vc_uuid.and_then(|uuid| uuid.canonical());
                    if !sent_client_bytes && seen.name.is_some() {
                        sent_client_bytes = true;
                        let ramp: Vec<u8> = (0..CLIENT_BYTES)
                            .map(|i| Pattern::Ramp.byte_at(i as u64))
                            .collect();
                        for chunk in ramp.chunks(700) {
                            session.send_data(chunk).unwrap();
                        }
                    }
                }
                ProxyEvent::Data(data) => seen.serial.extend_from_slice(&data),
                _ => {}
            }
        }
        while let Some(bytes) = session.poll_transmit() {
            if stream.write_all(&bytes).await.is_err() {
                return seen;
            }
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return seen,
            Ok(n) => session.handle_input(Instant::now(), &Bytes::copy_from_slice(&buf[..n])),
        }
    }
}

/// Accepts `count` connections, serving each (over TLS when `tls` is set); returns what each saw.
async fn proxy(listener: TcpListener, tls: Option<TlsAcceptor>, count: u64) -> Vec<Seen> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = tokio::task::JoinSet::new();
    for id in 0..count {
        let (tcp, _) = listener.accept().await.unwrap();
        let tls = tls.clone();
        let seen = seen.clone();
        tasks.spawn(async move {
            let result = match tls {
                Some(acceptor) => serve(acceptor.accept(tcp).await.unwrap(), id).await,
                None => serve(tcp, id).await,
            };
            seen.lock().unwrap().push(result);
        });
    }
    while tasks.join_next().await.is_some() {}
    Arc::try_unwrap(seen).unwrap().into_inner().unwrap()
}

fn assert_exact(report: &Report, seen: &[Seen], count: u64) {
    assert_eq!(report.vms, count);
    assert_eq!(report.connected, count, "{report:?}");
    assert_eq!(report.identified, count, "{report:?}");
    assert_eq!(report.errors, 0, "{report:?}");
    assert_eq!(
        report.client_received,
        count * CLIENT_BYTES as u64,
        "{report:?}"
    );
    assert_eq!(report.client_mismatches, 0, "{report:?}");
    let names: BTreeSet<_> = seen.iter().filter_map(|s| s.name.clone()).collect();
    let expected: BTreeSet<_> = (0..count).map(|n| VmIdentity::numbered(n).name).collect();
    assert_eq!(names, expected);
    let uuids: BTreeSet<_> = seen.iter().filter_map(|s| s.uuid.clone()).collect();
    assert_eq!(uuids.len() as u64, count, "distinct VC UUIDs");
    let mut serial_total = 0;
    for connection in seen {
        let expected: Vec<u8> = (0..connection.serial.len())
            .map(|i| Pattern::Counter.byte_at(i as u64))
            .collect();
        assert!(
            connection.serial == expected,
            "serial output of {:?} differs",
            connection.name
        );
        serial_total += connection.serial.len() as u64;
    }
    assert_eq!(serial_total, report.serial_sent);
    assert!(report.serial_sent >= count * 512, "{report:?}");
}

#[tokio::test]
async fn a_fleet_identifies_and_streams_exactly_over_telnet() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = 5;
    let proxy = tokio::spawn(proxy(listener, None, count));
    let uri: ProxyUri = format!("telnet://127.0.0.1:{port}").parse().unwrap();
    let target = Target::builder(uri).max_connecting(2).build().unwrap();
    let report = run_fleet(count, target, Duration::from_millis(800), vm_config).await;
    let seen = tokio::time::timeout(Duration::from_secs(10), proxy)
        .await
        .unwrap()
        .unwrap();
    assert_exact(&report, &seen, count);
}

/// A TLS acceptor presenting a fresh self-signed certificate for `localhost`, and that
/// certificate.
fn tls_server() -> (TlsAcceptor, CertificateDer<'static>) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_der: CertificateDer<'static> = certified.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert_der.clone()], key)
        .unwrap();
    (TlsAcceptor::from(Arc::new(server)), cert_der)
}

#[tokio::test]
async fn telnets_with_a_private_root_identifies_and_streams_exactly() {
    let (acceptor, cert_der) = tls_server();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let proxy = tokio::spawn(proxy(listener, Some(acceptor), 2));
    let uri: ProxyUri = format!("telnets://localhost:{port}").parse().unwrap();
    let target = Target::builder(uri)
        .roots(vec![cert_der])
        .max_connecting(2)
        .build()
        .unwrap();
    let report = run_fleet(2, target, Duration::from_millis(800), vm_config).await;
    let seen = tokio::time::timeout(Duration::from_secs(10), proxy)
        .await
        .unwrap()
        .unwrap();
    assert_exact(&report, &seen, 2);
}

#[tokio::test]
async fn telnets_refuses_a_proxy_it_does_not_trust() {
    let trusted = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (acceptor, _) = tls_server();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let _ = acceptor.accept(tcp).await;
    });
    let uri: ProxyUri = format!("telnets://localhost:{port}").parse().unwrap();
    let target = Target::builder(uri)
        .roots(vec![trusted.cert.der().clone()])
        .build()
        .unwrap();
    let report = run_fleet(1, target, Duration::from_millis(300), vm_config).await;
    assert_eq!(report.connected, 0, "{report:?}");
    assert_eq!(report.identified, 0, "{report:?}");
    assert!(report.errors >= 1, "{report:?}");
}

/// The first connect outcome among `events`: the connection's TLS flag, or why it failed.
async fn first_connect(
    events: &mut tokio::sync::mpsc::Receiver<vspc_emulator::driver::Event>,
) -> Result<bool, ConnectError> {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .expect("an event in time")
            .expect("the VM runs");
        match event.kind {
            EventKind::Connected { tls, .. } => return Ok(tls),
            EventKind::ConnectFailed { error, .. } => return Err(error),
            _ => {}
        }
    }
}

#[tokio::test]
async fn telnets_verifies_the_proxy_by_the_uri_thumbprint_as_esxi_does() {
    let (acceptor, cert_der) = tls_server();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let proxy = tokio::spawn(proxy(listener, Some(acceptor), 2));
    let thumbprint = Thumbprint::sha1_of_der(&cert_der);

    // No roots at all: the thumbprint alone vouches for the proxy.
    let uri: ProxyUri = format!("telnets://127.0.0.1:{port}#thumbprint={thumbprint}")
        .parse()
        .unwrap();
    let (vm, mut events) = spawn(vm_config(1), Target::new(uri).unwrap());
    assert!(first_connect(&mut events).await.unwrap(), "over TLS");

    // A thumbprint of another certificate: refused, and the reason says which.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let wrong = Thumbprint::sha1_of_der(other.cert.der());
    let uri: ProxyUri = format!("telnets://127.0.0.1:{port}#thumbprint={wrong}")
        .parse()
        .unwrap();
    let (refused, mut refused_events) = spawn(vm_config(2), Target::new(uri).unwrap());
    let error = first_connect(&mut refused_events).await.unwrap_err();
    assert!(
        matches!(&error, ConnectError::Rejected(TlsRejection::ThumbprintMismatch { expected, got })
            if *expected == wrong && *got == thumbprint),
        "{error}"
    );
    assert_eq!(
        error.to_string(),
        format!(
            "TLS: the proxy's certificate was refused: thumbprint mismatch: expected {wrong}, got {thumbprint}"
        )
    );
    let report = refused.stop().await;
    assert_eq!((report.connected, report.errors), (0, 1), "{report:?}");

    // The accepted VM identifies, and its handle commands it.
    loop {
        let event = events.recv().await.unwrap();
        if matches!(
            event.kind,
            EventKind::Emulator(EmulatorEvent::ProxyAnswered { accepted: true, .. })
        ) {
            break;
        }
    }
    let report = vm.stop().await;
    assert_eq!((report.connected, report.identified), (1, 1), "{report:?}");
    proxy.abort();
}
