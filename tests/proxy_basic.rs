//! The concentrator (vspc-server, as examples/proxy runs it) over real loopback sockets: emulated VMs connect and
//! identify, clients select them and see their output byte for byte, type to them, and the
//! access modes and output bounds are enforced.
#![allow(clippy::disallowed_methods)]

mod support;

use std::time::Duration;

use bytes::Bytes;
use support::*;
use vspc_emulator::{EmulatorConfig, EmulatorEvent, VmIdentity};
use vspc_server::{Server as Proxy, ServerConfig as Config};

async fn start(config: Config) -> Proxy {
    Proxy::start(config).await.expect("proxy starts")
}

/// A test VM whose port sends `service_uri` in DO-PROXY.
fn port_config(n: u64, service_uri: &'static str) -> EmulatorConfig {
    let mut config = vm_config(n);
    config.port.service_uri = Bytes::from_static(service_uri.as_bytes());
    config
}

#[tokio::test]
async fn output_reaches_clients_and_input_reaches_the_vm_exactly() {
    let proxy = start(Config::ephemeral()).await;
    let vm = TestVm::start(port_config(1, "vSPC.py"), Target::plain(proxy.vm_addrs[0]));
    identified(&proxy, "vm-00001").await;

    // Output before anyone attached is scrollback.
    let early: &[u8] = b"boot\r\nline two\n\xff\x00\x11 bare cr\r";
    vm.with(|vm, _| vm.send_serial(early)).unwrap();
    wait_snapshot(
        "early output",
        || proxy.snapshot(),
        |s| vms(s)[0]["bytes_from_vm"] == early.len(),
    )
    .await;

    let mut client = TestClient::connect(proxy.client_addr).await;
    client.expect(b"vm-00001").await;
    client.expect(b"ro or excl: ").await;
    let after = client.select("vm-00001").await;
    assert!(after.len() <= early.len());
    client.expect_exact(early).await;

    let live: &[u8] = b"login: \xff\xfe\r\n";
    vm.with(|vm, _| vm.send_serial(live)).unwrap();
    client.expect_exact(live).await;

    let typed: &[u8] = b"root\r\npass\xff\x00word\r";
    client.send(typed).await;
    vm.wait_received(typed).await;

    // A second client by UUID sees the same live output.
    let uuid = VmIdentity::numbered(1).vc_uuid.to_canonical();
    let mut second = TestClient::connect(proxy.client_addr).await;
    let replay = second.select(&format!("connect {uuid}")).await;
    drop(replay);
    second.drain(Duration::from_millis(50)).await;
    second.data.clear();
    vm.with(|vm, _| vm.send_serial(b"both\r\n")).unwrap();
    client.expect_exact(b"both\r\n").await;
    second.expect_exact(b"both\r\n").await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn read_only_cannot_write_and_exclusive_excludes_writers() {
    let proxy = start(Config::ephemeral()).await;
    let vm = TestVm::start(port_config(2, "vSPC.py"), Target::plain(proxy.vm_addrs[0]));
    identified(&proxy, "vm-00002").await;

    // First-line command, typed before the menu is read.
    let mut owner = TestClient::connect(proxy.client_addr).await;
    owner.select("connect vm-00002 excl").await;

    let mut writer = TestClient::connect(proxy.client_addr).await;
    writer.send(b"vm-00002\r\n").await;
    writer.expect(b"held exclusively").await;
    let mut second_excl = TestClient::connect(proxy.client_addr).await;
    second_excl.send(b"vm-00002 excl\r\n").await;
    second_excl.expect(b"held exclusively").await;

    let mut watcher = TestClient::connect(proxy.client_addr).await;
    watcher.select("vm-00002 ro").await;
    watcher.send(b"ignored").await;
    owner.send(b"mine").await;
    vm.wait_received(b"mine").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        vm.received(),
        b"mine",
        "the read-only client's bytes reached the VM"
    );

    // Output still reaches both.
    vm.with(|vm, _| vm.send_serial(b"out")).unwrap();
    owner.expect(b"out").await;
    watcher.expect(b"out").await;

    // Exclusive refused while a writer is attached; free once the holder leaves.
    drop(owner);
    wait_snapshot(
        "exclusive released",
        || proxy.snapshot(),
        |s| vms(s)[0]["exclusive"].is_null(),
    )
    .await;
    writer.select("vm-00002").await;
    let mut late_excl = TestClient::connect(proxy.client_addr).await;
    late_excl.send(b"vm-00002 excl\r\n").await;
    late_excl
        .expect(b"writer(s) attached; exclusive access refused")
        .await;
    writer.send(b"!").await;
    vm.wait_received(b"mine!").await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn two_ports_of_one_vm_stay_apart() {
    let proxy = start(Config::ephemeral()).await;
    let com1 = TestVm::start(
        port_config(3, "vSPC.py?port=com1"),
        Target::plain(proxy.vm_addrs[0]),
    );
    let com2 = TestVm::start(
        port_config(3, "vSPC.py?port=com2"),
        Target::plain(proxy.vm_addrs[0]),
    );
    wait_snapshot(
        "two ports",
        || proxy.snapshot(),
        |s| vms(s).iter().filter(|v| v["state"] == "connected").count() == 2,
    )
    .await;
    let snapshot = proxy.snapshot();
    assert!(
        vms(&snapshot).iter().all(|v| v["flagged"].is_null()),
        "ports of one VM are not impostors: {snapshot:#}"
    );

    let mut ambiguous = TestClient::connect(proxy.client_addr).await;
    ambiguous.send(b"vm-00003\r\n").await;
    ambiguous.expect(b"ambiguous").await;

    let mut c2 = TestClient::connect(proxy.client_addr).await;
    c2.select("vm-00003/com2").await;
    com1.with(|vm, _| vm.send_serial(b"one")).unwrap();
    com2.with(|vm, _| vm.send_serial(b"two")).unwrap();
    c2.expect_exact(b"two").await;
    c2.send(b"to-two").await;
    com2.wait_received(b"to-two").await;
    assert!(com1.received().is_empty());
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_slow_client_is_dropped_after_its_grace_and_others_lose_nothing() {
    let mut config = Config::ephemeral();
    // The fast client is read by this test's own task between the VM's 64 KiB writes, so it
    // can be a chunk or two behind at times: the budget allows that, and the client that
    // never reads still exceeds it many times over.
    config.client.output_budget = 256 * 1024;
    config.client.scrollback = 0;
    let proxy = start(config).await;
    let vm = TestVm::start(port_config(4, "vSPC.py"), Target::plain(proxy.vm_addrs[0]));
    identified(&proxy, "vm-00004").await;

    // The slow client attaches, then never reads again; a tiny receive buffer makes the
    // kernel absorb little of it.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(proxy.client_addr).await.unwrap();
    let mut slow = TestClient::from_stream(stream);
    slow.select("vm-00004").await;
    let mut fast = TestClient::connect(proxy.client_addr).await;
    fast.select("vm-00004").await;

    let chunk: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
    let mut expected = Vec::new();
    for _ in 0..96 {
        vm.with(|vm, _| vm.send_serial(&chunk)).unwrap();
        expected.extend_from_slice(&chunk);
        // The fast client keeps up; the VM's reading waits for the slow one only until
        // its grace ends, and the fast one loses nothing meanwhile.
        fast.drain(Duration::from_millis(1)).await;
    }
    fast.expect_exact(&expected).await;
    let metrics = wait_snapshot(
        "slow client dropped",
        || proxy.snapshot(),
        |s| vms(s)[0]["clients"].as_array().map(Vec::len) == Some(1),
    )
    .await;
    assert_eq!(vms(&metrics)[0]["bytes_from_vm"], expected.len());
    // The goodbye is best effort (a client that stopped reading may never get it); the
    // close is not.
    slow.expect_closed().await;
    let text = proxy.snapshot();
    assert!(vms(&text)[0]["clients"].as_array().unwrap().len() == 1);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_sticky_port_attaches_directly_and_outlives_the_vm_connection() {
    let mut config = Config::ephemeral();
    config.client.sticky_ports = true;
    let proxy = start(config).await;
    let vm = TestVm::start(port_config(5, "vSPC.py"), Target::plain(proxy.vm_addrs[0]));
    identified(&proxy, "vm-00005").await;
    wait_snapshot(
        "sticky port",
        || proxy.snapshot(),
        |s| vms(s)[0]["sticky_port"].is_string(),
    )
    .await;
    let sticky = proxy.sticky_addr("vm-00005").unwrap();
    vm.with(|vm, _| vm.send_serial(b"kept\r\n")).unwrap();
    let mut client = TestClient::connect(sticky).await;
    client
        .expect(b"[vspc: attached to vm-00005 (rw)]\r\n")
        .await;
    client.expect_exact(b"kept\r\n").await;

    // The VM's port is disconnected; its entry, scrollback and sticky port stay (linger).
    vm.with(|vm, now| vm.set_connected(now, false)).unwrap();
    wait_snapshot(
        "disconnected",
        || proxy.snapshot(),
        |s| vms(s)[0]["state"] == "disconnected",
    )
    .await;
    let mut late = TestClient::connect(sticky).await;
    late.expect(b"[vspc: attached to vm-00005 (rw)]\r\n").await;
    late.expect_exact(b"kept\r\n").await;
    // And it comes back to the same entry and port.
    vm.with(|vm, now| vm.set_connected(now, true)).unwrap();
    wait_snapshot(
        "back",
        || proxy.snapshot(),
        |s| vms(s)[0]["state"] == "connected" && vms(s)[0]["connections"] == 2,
    )
    .await;
    assert_eq!(proxy.sticky_addr("vm-00005"), Some(sticky));
    vm.with(|vm, _| vm.send_serial(b"back")).unwrap();
    client.expect_exact(b"back").await;
    late.expect_exact(b"back").await;
    proxy.shutdown().await;
}

/// The VM's view of client input: data, with each serial break shown as `|BRK|`.
fn input_with_breaks(vm: &TestVm) -> String {
    vm.seen(|seen| {
        seen.events
            .iter()
            .filter_map(|event| match event {
                EmulatorEvent::ClientData { bytes, .. } => {
                    Some(String::from_utf8_lossy(bytes).into_owned())
                }
                EmulatorEvent::SerialBreak { .. } => Some("|BRK|".to_owned()),
                _ => None,
            })
            .collect()
    })
}

#[tokio::test]
async fn a_client_break_reaches_the_vm_in_order_and_read_only_clients_cannot_send_one() {
    let proxy = Proxy::start(Config::ephemeral()).await.unwrap();
    let vm = TestVm::start(port_config(8, "vSPC.py"), Target::plain(proxy.vm_addrs[0]));
    identified(&proxy, "vm-00008").await;
    let mut writer = TestClient::connect(proxy.client_addr).await;
    writer.select("vm-00008").await;
    let mut reader = TestClient::connect(proxy.client_addr).await;
    reader.select("vm-00008 ro").await;

    // IAC BRK (telnet's serial break) between data, in one write; then one on its own.
    writer.send_raw(b"abc\xff\xf3def").await;
    vm.wait_received(b"abcdef").await;
    reader.send_raw(b"\xff\xf3").await;
    writer.send_raw(b"\xff\xf3").await;
    writer.send(b"g").await;
    vm.wait_received(b"abcdefg").await;
    assert_eq!(input_with_breaks(&vm), "abc|BRK|def|BRK|g");
    proxy.shutdown().await;
}

/// An entry whose VM stays away longer than the linger time is removed and its clients told;
/// one whose VM came back within it stays, and its later absence is timed afresh.
#[tokio::test]
async fn entries_linger_then_go() {
    let mut config = Config::ephemeral();
    config.vm.linger_secs = 1;
    let proxy = start(config).await;
    let gone = TestVm::start(port_config(1, "vSPC.py"), Target::plain(proxy.vm_addrs[0]));
    let back = TestVm::start(port_config(2, "vSPC.py"), Target::plain(proxy.vm_addrs[0]));
    identified(&proxy, "vm-00001").await;
    identified(&proxy, "vm-00002").await;
    let mut client = TestClient::connect(proxy.client_addr).await;
    client.expect(b"ro or excl: ").await;
    client.select("vm-00001").await;

    let started = std::time::Instant::now();
    gone.with(|vm, now| vm.set_connected(now, false)).unwrap();
    back.with(|vm, now| vm.set_connected(now, false)).unwrap();
    wait_snapshot(
        "both away",
        || proxy.snapshot(),
        |s| vms(s).iter().all(|vm| vm["state"] == "disconnected"),
    )
    .await;
    back.with(|vm, now| vm.set_connected(now, true)).unwrap();
    client
        .expect(b"[vspc: the VM did not come back; closing]\r\n")
        .await;
    assert!(started.elapsed() >= Duration::from_secs(1));
    let snapshot = proxy.snapshot();
    assert!(!has_vm(&snapshot, "vm-00001"), "{snapshot}");
    assert!(has_vm(&snapshot, "vm-00002"), "{snapshot}");
    // The returned VM's earlier absence is not held against it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(has_vm(&proxy.snapshot(), "vm-00002"));
    proxy.shutdown().await;
}

/// The menu lists a screenful of VM ports and says how many more there are; any of them can
/// still be selected by name.
#[tokio::test]
async fn the_menu_is_a_screenful_and_every_vm_is_selectable() {
    let proxy = start(Config::ephemeral()).await;
    let fleet: Vec<TestVm> = (1..=45)
        .map(|n| TestVm::start(port_config(n, "vSPC.py"), Target::plain(proxy.vm_addrs[0])))
        .collect();
    wait_snapshot("45 VMs", || proxy.snapshot(), |s| vms(s).len() == 45).await;
    let mut client = TestClient::connect(proxy.client_addr).await;
    client.expect(b"ro or excl: ").await;
    let menu = client.menu_seen();
    let listed = menu.windows(3).filter(|w| w == b"vm-").count();
    assert_eq!(listed, 40, "{}", String::from_utf8_lossy(&menu));
    assert!(find(&menu, b"... and 5 more").is_some());
    // The last VM, past the listing.
    let last = proxy
        .snapshot()
        .get("vms")
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|vm| vm["name"].as_str().map(str::to_owned))
        .max()
        .unwrap();
    client.send(format!("{last}\r\n").as_bytes()).await;
    client
        .expect(format!("[vspc: attached to {last} (rw)]").as_bytes())
        .await;
    drop(fleet);
    proxy.shutdown().await;
}
