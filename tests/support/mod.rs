//! Test helpers over real loopback sockets: emulated VMs (vspc-emulator's tokio driver, with
//! what each VM's clients sent collected for assertions); the clients come from the
//! workspace's test kit.
#![allow(dead_code, unreachable_pub, clippy::disallowed_methods)] // each test binary uses part of it; IO layer

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
pub use vspc_emulator::driver::Target;
use vspc_emulator::driver::{self, EventKind, Vm};
use vspc_emulator::{EmulatedVm, EmulatorConfig, EmulatorEvent, VmotionOutcome};
#[allow(unused_imports)] // each test binary uses part of the kit
pub use vspc_testkit::{
    find,
    net::{http_get, RawClient, TestClient, WAIT},
};

pub mod cdp;
pub mod redis;
pub mod typing;
pub mod vip;
pub mod web;

/// A test VM: numbered identity (`vm-0000n`), no COM-PORT offer, a large record of what its
/// clients send.
pub fn vm_config(n: u64) -> EmulatorConfig {
    let mut config = EmulatorConfig::new(vspc_emulator::VmIdentity::numbered(n));
    config.port.com_port_delay = None;
    config.max_recorded = 1 << 20;
    config
}

/// Waits (bounded) until the proxy lists a VM named `name`.
pub async fn identified(proxy: &vspc_server::Server, name: &str) {
    wait_snapshot(name, || proxy.snapshot(), |s| has_vm(s, name)).await;
}

/// `Target::plain(addr)`: a `telnet://` target.
pub trait PlainTarget {
    /// The `telnet://addr` target.
    fn plain(addr: SocketAddr) -> Target;
}

impl PlainTarget for Target {
    fn plain(addr: SocketAddr) -> Target {
        Target::new(
            format!("telnet://{addr}")
                .parse()
                .expect("a telnet proxyURI"),
        )
        .expect("a telnet target")
    }
}

/// What the driver reported.
#[derive(Default)]
pub struct Seen {
    /// Client bytes the VM received, in order, across all its connections.
    pub received: Vec<u8>,
    pub events: Vec<EmulatorEvent>,
}

/// One emulated VM over tokio sockets (the crate's driver), with its events collected.
pub struct TestVm {
    vm: Vm,
    seen: Arc<Mutex<Seen>>,
    collector: JoinHandle<()>,
}

impl Drop for TestVm {
    fn drop(&mut self) {
        self.collector.abort();
    }
}

impl TestVm {
    /// Powers the VM on.
    pub fn start(config: EmulatorConfig, target: Target) -> TestVm {
        let (vm, mut events) = driver::spawn(config, target);
        let seen = Arc::new(Mutex::new(Seen::default()));
        let collected = seen.clone();
        let collector = tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                if let EventKind::Emulator(event) = event.kind {
                    let mut seen = collected.lock().unwrap();
                    if let EmulatorEvent::ClientData { bytes, .. } = &event {
                        seen.received.extend_from_slice(bytes);
                    }
                    seen.events.push(event);
                }
            }
        });
        TestVm {
            vm,
            seen,
            collector,
        }
    }

    /// Runs a command on the VM, then lets the driver move its transmits.
    pub fn with<R>(&self, f: impl FnOnce(&mut EmulatedVm, Instant) -> R) -> R {
        self.vm.with(f)
    }

    pub fn seen<R>(&self, f: impl FnOnce(&Seen) -> R) -> R {
        f(&self.seen.lock().unwrap())
    }

    pub fn received(&self) -> Vec<u8> {
        self.seen(|s| s.received.clone())
    }

    /// Waits (bounded) until `cond` holds.
    pub async fn wait(&self, what: &str, cond: impl Fn(&EmulatedVm, &Seen) -> bool) {
        let deadline = Instant::now() + WAIT;
        loop {
            if self.vm.with(|vm, _| cond(vm, &self.seen.lock().unwrap())) {
                return;
            }
            if Instant::now() > deadline {
                let seen = self.seen.lock().unwrap();
                panic!(
                    "timed out waiting for {what}; received {:?}; events {:?}",
                    String::from_utf8_lossy(&seen.received),
                    seen.events
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits until a vMotion the VM started ended, and says how (the latest one).
    pub async fn vmotion_outcome(&self) -> VmotionOutcome {
        let latest = |seen: &Seen| {
            seen.events.iter().rev().find_map(|e| match e {
                EmulatorEvent::Vmotion(outcome) => Some(outcome.clone()),
                _ => None,
            })
        };
        self.wait("the vMotion's end", |_, seen| latest(seen).is_some())
            .await;
        latest(&self.seen.lock().unwrap()).expect("an outcome")
    }

    /// Waits until the VM received exactly `expected` (fails at once on a wrong prefix).
    pub async fn wait_received(&self, expected: &[u8]) {
        self.wait("client bytes at the VM", |_, seen| {
            let got = &seen.received;
            assert!(
                expected.starts_with(got),
                "VM received {:?}, expected {:?}",
                String::from_utf8_lossy(got),
                String::from_utf8_lossy(expected)
            );
            got.len() == expected.len()
        })
        .await;
    }
}

/// Waits (bounded) for a condition on the proxy's admin snapshot.
pub async fn wait_snapshot(
    what: &str,
    snapshot: impl Fn() -> serde_json::Value,
    cond: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let value = snapshot();
        if cond(&value) {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {value:#}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The VM entries of a snapshot.
pub fn vms(snapshot: &serde_json::Value) -> Vec<serde_json::Value> {
    snapshot["vms"].as_array().cloned().unwrap_or_default()
}

/// Whether a VM entry with `name` is connected and named.
pub fn has_vm(snapshot: &serde_json::Value, name: &str) -> bool {
    vms(snapshot)
        .iter()
        .any(|v| v["name"] == name && v["state"] == "connected")
}

/// The example binary: cargo says where it is (building it first if needed; `cargo test`
/// already built it, with the README's flags, so this is normally a no-op).
pub fn example_binary(name: &str) -> std::path::PathBuf {
    // Once per example and test process: each cargo run costs seconds on a busy machine.
    static BUILT: Mutex<Vec<(String, std::path::PathBuf)>> = Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, path)) = built.iter().find(|(n, _)| n == name) {
        return path.clone();
    }
    let path = build_example(name);
    built.push((name.to_owned(), path.clone()));
    path
}

fn build_example(name: &str) -> std::path::PathBuf {
    let output = std::process::Command::new(env!("CARGO"))
        .args(["build", "--workspace", "--all-features", "--example", name])
        .args(["--message-format=json-render-diagnostics", "--quiet"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("cargo runs");
    assert!(
        output.status.success(),
        "cargo build --example {name} failed"
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| {
            message["reason"] == "compiler-artifact"
                && message["target"]["name"] == name
                && message["target"]["kind"][0] == "example"
        })
        .find_map(|message| message["executable"].as_str().map(std::path::PathBuf::from))
        .unwrap_or_else(|| panic!("cargo did not report the example's executable: {stdout}"))
}

/// Waits (bounded) until `path` holds exactly `expected`.
pub async fn wait_file(path: &std::path::Path, expected: &[u8]) {
    let deadline = Instant::now() + WAIT;
    loop {
        let got = std::fs::read(path).unwrap_or_default();
        if got == expected {
            return;
        }
        assert!(
            expected.starts_with(&got),
            "{} holds {:?}, expected {:?}",
            path.display(),
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(expected)
        );
        assert!(
            Instant::now() < deadline,
            "timed out on {}: {:?}",
            path.display(),
            String::from_utf8_lossy(&got)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A fresh scratch directory for one test.
pub fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("vspc-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Sends signal `name` (`TERM`, `HUP`, `KILL`) to a process.
pub fn signal(pid: u32, name: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

/// An example binary's start-up lines on stdout.
pub type StartupLines = tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>;

/// Reads start-up lines (bounded) until one starts with `prefix`; returns the rest of it.
pub async fn line_after(lines: &mut StartupLines, prefix: &str) -> String {
    loop {
        let line = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .expect("start-up line in time")
            .expect("stdout readable")
            .expect("start-up lines");
        if let Some(rest) = line.strip_prefix(prefix) {
            return rest.to_owned();
        }
    }
}

/// The proxy example's client and admin addresses, from its start-up lines (after the VM
/// listeners').
pub async fn clients_and_admin(lines: &mut StartupLines) -> (SocketAddr, SocketAddr) {
    let clients = line_after(lines, "clients telnet ").await.parse().unwrap();
    let admin = line_after(lines, "admin http://").await;
    let admin = admin.split_once('/').unwrap().0.parse().unwrap();
    (clients, admin)
}

/// The proxy example on ephemeral loopback ports, no admin listener, console logs named
/// `{name}.log` in `log_dir`, its start-up lines on a piped stdout: set stderr, then spawn.
pub fn proxy_example(log_dir: &std::path::Path, log_level: &str) -> tokio::process::Command {
    let mut command = proxy_command(log_dir, log_level);
    command.arg("--no-admin");
    command
}

/// [`proxy_example`] with its admin listener on an ephemeral loopback port (its start-up line
/// `admin http://ADDR/vms ...`).
pub fn proxy_example_with_admin(
    log_dir: &std::path::Path,
    log_level: &str,
) -> tokio::process::Command {
    let mut command = proxy_command(log_dir, log_level);
    command.args(["--admin-listen", "127.0.0.1:0"]);
    command
}

fn proxy_command(log_dir: &std::path::Path, log_level: &str) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(example_binary("proxy"));
    command
        .args(["--listen", "127.0.0.1:0", "--client-listen", "127.0.0.1:0"])
        .args(["--log-name", "{name}.log", "--log-level", log_level])
        .arg("--log-dir")
        .arg(log_dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true);
    command
}
