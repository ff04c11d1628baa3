//! Operating the concentrator: admin JSON and metrics, telnets with the printed thumbprint,
//! a real telnet client, hostile VMs, and (against the example binary, located by cargo) SIGHUP log
//! reopen and graceful SIGTERM.
#![allow(clippy::disallowed_methods)]

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use support::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use vspc_emulator::{Fault, Segmentation, VmIdentity};
use vspc_server::{Server as Proxy, ServerConfig as Config};

#[tokio::test]
async fn admin_lists_vms_as_json_and_serves_metrics() {
    let proxy = Proxy::start(Config::ephemeral()).await.unwrap();
    let vm = TestVm::start(vm_config(40), Target::plain(proxy.vm_addrs[0]));
    identified(&proxy, "vm-00040").await;
    vm.with(|vm, _| vm.send_serial(b"12345")).unwrap();
    let mut client = TestClient::connect(proxy.client_addr).await;
    client.select("vm-00040 ro").await;
    client.expect_exact(b"12345").await;
    let admin = proxy.admin_addr.unwrap();

    let (head, body) = http_get(admin, "/vms").await;
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(head.contains("application/json"));
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let entry = &json["vms"][0];
    assert_eq!(entry["name"], "vm-00040");
    assert_eq!(
        entry["vc_uuid"],
        VmIdentity::numbered(40).vc_uuid.to_canonical()
    );
    assert_eq!(entry["service_uri"], "vSPC.py");
    assert_eq!(entry["state"], "connected");
    assert_eq!(entry["bytes_from_vm"], 5);
    assert_eq!(entry["clients"][0]["mode"], "read-only");
    assert!(entry["bios_uuid"].is_string());

    let (head, body) = http_get(admin, "/metrics").await;
    assert!(head.contains("text/plain"), "{head}");
    for line in [
        "vspc_vms 1\n",
        "vspc_vm_connections 1\n",
        "vspc_clients 1\n",
        "vspc_vm_bytes_total{direction=\"from_vm\"} 5\n",
        "# TYPE vspc_vmotions_total counter\n",
    ] {
        assert!(body.contains(line), "missing {line:?} in\n{body}");
    }
    let (head, _) = http_get(admin, "/nope").await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn telnets_end_to_end_with_the_printed_thumbprint() {
    let dir = temp_dir("tls");
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    std::fs::write(&cert_path, certified.cert.pem()).unwrap();
    std::fs::write(&key_path, certified.key_pair.serialize_pem()).unwrap();

    let mut config = Config::ephemeral();
    config.vm.tls_listen = vec![SocketAddr::from(([127, 0, 0, 1], 0))];
    config.vm.tls_cert = Some(cert_path);
    config.vm.tls_key = Some(key_path);
    let proxy = Proxy::start(config).await.unwrap();
    let thumbprint = vspc_backing::Thumbprint::sha1_of_der(certified.cert.der());
    assert_eq!(
        proxy.proxy_uris,
        [format!(
            "telnets://{}#thumbprint={thumbprint}",
            proxy.tls_addrs[0]
        )]
    );
    // The printed thumbprint parses back as vSphere's form.
    let printed = proxy.proxy_uris[0].split_once("#thumbprint=").unwrap().1;
    assert_eq!(printed.parse::<vspc_backing::Thumbprint>(), Ok(thumbprint));

    // The VM connects with exactly the printed proxyURI, verifying the proxy by its
    // thumbprint as ESXi does (no root store).
    let target = Target::new(proxy.proxy_uris[0].parse().unwrap()).unwrap();
    let vm = TestVm::start(vm_config(41), target);
    identified(&proxy, "vm-00041").await;
    assert_eq!(vms(&proxy.snapshot())[0]["tls"], true);
    let mut client = TestClient::connect(proxy.client_addr).await;
    client.select("vm-00041").await;
    vm.with(|vm, _| vm.send_serial(b"over tls \xff\r\n"))
        .unwrap();
    client.expect_exact(b"over tls \xff\r\n").await;
    client.send(b"typed over tls\r").await;
    vm.wait_received(b"typed over tls\r").await;
    proxy.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

fn which(binary: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| PathBuf::from(dir).join(binary))
        .find(|path| path.is_file())
}

#[tokio::test]
async fn a_real_telnet_client_attaches_through_the_client_port() {
    let (program, args): (PathBuf, Vec<String>) = match (which("telnet"), which("socat")) {
        (Some(telnet), _) => (telnet, vec![]),
        (None, Some(socat)) => (socat, vec!["-".to_owned()]),
        (None, None) => {
            println!(
                "SKIPPED: neither telnet nor socat is installed (apt-get install telnet socat)"
            );
            return;
        }
    };
    let proxy = Proxy::start(Config::ephemeral()).await.unwrap();
    let vm = TestVm::start(vm_config(42), Target::plain(proxy.vm_addrs[0]));
    identified(&proxy, "vm-00042").await;
    let addr = proxy.client_addr;
    let mut command = tokio::process::Command::new(&program);
    command.args(&args);
    if args.is_empty() {
        command
            .arg(addr.ip().to_string())
            .arg(addr.port().to_string());
    } else {
        command.arg(format!("TCP:{addr}"));
    }
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let reader_seen = seen.clone();
    let reader = tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf).await {
            if n == 0 {
                break;
            }
            reader_seen.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    let name = program.display().to_string();
    let wait_for = |needle: &'static [u8]| {
        let seen = seen.clone();
        let name = name.clone();
        async move {
            let deadline = Instant::now() + WAIT;
            loop {
                if find(&seen.lock().unwrap(), needle).is_some() {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "{name} never printed {:?}; got {:?}",
                    String::from_utf8_lossy(needle),
                    String::from_utf8_lossy(&seen.lock().unwrap())
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    wait_for(b"ro or excl: ").await;
    stdin.write_all(b"vm-00042\n").await.unwrap();
    wait_for(b"[vspc: attached to vm-00042 (rw)]").await;
    vm.with(|vm, _| vm.send_serial(b"hello from the serial console\r\n"))
        .unwrap();
    wait_for(b"hello from the serial console").await;
    stdin.write_all(b"typed by telnet\n").await.unwrap();
    vm.wait("telnet's input", |_, seen| {
        find(&seen.received, b"typed by telnet").is_some()
    })
    .await;
    let _ = child.start_kill();
    let _ = tokio::time::timeout(WAIT, child.wait()).await;
    reader.abort();
    proxy.shutdown().await;
}

#[tokio::test]
async fn hostile_vms_disturb_no_other_vm_and_no_log() {
    let dir = temp_dir("hostile");
    let mut config = Config::ephemeral();
    config.log.dir = Some(dir.clone());
    config.log.name = "{name}.log".to_owned();
    let proxy = Proxy::start(config).await.unwrap();
    let good = TestVm::start(vm_config(50), Target::plain(proxy.vm_addrs[0]));
    let bad = TestVm::start(vm_config(51), Target::plain(proxy.vm_addrs[0]));
    identified(&proxy, "vm-00050").await;
    identified(&proxy, "vm-00051").await;
    let mut client = TestClient::connect(proxy.client_addr).await;
    client.select("vm-00050").await;

    // A raw connection that never speaks telnet properly, then vanishes mid-subnegotiation.
    let mut raw = RawClient::connect(proxy.vm_addrs[0]).await;
    raw.send(b"\xff\xfa\xe8\x50garbage \xff\xff\xff\xfa\xfa\xfa")
        .await;
    drop(raw);

    let mut expected = Vec::new();
    let faults = [
        Fault::Garbage(Bytes::from_static(
            b"\xff\xfa\xe8\x46Sx\xff\xff\xff\xf0\xff",
        )),
        Fault::TelnetNoise,
        Fault::OversizedSubnegotiation { len: 100_000 },
        Fault::UnknownSuboption {
            code: 0x99,
            payload: Bytes::from_static(b"\xff\x00"),
        },
        Fault::Garbage(Bytes::from_static(b"\xff\xfa")),
    ];
    for (i, fault) in faults.into_iter().enumerate() {
        bad.with(|vm, _| vm.inject(fault)).unwrap();
        let line = format!("good {i}\r\n");
        good.with(|vm, _| vm.send_serial(line.as_bytes())).unwrap();
        expected.extend_from_slice(line.as_bytes());
    }
    // Split writes: every byte of the bad VM's output a write of its own.
    bad.with(|vm, _| {
        vm.set_segmentation(Segmentation::EveryByte);
        vm.send_serial(b"split")
    })
    .unwrap();
    bad.with(|vm, _| vm.inject(Fault::AbruptClose)).unwrap();
    good.with(|vm, _| vm.send_serial(b"still fine\xff\r\n"))
        .unwrap();
    expected.extend_from_slice(b"still fine\xff\r\n");
    client.expect_exact(&expected).await;
    client.send(b"input ok").await;
    good.wait_received(b"input ok").await;
    wait_snapshot(
        "bad VM gone",
        || proxy.snapshot(),
        |s| {
            vms(s)
                .iter()
                .any(|v| v["name"] == "vm-00051" && v["state"] == "disconnected")
        },
    )
    .await;
    let snapshot = proxy.snapshot();
    let good_entry = vms(&snapshot)
        .into_iter()
        .find(|v| v["name"] == "vm-00050")
        .unwrap();
    assert_eq!(good_entry["bytes_from_vm"], expected.len());
    proxy.shutdown().await;
    assert_eq!(std::fs::read(dir.join("vm-00050.log")).unwrap(), expected);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn sighup_reopens_logs_and_sigterm_shuts_down_gracefully() {
    let dir = temp_dir("signals");
    let mut child = proxy_example(&dir, "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let vm_addr: SocketAddr = line_after(&mut stdout, "vm telnet://")
        .await
        .parse()
        .unwrap();
    let client_addr: SocketAddr = line_after(&mut stdout, "clients telnet ")
        .await
        .parse()
        .unwrap();
    let (log_tx, mut log_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    tokio::spawn(async move {
        while let Ok(Some(line)) = stderr.next_line().await {
            let _ = log_tx.send(line);
        }
    });
    let mut wait_log = async |needle: &str| {
        let deadline = Instant::now() + WAIT;
        loop {
            let line = tokio::time::timeout_at(deadline.into(), log_rx.recv())
                .await
                .unwrap_or_else(|_| panic!("no log line with {needle:?}"))
                .unwrap();
            if line.contains(needle) {
                return;
            }
        }
    };

    let vm = TestVm::start(vm_config(60), Target::plain(vm_addr));
    // No admin listener here: poll the menu until the VM is listed.
    let deadline = Instant::now() + WAIT;
    let mut client = loop {
        let mut client = TestClient::connect(client_addr).await;
        client.expect(b"ro or excl: ").await;
        if find(&client.data, b"vm-00060").is_some()
            || find(&client.menu_seen(), b"vm-00060").is_some()
        {
            break client;
        }
        assert!(
            Instant::now() < deadline,
            "the VM never showed up in the menu"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    client.select("vm-00060").await;
    vm.with(|vm, _| vm.send_serial(b"one\r\n")).unwrap();
    client.expect_exact(b"one\r\n").await;

    // Rotate: move the file away, SIGHUP, and the next output goes to a fresh file.
    let log = dir.join("vm-00060.log");
    let rotated = dir.join("vm-00060.log.1");
    // The periodic flush runs every second; SIGHUP flushes before reopening anyway.
    std::fs::rename(&log, &rotated).unwrap();
    signal(pid, "HUP");
    wait_log("console logs reopened").await;
    vm.with(|vm, _| vm.send_serial(b"two\r\n")).unwrap();
    client.expect_exact(b"two\r\n").await;
    vm.with(|vm, _| vm.send_serial(b"three \xff\r\n")).unwrap();
    client.expect_exact(b"three \xff\r\n").await;

    signal(pid, "TERM");
    client.expect(b"shutting down").await;
    client.expect_closed().await;
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert_eq!(std::fs::read(&rotated).unwrap(), b"one\r\n");
    assert_eq!(std::fs::read(&log).unwrap(), b"two\r\nthree \xff\r\n");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Past `vm.max_connections` a VM connection is closed at once and counted; past
/// `client.max_clients` a client is told why and closed. Those already in are undisturbed, and
/// a slot freed is usable again.
#[tokio::test]
async fn connection_caps_refuse_the_excess_and_spare_the_rest() {
    let mut config = Config::ephemeral();
    config.vm.max_connections = 2;
    config.client.max_clients = 1;
    let proxy = Proxy::start(config).await.unwrap();
    let first = TestVm::start(vm_config(51), Target::plain(proxy.vm_addrs[0]));
    let second = TestVm::start(vm_config(52), Target::plain(proxy.vm_addrs[0]));
    identified(&proxy, "vm-00051").await;
    identified(&proxy, "vm-00052").await;

    // A third VM connection: closed without a byte.
    let mut third = RawClient::connect(proxy.vm_addrs[0]).await;
    assert_eq!(third.expect_closed().await, b"");

    // One client is served; a second is told and closed.
    let mut client = TestClient::connect(proxy.client_addr).await;
    client.select("vm-00051").await;
    let mut refused = TestClient::connect(proxy.client_addr).await;
    refused
        .expect(b"vspc: connection limit (1) reached\r\n")
        .await;
    refused.expect_closed().await;

    let (_, metrics) = http_get(proxy.admin_addr.unwrap(), "/metrics").await;
    for line in [
        "vspc_vm_connections_refused_total 1\n",
        "vspc_client_connections_refused_total 1\n",
        "vspc_vm_connections 2\n",
    ] {
        assert!(metrics.contains(line), "{line:?} not in\n{metrics}");
    }
    // Those in are undisturbed.
    first.with(|vm, _| vm.send_serial(b"still here")).unwrap();
    client.expect_exact(b"still here").await;

    // A freed VM slot is usable again.
    drop(second);
    wait_snapshot(
        "vm-00052 away",
        || proxy.snapshot(),
        |s| {
            vms(s)
                .iter()
                .any(|vm| vm["name"] == "vm-00052" && vm["state"] != "connected")
        },
    )
    .await;
    let again = TestVm::start(vm_config(53), Target::plain(proxy.vm_addrs[0]));
    identified(&proxy, "vm-00053").await;
    drop(again);
    proxy.shutdown().await;
}
