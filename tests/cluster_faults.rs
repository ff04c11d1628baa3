//! Faults of concentrators that behave as one, as users run them: `proxy` example processes
//! sharing a real `redis-server` over loopback, behind a "virtual IP" that sends each new
//! VM connection to the first instance up, with leases of one second. An instance killed
//! with SIGKILL: its VM reconnects to the other, which holds it once the lease lapsed. Redis
//! killed and restarted empty: local VMs and clients go on byte for byte, vMotions are
//! answered NOTNOW meanwhile, the directory is back after a renewal and a vMotion across
//! instances works again. A stale instance (stopped longer than its lease while its VM went
//! to the other): it closes its connection, claims nothing, and its console log stops.
#![allow(clippy::disallowed_methods)]

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;
use support::redis::Redis;
use support::typing::{key, line, type_and_print, Typed};
use support::vip::Vip;
use support::*;
use tokio::io::{AsyncBufReadExt, BufReader};
use vspc_emulator::{EmulatorConfig, VmotionOutcome, VmotionPlan};

/// Every instance's lease; renewed every third of it.
const LEASE_MS: u64 = 1000;

/// A `proxy` example process of the site.
struct Node {
    child: tokio::process::Child,
    _lines: StartupLines,
    vm: SocketAddr,
    clients: SocketAddr,
    admin: SocketAddr,
    logs: PathBuf,
}

impl Node {
    /// Instance `id`, sharing `redis`, its console logs in `dir/id`.
    async fn start(redis: &Redis, id: &str, dir: &Path) -> Node {
        let logs = dir.join(id);
        let config = dir.join(format!("{id}.toml"));
        std::fs::write(
            &config,
            format!("[cluster]\ninstance = \"{id}\"\nlease_ms = {LEASE_MS}\n"),
        )
        .unwrap();
        let mut command = proxy_example_with_admin(&logs, "warn");
        command.arg("--config").arg(&config).args([
            "--redis-url",
            &redis.url(),
            "--log-flush-ms",
            "20",
        ]);
        let mut child = command.stderr(Stdio::inherit()).spawn().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let vm = line_after(&mut lines, "vm telnet://")
            .await
            .parse()
            .unwrap();
        let (clients, admin) = clients_and_admin(&mut lines).await;
        Node {
            child,
            _lines: lines,
            vm,
            clients,
            admin,
            logs,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    async fn json(&self, path: &str) -> serde_json::Value {
        let (head, body) = http_get(self.admin, path).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{path}: {head}");
        serde_json::from_str(&body).unwrap()
    }

    async fn metrics(&self) -> String {
        http_get(self.admin, "/metrics").await.1
    }

    /// The `owner` of the connected entry named `name` (`None`: no such entry).
    async fn owner(&self, name: &str) -> Option<String> {
        let listing = self.json("/vms").await;
        vms(&listing)
            .iter()
            .find(|v| v["name"] == name && v["state"] == "connected")
            .map(|v| v["owner"].as_str().unwrap_or_default().to_owned())
    }

    /// Waits (bounded) until the connected entry `name` is owned as `owner` says.
    async fn wait_owner(&self, name: &str, owner: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let now = self.owner(name).await;
            if now.as_deref() == Some(owner) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name} never {owner} (last {now:?})"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The site's directory as this instance reads it: (VM name, holding instance).
    async fn site(&self) -> Vec<(String, String)> {
        let site = self.json("/site").await;
        vms(&site)
            .iter()
            .map(|v| {
                let text = |field: &str| v[field].as_str().unwrap_or_default().to_owned();
                (text("name"), text("instance"))
            })
            .collect()
    }

    /// Waits (bounded) until the directory says `name` is held by `instance` and nothing
    /// else is held.
    async fn wait_site(&self, name: &str, instance: &str) {
        let want = vec![(name.to_owned(), instance.to_owned())];
        let deadline = Instant::now() + WAIT;
        loop {
            let site = self.site().await;
            if site == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "directory {site:?}, not {want:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The console log of VM `name`.
    fn log_path(&self, name: &str) -> PathBuf {
        self.logs.join(format!("{name}.log"))
    }

    /// The console log of VM `name` so far.
    fn log(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.log_path(name)).unwrap_or_default()
    }
}

/// Test VM `n`, reconnecting 100 ms after its connection closes (as a host retries).
fn reconnecting(n: u64) -> EmulatorConfig {
    let mut config = vm_config(n);
    config.reconnect_after = Some(Duration::from_millis(100));
    config
}

/// The VM prints `text`, and `client` reads exactly it.
async fn prints(vm: &TestVm, client: &mut TestClient, text: &[u8]) {
    vm.with(|vm, _| vm.send_serial(text)).unwrap();
    client.expect_exact(text).await;
}

/// Five more rounds of typing and printing from `round`; the next round.
async fn five_rounds(vm: &TestVm, client: &mut TestClient, round: u32, done: &mut Typed) -> u32 {
    type_and_print(vm, client, round..round + 5, None, key, line, done).await;
    round + 5
}

#[tokio::test]
async fn a_killed_instance_s_vm_is_held_by_another_once_its_lease_lapsed() {
    let Some(redis) = Redis::start().await else {
        eprintln!("skipped: redis-server is not installed");
        return;
    };
    let dir = temp_dir("faults-kill");
    let mut a = Node::start(&redis, "a", &dir).await;
    let b = Node::start(&redis, "b", &dir).await;
    let vip = Vip::start(&[a.vm, b.vm]).await;
    let vm = TestVm::start(reconnecting(60), Target::plain(vip.addr));
    a.wait_owner("vm-00060", "held").await;
    b.wait_site("vm-00060", "a").await;
    let mut on_a = TestClient::connect(a.clients).await;
    on_a.select("vm-00060").await;
    prints(&vm, &mut on_a, b"on a\r\n").await;
    on_a.send(b"typed on a;").await;
    vm.wait_received(b"typed on a;").await;
    wait_file(&a.log_path("vm-00060"), b"on a\r\n").await;

    let killed = Instant::now();
    a.child.start_kill().unwrap();
    a.child.wait().await.unwrap();
    // The VM reconnects through the virtual IP to B, which serves it at once and holds it
    // once A's lease lapsed.
    b.wait_owner("vm-00060", "held").await;
    let takeover = killed.elapsed();
    eprintln!("held by B {takeover:?} after A's SIGKILL (lease {LEASE_MS} ms)");
    assert!(
        takeover < Duration::from_millis(3 * LEASE_MS),
        "{takeover:?}"
    );
    b.wait_site("vm-00060", "b").await;
    let mut on_b = TestClient::connect(b.clients).await;
    on_b.select("vm-00060").await;
    prints(&vm, &mut on_b, b"on b\r\n").await;
    on_b.send(b"typed on b").await;
    vm.wait_received(b"typed on a;typed on b").await;
    // Each instance logged what it held.
    wait_file(&b.log_path("vm-00060"), b"on b\r\n").await;
    assert_eq!(a.log("vm-00060"), b"on a\r\n");
    assert!(b.metrics().await.contains("vspc_ports_held 1\n"));
}

#[tokio::test]
async fn a_redis_restart_loses_nothing_and_the_directory_comes_back() {
    let Some(mut redis) = Redis::start().await else {
        eprintln!("skipped: redis-server is not installed");
        return;
    };
    let dir = temp_dir("faults-redis");
    let a = Node::start(&redis, "a", &dir).await;
    let b = Node::start(&redis, "b", &dir).await;
    let vip = Vip::start(&[a.vm, b.vm]).await;
    let vm = TestVm::start(reconnecting(61), Target::plain(vip.addr));
    a.wait_owner("vm-00061", "held").await;
    // From now on a destination would reach B.
    vip.set_up(a.vm, false);
    let mut client = TestClient::connect(a.clients).await;
    client.select("vm-00061").await;
    let mut done = Typed::default();
    type_and_print(&vm, &mut client, 0..10, None, key, line, &mut done).await;

    redis.kill();
    // Typing and printing go on while A finds the store gone.
    let mut round = 10;
    while a.metrics().await.contains("vspc_store_errors_total 0\n") {
        round = five_rounds(&vm, &mut client, round, &mut done).await;
    }
    // The directory cannot be read meanwhile.
    let (head, _) = http_get(a.admin, "/site").await;
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    // Without the store a vMotion is answered NOTNOW: its destination could not be carried.
    let plan = VmotionPlan::new(Bytes::from_static(b"\x10\x20\x30\x40"));
    vm.with(|vm, now| vm.start_vmotion(now, plan)).unwrap();
    assert_eq!(vm.vmotion_outcome().await, VmotionOutcome::Refused);
    // The store stays away longer than the lease.
    let away = Instant::now();
    while away.elapsed() < Duration::from_millis(LEASE_MS * 3 / 2) {
        round = five_rounds(&vm, &mut client, round, &mut done).await;
    }
    vm.wait_received(&done.typed).await;
    client.expect_exact(&done.printed).await;
    let read = done.printed.len();
    assert_eq!(a.owner("vm-00061").await.as_deref(), Some("held"));

    redis.restart().await;
    let restarted = Instant::now();
    b.wait_site("vm-00061", "a").await;
    eprintln!(
        "directory back {:?} after the Redis restart (lease {LEASE_MS} ms)",
        restarted.elapsed()
    );
    assert!(restarted.elapsed() < Duration::from_millis(2 * LEASE_MS));
    // A vMotion across instances works again, the client typing through it.
    let plan = VmotionPlan::new(Bytes::from_static(b"\x10\x20\x30\x41"));
    let vmotion = Some((round + 10, plan));
    type_and_print(
        &vm,
        &mut client,
        round..round + 60,
        vmotion,
        key,
        line,
        &mut done,
    )
    .await;
    let outcome = vm.vmotion_outcome().await;
    assert!(
        matches!(outcome, VmotionOutcome::Completed { .. }),
        "{outcome:?}"
    );
    vm.wait_received(&done.typed).await;
    client.expect_exact(&done.printed[read..]).await;
    // Nothing lost locally: A's log holds every byte the VM printed, outage included.
    wait_file(&a.log_path("vm-00061"), &done.printed).await;
    let metrics = b.metrics().await;
    assert!(
        metrics.contains("vspc_shared_vmotions_total{event=\"carried\"} 1\n"),
        "{metrics}"
    );

    // With the directory back, a client of B's process uses the VM A's process holds: it
    // reads what the VM prints and types to it, and A alone logs.
    let mut remote = TestClient::connect(b.clients).await;
    remote.expect(b"or excl: ").await;
    remote.send(b"vm-00061\r\n").await;
    remote
        .expect(b"\r\n[vspc: attached to vm-00061 (rw)]\r\n")
        .await;
    vm.with(|vm, _| vm.send_serial(b"to-b\r\n")).unwrap();
    remote.expect(b"to-b\r\n").await;
    remote.send(b"from-b\r").await;
    vm.wait_received(&[&done.typed[..], b"from-b\r"].concat())
        .await;
    wait_file(
        &a.log_path("vm-00061"),
        &[&done.printed[..], b"to-b\r\n"].concat(),
    )
    .await;
    assert!(!b.log_path("vm-00061").exists());
}

#[tokio::test]
async fn a_stale_instance_closes_its_connection_and_claims_nothing() {
    let Some(redis) = Redis::start().await else {
        eprintln!("skipped: redis-server is not installed");
        return;
    };
    let dir = temp_dir("faults-stale");
    let a = Node::start(&redis, "a", &dir).await;
    let b = Node::start(&redis, "b", &dir).await;
    let vip = Vip::start(&[a.vm, b.vm]).await;
    let vm = TestVm::start(reconnecting(62), Target::plain(vip.addr));
    a.wait_owner("vm-00062", "held").await;
    let mut on_a = TestClient::connect(a.clients).await;
    on_a.select("vm-00062").await;
    prints(&vm, &mut on_a, b"before\r\n").await;

    // A stops, and the VM loses its way to A (A's socket stays open and silent): it
    // reconnects to B, which holds it once A's lease lapsed.
    signal(a.pid(), "STOP");
    let stopped = Instant::now();
    vip.sever(a.vm);
    b.wait_owner("vm-00062", "held").await;
    eprintln!("held by B {:?} after A stopped", stopped.elapsed());
    let mut on_b = TestClient::connect(b.clients).await;
    on_b.select("vm-00062").await;
    prints(&vm, &mut on_b, b"on b\r\n").await;

    // A comes back: its renewal finds the port held by B, it closes its stale connection.
    signal(a.pid(), "CONT");
    let resumed = Instant::now();
    vip.wait_severed_closed(1).await;
    eprintln!(
        "stale connection closed {:?} after A resumed",
        resumed.elapsed()
    );
    let listing = a.json("/vms").await;
    let entry = &vms(&listing)[0];
    assert_eq!(entry["state"], "disconnected", "{entry:#}");
    assert_eq!(entry["owner"], "unshared", "{entry:#}");
    // It claims nothing, renewal after renewal; only B logs the VM from now on.
    prints(&vm, &mut on_b, b"after\r\n").await;
    tokio::time::sleep(Duration::from_millis(LEASE_MS)).await;
    b.wait_site("vm-00062", "b").await;
    a.wait_site("vm-00062", "b").await;
    wait_file(&b.log_path("vm-00062"), b"on b\r\nafter\r\n").await;
    assert_eq!(a.log("vm-00062"), b"before\r\n");
    let metrics = a.metrics().await;
    assert!(metrics.contains("vspc_ports_held 0\n"), "{metrics}");
    on_b.send(b"typed on b").await;
    vm.wait_received(b"typed on b").await;
}
