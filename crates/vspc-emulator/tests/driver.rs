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
use vspc_emulator::driver::{run_fleet, Report, Target};
use vspc_emulator::{EmulatorConfig, OutputConfig, Pattern, ProxyUri, Rate, VmIdentity};
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
    let report = run_fleet(
        count,
        Target::new(uri, 2),
        Duration::from_millis(800),
        vm_config,
    )
    .await;
    let seen = tokio::time::timeout(Duration::from_secs(10), proxy)
        .await
        .unwrap()
        .unwrap();
    assert_exact(&report, &seen, count);
}

#[tokio::test]
async fn telnets_with_a_private_root_identifies_and_streams_exactly() {
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
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let proxy = tokio::spawn(proxy(
        listener,
        Some(TlsAcceptor::from(Arc::new(server))),
        2,
    ));
    let uri: ProxyUri = format!("telnets://localhost:{port}").parse().unwrap();
    let target = Target::new(uri, 2).with_roots(vec![cert_der]).unwrap();
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
    let presented = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(presented.key_pair.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![presented.cert.der().clone()], key)
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = TlsAcceptor::from(Arc::new(server));
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let _ = acceptor.accept(tcp).await;
    });
    let uri: ProxyUri = format!("telnets://localhost:{port}").parse().unwrap();
    let target = Target::new(uri, 1)
        .with_roots(vec![trusted.cert.der().clone()])
        .unwrap();
    let report = run_fleet(1, target, Duration::from_millis(300), vm_config).await;
    assert_eq!(report.connected, 0, "{report:?}");
    assert_eq!(report.identified, 0, "{report:?}");
    assert!(report.errors >= 1, "{report:?}");
}
