//! The web console at the protocol level, without a browser: a WebSocket terminal is
//! byte-exact both ways (all 256 values), replays the scrollback, keeps going through a
//! vMotion and a reconnect; the token is required; malformed frames, huge frames, text
//! frames and a page that never reads are bounded and closed with the right code.
#![allow(clippy::disallowed_methods)]

mod support;

use std::time::Duration;

use bytes::Bytes;
use support::typing::{type_and_print, Typed};
use support::web::{self, client_frame, RawWs, BEARER, TOKEN};
use support::*;
use vspc_emulator::{VmotionOutcome, VmotionPlan};

fn banner(name: &str, mode: &str) -> Vec<u8> {
    format!("\r\n[vspc: attached to {name} ({mode})]\r\n").into_bytes()
}

/// A console with one emulated VM, identified: the server, the VM and its name.
async fn console_with_vm(
    n: u64,
    tweak: impl FnOnce(&mut vspc_server::ServerConfig),
) -> (vspc_server::Server, TestVm, String) {
    let proxy = web::start(tweak).await;
    let vm = TestVm::start(vm_config(n), Target::plain(proxy.vm_addrs[0]));
    let name = vm_config(n).identity.name;
    identified(&proxy, &name).await;
    (proxy, vm, name)
}

fn all_bytes() -> Vec<u8> {
    (0..=255u8).collect()
}

#[tokio::test]
async fn terminal_is_byte_exact_both_ways_and_replays_the_scrollback() {
    let audit = temp_dir("web-audit").join("audit.log");
    let audit_path = audit.clone();
    let (proxy, vm, name) = console_with_vm(1, move |c| c.log.audit = Some(audit_path)).await;
    let addr = proxy.web_addr.unwrap();
    vm.with(|vm, _| vm.send_serial(b"before the page\r\n"))
        .unwrap();
    wait_snapshot(
        "scrollback",
        || proxy.snapshot(),
        |s| vms(s)[0]["bytes_from_vm"] == 17,
    )
    .await;

    let mut term = web::open(addr, "1", "rw").await;
    term.expect_exact(&banner(&name, "rw")).await;
    term.expect_exact(b"before the page\r\n").await;

    // VM to page: every byte value, IAC (0xFF) and CR/LF/NUL included, unchanged.
    let mut printed = all_bytes();
    printed.extend(all_bytes().iter().rev());
    vm.with(|vm, _| vm.send_serial(&printed)).unwrap();
    term.expect_exact(&printed).await;

    // Page to VM: every byte value, in one message and split across many.
    let mut typed = all_bytes();
    term.send(&typed).await;
    for chunk in all_bytes().chunks(7) {
        term.send(chunk).await;
        typed.extend_from_slice(chunk);
    }
    vm.wait_received(&typed).await;

    // The listing shows the web client with its mode.
    let listed = proxy.snapshot();
    let clients = &vms(&listed)[0]["clients"];
    assert_eq!(clients.as_array().unwrap().len(), 1, "{listed:#}");
    assert_eq!(clients[0]["mode"], "read-write");
    // The page's principal is the client's user, in the listing and in the audit trail
    // that SSH sessions share.
    assert_eq!(clients[0]["user"], "web:token");
    let trail = std::fs::read_to_string(&audit).unwrap();
    assert!(
        trail.lines().any(|l| l.contains(" attach ")
            && l.contains("user=web:token")
            && l.contains("mode=rw")),
        "{trail}"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn modes_are_enforced_and_a_refusal_says_why() {
    let (proxy, vm, name) = console_with_vm(2, |_| {}).await;
    let addr = proxy.web_addr.unwrap();

    let mut exclusive = web::open(addr, &name, "excl").await;
    exclusive.expect_exact(&banner(&name, "excl")).await;
    let mut writer = web::open(addr, &name, "rw").await;
    let frame = writer.closed().await.expect("a close frame");
    assert_eq!(u16::from(frame.code), 4409, "{frame:?}");
    assert!(frame.reason.contains("exclusively"), "{frame:?}");

    // A read-only page watches; its input never reaches the VM.
    let mut watcher = web::open(addr, "1", "ro").await;
    watcher.expect_exact(&banner(&name, "ro")).await;
    watcher.send(b"ignored").await;
    exclusive.send(b"mine").await;
    vm.wait_received(b"mine").await;
    vm.with(|vm, _| vm.send_serial(b"both see this")).unwrap();
    watcher.expect_exact(b"both see this").await;
    exclusive.expect_exact(b"both see this").await;
    assert_eq!(vm.received(), b"mine");

    let unknown = web::try_open(addr, "vm=nope&mode=rw", &[BEARER]).await;
    assert_eq!(web::refused_status(unknown), 404);
    let bad_mode = web::try_open(addr, "vm=1&mode=root", &[BEARER]).await;
    assert_eq!(web::refused_status(bad_mode), 400);
    proxy.shutdown().await;
}

#[tokio::test]
async fn requests_without_the_token_are_refused() {
    let (proxy, _vm, name) = console_with_vm(3, |_| {}).await;
    let addr = proxy.web_addr.unwrap();

    for path in [
        "/",
        "/api/vms",
        "/api/events",
        "/app.js",
        "/vendor/xterm.mjs",
    ] {
        let (head, _) = web::get(addr, path, &[]).await;
        assert!(head.starts_with("HTTP/1.1 401"), "{path}: {head}");
        assert!(head.contains("www-authenticate: Bearer"), "{head}");
        let (head, _) = web::get(
            addr,
            path,
            &[("Authorization", "Bearer wrong-token-0123456789")],
        )
        .await;
        assert!(head.starts_with("HTTP/1.1 401"), "{path}: {head}");
    }
    let (head, _) = web::get(addr, "/?token=wrong", &[]).await;
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");

    // The token in the address becomes a cookie, and leaves the address.
    let (head, _) = web::get(addr, &format!("/?token={TOKEN}"), &[]).await;
    assert!(head.starts_with("HTTP/1.1 303"), "{head}");
    assert!(head.contains("location: /\r\n"), "{head}");
    let cookie = format!("vspc_token={TOKEN}");
    assert!(
        head.contains(&format!(
            "set-cookie: {cookie}; Path=/; HttpOnly; SameSite=Strict"
        )),
        "{head}"
    );
    let (head, body) = web::get(addr, "/api/vms", &[("Cookie", &cookie)]).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let listing: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(vms(&listing)[0]["name"], name);
    let (head, body) = web::get(addr, "/", &[BEARER]).await;
    assert!(
        head.contains("content-security-policy: default-src 'self'"),
        "{head}"
    );
    assert!(
        body.contains("<script type=\"module\" src=\"/app.js\">"),
        "{body}"
    );

    let refused = web::try_open(addr, "vm=1&mode=rw", &[]).await;
    assert_eq!(web::refused_status(refused), 401);
    // Another site's page cannot drive a terminal with the operator's cookie.
    let cross = web::try_open(
        addr,
        "vm=1&mode=rw",
        &[("cookie", &cookie), ("origin", "http://evil.example")],
    )
    .await;
    assert_eq!(web::refused_status(cross), 403);
    let mut term = web::open(addr, "1", "ro").await;
    term.expect(b"]\r\n").await;
    assert!(
        vms(&proxy.snapshot())[0]["clients"]
            .as_array()
            .unwrap()
            .len()
            == 1
    );
    proxy.shutdown().await;
}

/// Sends `frame` on a fresh raw WebSocket; the console must close with `code` and the VM
/// must receive nothing.
async fn bad_frame(proxy: &vspc_server::Server, vm: &TestVm, frame: &[u8], code: u16) {
    let mut raw = RawWs::open(proxy.web_addr.unwrap(), "vm=1&mode=rw").await;
    let (opcode, banner) = raw.frame().await.unwrap();
    assert_eq!(
        (opcode, banner.starts_with(b"\r\n[vspc: attached")),
        (2, true)
    );
    tokio::io::AsyncWriteExt::write_all(&mut raw.stream, frame)
        .await
        .unwrap();
    let closed = raw.close_frame().await;
    assert_eq!(
        closed.as_ref().map(|c| c.0),
        Some(code),
        "{frame:02x?}: {closed:?}"
    );
    web::wait_clients(proxy, 0, "the client gone").await;
    assert_eq!(vm.received(), b"", "nothing of a bad frame reaches the VM");
}

#[tokio::test]
async fn malformed_huge_and_text_frames_close_the_terminal() {
    let (proxy, vm, _) = console_with_vm(4, |c| c.web.max_message = 4096).await;

    // Unmasked client frame.
    bad_frame(&proxy, &vm, &[0x82, 0x03, b'a', b'b', b'c'], 1002).await;
    // Reserved bits set.
    bad_frame(&proxy, &vm, &client_frame(0xf2, b"abc"), 1002).await;
    // Reserved opcode.
    bad_frame(&proxy, &vm, &client_frame(0x83, b"abc"), 1002).await;
    // A fragmented control frame.
    bad_frame(&proxy, &vm, &client_frame(0x09, b"ping"), 1002).await;
    // A continuation with nothing to continue.
    bad_frame(&proxy, &vm, &client_frame(0x80, b"abc"), 1002).await;
    // A frame announcing 1 TiB: refused from its header, nothing allocated.
    let mut huge = vec![0x82, 0x80 | 127];
    huge.extend_from_slice(&(1u64 << 40).to_be_bytes());
    huge.extend_from_slice(&[1, 2, 3, 4]);
    bad_frame(&proxy, &vm, &huge, 1009).await;
    // Over web.max_message in one frame, and in fragments.
    bad_frame(&proxy, &vm, &client_frame(0x82, &[0u8; 4097]), 1009).await;
    let mut fragments = client_frame(0x02, &[0u8; 3000]);
    fragments.extend(client_frame(0x80, &[0u8; 3000]));
    bad_frame(&proxy, &vm, &fragments, 1009).await;
    // Text: the terminal carries bytes, in binary messages only.
    bad_frame(&proxy, &vm, &client_frame(0x81, b"hi"), 1003).await;

    // The console serves on: a good page still works.
    let mut term = web::open(proxy.web_addr.unwrap(), "1", "rw").await;
    term.expect(b"]\r\n").await;
    term.send(b"ok").await;
    vm.wait_received(b"ok").await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_page_that_never_reads_is_dropped_and_the_vm_goes_on() {
    let (proxy, vm, name) = console_with_vm(5, |c| {
        // Above the largest VM read (64 KiB), which alone may take a client to twice it.
        c.client.output_budget = 64 * 1024;
        c.client.slow_grace_ms = 200;
    })
    .await;
    let addr = proxy.web_addr.unwrap();
    // A page that opens the terminal and never reads again, and one that keeps up.
    let mut stuck = RawWs::open_with(addr, "vm=1&mode=rw", Some(4096)).await;
    assert_eq!(stuck.frame().await.map(|f| f.0), Some(2));
    let mut reader = web::open(addr, "1", "ro").await;
    reader.expect_exact(&banner(&name, "ro")).await;

    // Far more than the socket buffers and the budget hold.
    let chunk = vec![b'x'; 64 * 1024];
    let total = 128 * chunk.len();
    let flood = async {
        for _ in 0..128 {
            vm.with(|vm, _| vm.send_serial(&chunk)).unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let (_, ()) = tokio::join!(flood, async {
        let mut seen = 0;
        let deadline = std::time::Instant::now() + WAIT;
        while seen < total {
            assert!(
                std::time::Instant::now() < deadline,
                "the reader got {seen} of {total} ({:?}): {:#}",
                String::from_utf8_lossy(&reader.got),
                proxy.snapshot()
            );
            reader.drain(Duration::from_millis(50)).await;
            seen += reader.got.iter().filter(|b| **b == b'x').count();
            reader.got.retain(|b| *b != b'x');
        }
        assert_eq!(seen, total);
    });
    web::wait_clients(&proxy, 1, "the stuck page dropped").await;
    let metrics = proxy.handle().metrics_text();
    assert!(
        metrics.contains("vspc_clients_dropped_slow_total 1\n"),
        "{metrics}"
    );
    // What reached the stuck page is bounded by the budget and the socket buffers, and the
    // connection ends.
    let mut received = 0usize;
    while let Some((opcode, payload)) = stuck.frame().await {
        received += payload.len();
        if opcode == 8 {
            break;
        }
    }
    assert!(received < total, "{received} of {total}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn the_terminal_goes_on_through_a_vmotion_and_a_reconnect() {
    let (proxy, vm, name) = console_with_vm(6, |_| {}).await;
    let addr = proxy.web_addr.unwrap();
    let mut term = web::open(addr, "1", "rw").await;
    term.expect_exact(&banner(&name, "rw")).await;

    // Keys with ESC, lines with 0xFF: both pass a WebSocket's binary messages unchanged.
    let key = |i: u32| format!("k{i:03}\r\u{1b}").into_bytes();
    let line = |i: u32| [format!("o{i:03}").as_bytes(), b"\xff\n"].concat();
    let plan = VmotionPlan::new(Bytes::from_static(b"\x44\xda\xff\xf1"));
    let mut done = Typed::default();
    let vmotion = Some((20, plan));
    type_and_print(&vm, &mut term, 0..80, vmotion, key, line, &mut done).await;
    let Typed { mut typed, printed } = done;
    let outcome = vm.vmotion_outcome().await;
    assert!(
        matches!(outcome, VmotionOutcome::Completed { .. }),
        "{outcome:?}"
    );
    vm.wait_received(&typed).await;
    term.expect_exact(&printed).await;

    // The VM's port reconnects (a new connection, same entry): the page stays attached.
    vm.with(|vm, now| vm.set_connected(now, false)).unwrap();
    wait_snapshot(
        "disconnected",
        || proxy.snapshot(),
        |s| vms(s)[0]["state"] == "disconnected",
    )
    .await;
    vm.with(|vm, now| vm.set_connected(now, true)).unwrap();
    wait_snapshot(
        "reconnected",
        || proxy.snapshot(),
        |s| vms(s)[0]["state"] == "connected",
    )
    .await;
    vm.with(|vm, _| vm.send_serial(b"after\r\n")).unwrap();
    term.expect_exact(b"after\r\n").await;
    term.send(b"end").await;
    typed.extend_from_slice(b"end");
    vm.wait_received(&typed).await;
    let listed = proxy.snapshot();
    assert_eq!(vms(&listed).len(), 1, "{listed:#}");
    let history = vms(&listed)[0]["vmotions"].to_string();
    assert!(history.contains("complete"), "{history}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn https_and_wss_with_the_configured_certificate() {
    let dir = temp_dir("web-tls");
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
    let (proxy, vm, name) = console_with_vm(7, |c| {
        c.web.tls_cert = Some(cert);
        c.web.tls_key = Some(key);
    })
    .await;
    let addr = proxy.web_addr.unwrap();
    assert_eq!(
        proxy.web_url.as_deref(),
        Some(format!("https://{addr}/?token={TOKEN}").as_str())
    );

    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls));
    let connect = || async {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let server = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        connector.connect(server, tcp).await.unwrap()
    };

    // Over HTTPS the cookie is Secure.
    let mut stream = connect().await;
    let request =
        format!("GET /?token={TOKEN} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes())
        .await
        .unwrap();
    let mut response = Vec::new();
    let _ = tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut response).await;
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 303"), "{response}");
    assert!(
        response.contains("HttpOnly; SameSite=Strict; Secure\r\n"),
        "{response}"
    );

    // A terminal over wss, byte-exact.
    let url = format!("wss://localhost:{}/ws/terminal?vm=1&mode=rw", addr.port());
    let mut term = web::try_open_on(connect().await, &url, &[BEARER])
        .await
        .expect("wss terminal");
    term.expect_exact(&banner(&name, "rw")).await;
    vm.with(|vm, _| vm.send_serial(&all_bytes())).unwrap();
    term.expect_exact(&all_bytes()).await;
    term.send(&all_bytes()).await;
    vm.wait_received(&all_bytes()).await;
    // Plain HTTP on the HTTPS port gets nothing served.
    let (head, _) = web::get(addr, "/api/vms", &[BEARER]).await;
    assert!(!head.contains("200 OK"), "{head}");
    proxy.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn the_live_listing_streams_vm_events_and_is_capped() {
    let (proxy, _vm, name) = console_with_vm(8, |c| c.web.max_listeners = 1).await;
    let addr = proxy.web_addr.unwrap();
    let mut events = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /api/events HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
    );
    tokio::io::AsyncWriteExt::write_all(&mut events, request.as_bytes())
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut read_until = async |needle: &str| {
        let deadline = std::time::Instant::now() + WAIT;
        while find(&seen, needle.as_bytes()).is_none() {
            let mut chunk = [0u8; 4096];
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let n =
                tokio::time::timeout(left, tokio::io::AsyncReadExt::read(&mut events, &mut chunk))
                    .await
                    .unwrap_or_else(|_| {
                        panic!("no {needle:?} in {:?}", String::from_utf8_lossy(&seen))
                    })
                    .unwrap();
            assert!(
                n > 0,
                "the stream ended: {:?}",
                String::from_utf8_lossy(&seen)
            );
            seen.extend_from_slice(&chunk[..n]);
        }
        String::from_utf8_lossy(&seen).into_owned()
    };
    let first = read_until("event: listing").await;
    assert!(first.contains("content-type: text/event-stream"), "{first}");
    read_until(&format!("\"name\":\"{name}\"")).await;

    // A second page over web.max_listeners is refused; the first is not disturbed.
    let (head, _) = web::get(addr, "/api/events", &[BEARER]).await;
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");

    // A new VM: its event, then a listing with it.
    let second = TestVm::start(vm_config(9), Target::plain(proxy.vm_addrs[0]));
    let text = read_until("\"name\":\"vm-00009\"").await;
    assert!(
        text.contains("event: vm\ndata: {\"event\":\"added\",\"label\":\"vSPC.py\",\"name\":\"vm-00009\",\"vm\":2}"),
        "{text}"
    );
    drop(second);
    read_until("\"event\":\"disconnected\",\"vm\":2").await;
    proxy.shutdown().await;
}
