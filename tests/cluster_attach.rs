//! Two concentrators sharing a real `redis-server` behave as one site: a telnet client on
//! instance B attaches to a VM that instance A holds, by name, and uses it as a local one
//! (every byte value both ways, a serial break, the scrollback); A enforces the modes and
//! exclusivity for clients of both instances and alone writes the console log; both
//! listings show the attachment; A's shutdown sends B's client back to its menu; an unknown
//! name gets today's answer; a link with a forged site token is refused.
#![allow(clippy::disallowed_methods)]

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::redis::Redis;
use support::*;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use vspc_emulator::EmulatorEvent;
use vspc_server::{RedisState, Server as Proxy, ServerConfig as Config, SharedState, SiteVm};

/// An instance of the site in `redis`, named `name`, its console logs in `logs`.
async fn instance(redis: &Redis, name: &str, logs: &Path) -> Proxy {
    Proxy::start(site_config(redis, name, logs)).await.unwrap()
}

fn site_config(redis: &Redis, name: &str, logs: &Path) -> Config {
    let mut config = Config::ephemeral();
    config.cluster.redis_url = Some(redis.url());
    config.cluster.instance = Some(name.to_owned());
    config.log.dir = Some(logs.to_owned());
    config.log.flush_ms = 10;
    config
}

/// Waits (bounded) until the site's directory has VM `name` held by instance `id`,
/// reachable at `link` (an instance claims its ports' leases by itself).
async fn published(redis: &Redis, name: &str, id: &str, link: SocketAddr) {
    let state = RedisState::new(&redis.url(), "vspc").unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let found: Vec<SiteVm> = state.locate(name).await.unwrap();
        if let [one] = found.as_slice() {
            assert_eq!((one.instance.id.as_str(), one.instance.link), (id, link));
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} not in the directory: {found:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Instances `a` and `b` of a site in their own `redis-server`, and VM `n` held by `a`.
struct Site {
    redis: Redis,
    a: Proxy,
    b: Proxy,
    vm: TestVm,
    logs_a: std::path::PathBuf,
    logs_b: std::path::PathBuf,
}

impl Site {
    /// `None` when `redis-server` is not installed.
    async fn start(tag: &str, n: u64) -> Option<Site> {
        let redis = Redis::start().await?;
        let (logs_a, logs_b) = (temp_dir(&format!("{tag}-a")), temp_dir(&format!("{tag}-b")));
        let a = instance(&redis, "a", &logs_a).await;
        let b = instance(&redis, "b", &logs_b).await;
        let vm = TestVm::start(vm_config(n), Target::plain(a.vm_addrs[0]));
        let name = format!("vm-{n:05}");
        identified(&a, &name).await;
        published(&redis, &name, "a", a.link_addr.unwrap()).await;
        Some(Site {
            redis,
            a,
            b,
            vm,
            logs_a,
            logs_b,
        })
    }
}

fn all_bytes() -> Vec<u8> {
    (0..=255).collect()
}

#[tokio::test]
async fn a_client_on_b_uses_a_vm_held_by_a_as_if_it_were_local() {
    let Some(Site {
        redis: _redis,
        a,
        b,
        vm,
        logs_a,
        logs_b,
    }) = Site::start("attach", 1).await
    else {
        eprintln!("skipped: redis-server is not installed");
        return;
    };
    vm.with(|vm, _| vm.send_serial(b"before\r\n")).unwrap();
    wait_file(&logs_a.join("vm-00001_vSPC.py.log"), b"before\r\n").await;

    // By name on B: A's banner, then A's scrollback.
    let mut client = TestClient::connect(b.client_addr).await;
    client.expect(b"or excl: ").await;
    client.send(b"vm-00001\r\n").await;
    client
        .expect(b"\r\n[vspc: attached to vm-00001 (rw)]\r\n")
        .await;
    client.expect_exact(b"before\r\n").await;

    // Every byte value, both ways, exactly.
    client.send(&all_bytes()).await;
    vm.wait_received(&all_bytes()).await;
    vm.with(|vm, _| vm.send_serial(&all_bytes())).unwrap();
    client.expect_exact(&all_bytes()).await;

    // A telnet break reaches the VM as a serial break.
    client.send_raw(&[0xff, 0xf3]).await;
    vm.wait("a serial break", |_, seen| {
        seen.events
            .iter()
            .any(|e| matches!(e, EmulatorEvent::SerialBreak { .. }))
    })
    .await;

    // A lists B's client among its VM's clients, as `peer@b`; B lists its client attached
    // to A's VM.
    let listed = vms(&a.snapshot())[0]["clients"].clone();
    let clients = listed.as_array().unwrap();
    assert_eq!(clients.len(), 1, "{listed:#}");
    let user = clients[0]["user"].as_str().unwrap();
    assert!(
        user.starts_with("127.0.0.1:") && user.ends_with("@b"),
        "{user}"
    );
    assert_eq!(clients[0]["mode"], "read-write");
    let remote = b.snapshot()["remote_clients"].clone();
    assert_eq!(remote.as_array().unwrap().len(), 1, "{remote:#}");
    assert_eq!(remote[0]["vm"]["name"], "vm-00001");
    assert_eq!(remote[0]["vm"]["label"], "vSPC.py");
    assert_eq!(remote[0]["vm"]["instance"], "a");
    assert_eq!(remote[0]["mode"], "read-write");
    assert!(vms(&b.snapshot()).is_empty());

    // Only the owner writes the console log.
    let mut log = b"before\r\n".to_vec();
    log.extend_from_slice(&all_bytes());
    wait_file(&logs_a.join("vm-00001_vSPC.py.log"), &log).await;
    assert_eq!(std::fs::read_dir(&logs_b).unwrap().count(), 0);

    // A shuts down: its goodbye reaches B's client, which is told and chooses again.
    a.shutdown().await;
    client
        .expect(b"\r\n[vspc: the concentrator is shutting down; goodbye]\r\n")
        .await;
    client.expect(b"\r\n[vspc: a closed the link]\r\n").await;
    client.expect(b"or excl: ").await;
    assert!(b.snapshot()["remote_clients"]
        .as_array()
        .unwrap()
        .is_empty());
    b.shutdown().await;
}

#[tokio::test]
async fn modes_hold_across_instances_unknown_names_and_forged_tokens_are_refused() {
    let Some(Site {
        redis: _redis,
        a,
        b,
        vm,
        ..
    }) = Site::start("modes", 2).await
    else {
        eprintln!("skipped: redis-server is not installed");
        return;
    };

    // A local client holds the VM exclusively: a writer from B is refused by A, and told.
    let mut holder = TestClient::connect(a.client_addr).await;
    holder.select("vm-00002 excl").await;
    let mut remote = TestClient::connect(b.client_addr).await;
    remote.expect(b"or excl: ").await;
    remote.send(b"vm-00002\r\n").await;
    remote
        .expect(b"\r\n[vspc: a: vm-00002 is held exclusively by another client; attach read-only with \"ro\"]\r\n")
        .await;
    remote.expect(b"or excl: ").await;

    // Read-only from B: it sees the output, and what it types never reaches the VM.
    remote.send(b"vm-00002 ro\r\n").await;
    remote
        .expect(b"\r\n[vspc: attached to vm-00002 (ro)]\r\n")
        .await;
    remote.send(b"from b").await;
    holder.send(b"from a").await;
    vm.wait_received(b"from a").await;
    vm.with(|vm, _| vm.send_serial(b"to both\r\n")).unwrap();
    holder.expect_exact(b"to both\r\n").await;
    remote.expect_exact(b"to both\r\n").await;
    assert_eq!(vm.received(), b"from a");

    // A kick from B takes A's client's write lock: A tells its client who took it (B's
    // client, as `peer@b`), and from then on only B's kicker writes.
    let mut kicker = TestClient::connect(b.client_addr).await;
    kicker.expect(b"or excl: ").await;
    kicker
        .send(
            b"vm-00002 kick
",
        )
        .await;
    kicker
        .expect(b"\r\n[vspc: attached to vm-00002 (excl)]\r\n")
        .await;
    holder.expect(b"@b (127.0.0.1:").await;
    holder
        .expect(b") took the write lock on vm-00002; you are read-only now]\r\n")
        .await;
    holder.send(b"lost").await;
    kicker.send(b" kicked").await;
    vm.wait_received(b"from a kicked").await;

    // A name no instance holds: today's answer.
    let mut lost = TestClient::connect(b.client_addr).await;
    lost.expect(b"or excl: ").await;
    lost.send(b"nope\r\n").await;
    lost.expect(b"nope\r\nvspc: no VM matches \"nope\"\r\n")
        .await;

    // A's link port refuses a forged token and a malformed header.
    let link = a.link_addr.unwrap();
    let uuid = "01234567-89ab-cdef-fedc-000000000002";
    let mut forged = RawClient::connect(link).await;
    forged
        .send(format!("VSPC-LINK 1 0123 rw {uuid} vSPC.py x%40y\n").as_bytes())
        .await;
    assert_eq!(forged.read_until(b"\n").await, b"ERR bad site token\n");
    forged.expect_closed().await;
    let mut garbage = RawClient::connect(link).await;
    garbage.send(b"GET / HTTP/1.0\r\n\r\n").await;
    assert_eq!(garbage.read_until(b"\n").await, b"ERR malformed header\n");
    // Connections that never send their header are bounded: with 64 of them waiting, the
    // next is closed at once, without an answer.
    let mut silent = Vec::new();
    for _ in 0..64 {
        silent.push(RawClient::connect(link).await);
    }
    let mut over = RawClient::connect(link).await;
    assert_eq!(over.expect_closed().await, b"");
    drop(silent);

    // The refused links left no client behind: the holder, the watcher and the kicker.
    let clients = vms(&a.snapshot())[0]["clients"].clone();
    assert_eq!(clients.as_array().unwrap().len(), 3, "{clients:#}");
    a.shutdown().await;
    b.shutdown().await;
}

/// A relay to `target` whose connections can all be cut at once (a network failure between
/// two instances): its address, and the cut.
async fn relay(target: SocketAddr) -> (SocketAddr, Arc<Notify>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cut = Arc::new(Notify::new());
    let cuts = cut.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let cut = cuts.clone();
            tokio::spawn(async move {
                let Ok(mut outbound) = TcpStream::connect(target).await else {
                    return;
                };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    _ = cut.notified() => {}
                }
            });
        }
    });
    (addr, cut)
}

#[tokio::test]
async fn a_link_cut_under_a_client_sends_it_back_to_its_menu_and_it_attaches_again() {
    let Some(redis) = Redis::start().await else {
        eprintln!("skipped: redis-server is not installed");
        return;
    };
    // A's link listener on a known port, advertised through the relay.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = SocketAddr::from(([127, 0, 0, 1], port));
    let (relayed, cut) = relay(listen).await;
    let mut config = site_config(&redis, "a", &temp_dir("cut-a"));
    config.cluster.link_listen = Some(listen);
    config.cluster.link_advertise = Some(relayed);
    let a = Proxy::start(config).await.unwrap();
    assert_eq!(a.link_addr, Some(listen));
    let b = instance(&redis, "b", &temp_dir("cut-b")).await;
    let vm = TestVm::start(vm_config(3), Target::plain(a.vm_addrs[0]));
    identified(&a, "vm-00003").await;
    published(&redis, "vm-00003", "a", relayed).await;

    let mut client = TestClient::connect(b.client_addr).await;
    client.select("vm-00003").await;
    client.send(b"one").await;
    vm.wait_received(b"one").await;

    // The link breaks: B's client is told and is back at its menu; A forgets the link's
    // client.
    cut.notify_waiters();
    client
        .expect(b"\r\n[vspc: a closed the link]\r\n\r\nvspc: 0 VM port(s)\r\n")
        .await;
    client.expect(b"or excl: ").await;
    wait_snapshot(
        "A without the link's client",
        || a.snapshot(),
        |s| vms(s)[0]["clients"].as_array().is_some_and(Vec::is_empty),
    )
    .await;

    // It chooses the VM again, over a new link.
    client.select("vm-00003").await;
    client.send(b" two").await;
    vm.wait_received(b"one two").await;
    a.shutdown().await;
    b.shutdown().await;
}
