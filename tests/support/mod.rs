//! Test drivers over real loopback sockets: emulated VMs (vspc-emulator's sans-IO
//! `EmulatedVm`, driven by a small tokio driver here, since the crate's own tokio driver is
//! not in yet) and telnet clients.
#![allow(dead_code, unreachable_pub, clippy::disallowed_methods)] // each test binary uses part of it; IO layer

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use vspc_emulator::{ConnId, EmulatedVm, EmulatorConfig, EmulatorEvent, Transmit};
use vspc_proto::vspc_telnet::{encode_data, option, Policy, Telnet, TelnetConfig, TelnetEvent};

/// Every wait in the tests is bounded by this.
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

pub const WAIT: Duration = Duration::from_secs(10);

/// Where emulated VMs connect.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub tls: Option<tokio_rustls::TlsConnector>,
}

impl Target {
    pub fn plain(addr: SocketAddr) -> Target {
        Target { addr, tls: None }
    }
}

enum Cmd {
    Write(Bytes),
    Close,
}

/// What the driver collected.
#[derive(Default)]
pub struct Seen {
    /// Client bytes the VM received, in order, across all its connections.
    pub received: Vec<u8>,
    pub events: Vec<EmulatorEvent>,
}

struct Inner {
    vm: EmulatedVm,
    conns: HashMap<ConnId, mpsc::UnboundedSender<Cmd>>,
    seen: Seen,
}

/// One emulated VM over tokio sockets.
pub struct TestVm {
    inner: Arc<Mutex<Inner>>,
    kick: Arc<Notify>,
    task: JoinHandle<()>,
}

impl Drop for TestVm {
    fn drop(&mut self) {
        self.task.abort();
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        for tx in inner.conns.values() {
            let _ = tx.send(Cmd::Close);
        }
    }
}

impl TestVm {
    /// Starts the driver and powers the VM on.
    pub fn start(config: EmulatorConfig, target: Target) -> TestVm {
        let inner = Arc::new(Mutex::new(Inner {
            vm: EmulatedVm::new(config),
            conns: HashMap::new(),
            seen: Seen::default(),
        }));
        let kick = Arc::new(Notify::new());
        let task = tokio::spawn(drive(inner.clone(), kick.clone(), target));
        let vm = TestVm { inner, kick, task };
        vm.with(|vm, now| vm.power_on(now));
        vm
    }

    /// Runs a command on the VM, then lets the driver move its transmits.
    pub fn with<R>(&self, f: impl FnOnce(&mut EmulatedVm, Instant) -> R) -> R {
        let result = {
            let mut inner = self.inner.lock().unwrap();
            f(&mut inner.vm, Instant::now())
        };
        self.kick.notify_one();
        result
    }

    pub fn seen<R>(&self, f: impl FnOnce(&Seen) -> R) -> R {
        f(&self.inner.lock().unwrap().seen)
    }

    pub fn received(&self) -> Vec<u8> {
        self.seen(|s| s.received.clone())
    }

    /// Waits (bounded) until `cond` holds.
    pub async fn wait(&self, what: &str, cond: impl Fn(&EmulatedVm, &Seen) -> bool) {
        let deadline = Instant::now() + WAIT;
        loop {
            {
                let inner = self.inner.lock().unwrap();
                if cond(&inner.vm, &inner.seen) {
                    return;
                }
                if Instant::now() > deadline {
                    panic!(
                        "timed out waiting for {what}; received {:?}; events {:?}",
                        String::from_utf8_lossy(&inner.seen.received),
                        inner.seen.events
                    );
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
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

async fn drive(inner: Arc<Mutex<Inner>>, kick: Arc<Notify>, target: Target) {
    loop {
        let next = {
            let mut guard = inner.lock().unwrap();
            let now = Instant::now();
            if guard.vm.poll_timeout().is_some_and(|t| t <= now) {
                guard.vm.handle_timeout(now);
            }
            let Inner { vm, conns, seen } = &mut *guard;
            while let Some(transmit) = vm.poll_transmit() {
                match transmit {
                    Transmit::Open { conn } => {
                        let (tx, rx) = mpsc::unbounded_channel();
                        conns.insert(conn, tx);
                        tokio::spawn(connection(
                            inner.clone(),
                            kick.clone(),
                            target.clone(),
                            conn,
                            rx,
                        ));
                    }
                    Transmit::Write { conn, bytes } => {
                        if let Some(tx) = conns.get(&conn) {
                            let _ = tx.send(Cmd::Write(bytes));
                        }
                    }
                    Transmit::Close { conn } => {
                        if let Some(tx) = conns.remove(&conn) {
                            let _ = tx.send(Cmd::Close);
                        }
                    }
                }
            }
            while let Some(event) = vm.poll_event() {
                if let EmulatorEvent::ClientData { bytes, .. } = &event {
                    seen.received.extend_from_slice(bytes);
                }
                seen.events.push(event);
            }
            vm.poll_timeout()
        };
        let sleep = next
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(1))
            .min(Instant::now() + Duration::from_secs(1));
        tokio::select! {
            _ = tokio::time::sleep_until(sleep.into()) => {}
            _ = kick.notified() => {}
        }
    }
}

async fn connection(
    inner: Arc<Mutex<Inner>>,
    kick: Arc<Notify>,
    target: Target,
    conn: ConnId,
    rx: mpsc::UnboundedReceiver<Cmd>,
) {
    let closed = |inner: &Arc<Mutex<Inner>>| {
        inner.lock().unwrap().vm.handle_closed(Instant::now(), conn);
        kick.notify_one();
    };
    let tcp = match TcpStream::connect(target.addr).await {
        Ok(tcp) => tcp,
        Err(_) => return closed(&inner),
    };
    let _ = tcp.set_nodelay(true);
    match &target.tls {
        None => pump(inner, kick.clone(), conn, tcp, rx).await,
        Some(connector) => {
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            match connector.connect(name, tcp).await {
                Ok(tls) => pump(inner, kick.clone(), conn, tls, rx).await,
                Err(_) => closed(&inner),
            }
        }
    }
}

async fn pump<S>(
    inner: Arc<Mutex<Inner>>,
    kick: Arc<Notify>,
    conn: ConnId,
    stream: S,
    mut rx: mpsc::UnboundedReceiver<Cmd>,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let reader_inner = inner.clone();
    let reader_kick = kick.clone();
    let reader_task = tokio::spawn(async move {
        let mut buf = vec![0u8; 16384];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    reader_inner
                        .lock()
                        .unwrap()
                        .vm
                        .handle_input(Instant::now(), conn, &buf[..n]);
                    reader_kick.notify_one();
                }
            }
        }
        reader_inner
            .lock()
            .unwrap()
            .vm
            .handle_closed(Instant::now(), conn);
        reader_kick.notify_one();
    });
    while let Some(cmd) = rx.recv().await {
        match cmd {
            Cmd::Write(bytes) => {
                if writer.write_all(&bytes).await.is_err() {
                    break;
                }
            }
            Cmd::Close => break,
        }
    }
    let _ = writer.shutdown().await;
    // After our FIN the emulator has forgotten the connection; drop the read side too.
    reader_task.abort();
}

/// A telnet client (what a person's `telnet` does, minus the terminal).
pub struct TestClient {
    stream: TcpStream,
    telnet: Telnet,
    /// Decoded data received so far.
    pub data: Vec<u8>,
    consumed: Vec<u8>,
    pub closed: bool,
}

impl TestClient {
    pub async fn connect(addr: SocketAddr) -> TestClient {
        let stream = tokio::time::timeout(WAIT, TcpStream::connect(addr))
            .await
            .expect("connect timeout")
            .expect("connect");
        TestClient::from_stream(stream)
    }

    pub fn from_stream(stream: TcpStream) -> TestClient {
        let policy = Policy::new()
            .accept_both(option::BINARY)
            .accept_both(option::SGA)
            .accept_remote(option::ECHO);
        TestClient {
            stream,
            telnet: Telnet::new(TelnetConfig {
                policy,
                ..TelnetConfig::default()
            }),
            data: Vec::new(),
            consumed: Vec::new(),
            closed: false,
        }
    }

    /// One read (bounded); false on EOF.
    async fn read_once(&mut self, limit: Duration) -> bool {
        let mut buf = vec![0u8; 16384];
        match tokio::time::timeout(limit, self.stream.read(&mut buf)).await {
            Err(_) => true,
            Ok(Ok(0)) | Ok(Err(_)) => {
                self.closed = true;
                false
            }
            Ok(Ok(n)) => {
                let mut input = &buf[..n];
                while let Some(event) = self.telnet.next_event(&mut input) {
                    if let TelnetEvent::Data(bytes) = event {
                        self.data.extend_from_slice(bytes);
                    }
                }
                if let Some(reply) = self.telnet.poll_transmit() {
                    let _ = self.stream.write_all(&reply).await;
                }
                true
            }
        }
    }

    /// What `expect` consumed last (up to and including its needle).
    pub fn menu_seen(&self) -> Vec<u8> {
        self.consumed.clone()
    }

    /// Reads until the data contains `needle`; returns the data after it and keeps only that.
    pub async fn expect(&mut self, needle: &[u8]) -> Vec<u8> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(at) = find(&self.data, needle) {
                let rest = self.data.split_off(at + needle.len());
                self.consumed = std::mem::take(&mut self.data);
                self.data = rest.clone();
                return rest;
            }
            assert!(
                !self.closed,
                "closed before {:?}; got {:?}",
                String::from_utf8_lossy(needle),
                String::from_utf8_lossy(&self.data)
            );
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {:?}; got {:?}",
                String::from_utf8_lossy(needle),
                String::from_utf8_lossy(&self.data)
            );
            self.read_once(Duration::from_millis(50)).await;
        }
    }

    /// Reads until exactly `expected` has arrived (fails at once on a wrong prefix).
    pub async fn expect_exact(&mut self, expected: &[u8]) {
        let deadline = Instant::now() + WAIT;
        let mut checked = 0;
        loop {
            let upto = self.data.len().min(expected.len());
            if let Some(at) = (checked..upto).find(|&i| self.data[i] != expected[i]) {
                let from = at.saturating_sub(16);
                panic!(
                    "client got {:?} at byte {at} of {}, expected {:?}",
                    String::from_utf8_lossy(&self.data[from..upto.min(at + 64)]),
                    expected.len(),
                    String::from_utf8_lossy(&expected[from..upto.min(at + 64)])
                );
            }
            checked = upto;
            if self.data.len() >= expected.len() {
                break;
            }
            assert!(!self.closed, "closed early");
            assert!(
                Instant::now() < deadline,
                "timed out; got {} bytes",
                self.data.len()
            );
            self.read_once(Duration::from_millis(50)).await;
        }
        assert_eq!(self.data.len(), expected.len(), "client got extra bytes");
        self.data.clear();
    }

    /// Reads whatever comes within `limit`.
    pub async fn drain(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline && !self.closed {
            self.read_once(Duration::from_millis(20)).await;
        }
    }

    /// Reads until the proxy closes the connection (bounded).
    pub async fn expect_closed(&mut self) {
        let deadline = Instant::now() + WAIT;
        while !self.closed {
            assert!(
                Instant::now() < deadline,
                "not closed; got {:?}",
                String::from_utf8_lossy(&self.data)
            );
            self.read_once(Duration::from_millis(50)).await;
        }
    }

    /// Sends data (0xFF doubled, nothing else touched: BINARY is negotiated).
    pub async fn send(&mut self, data: &[u8]) {
        let mut out = Vec::new();
        encode_data(data, true, &mut out);
        self.stream.write_all(&out).await.expect("client write");
    }

    /// Sends bytes exactly as given (telnet commands included).
    pub async fn send_raw(&mut self, wire: &[u8]) {
        self.stream.write_all(wire).await.expect("client write");
    }

    /// Selects a VM and waits for the attach banner; returns what followed it (scrollback).
    pub async fn select(&mut self, line: &str) -> Vec<u8> {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.expect(b")]\r\n").await
    }
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
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

/// The proxy example on ephemeral loopback ports, no admin listener, console logs named
/// `{name}.log` in `log_dir`, its start-up lines on a piped stdout: set stderr, then spawn.
pub fn proxy_example(log_dir: &std::path::Path, log_level: &str) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(example_binary("proxy"));
    command
        .args([
            "--listen",
            "127.0.0.1:0",
            "--client-listen",
            "127.0.0.1:0",
            "--no-admin",
        ])
        .args(["--log-name", "{name}.log", "--log-level", log_level])
        .arg("--log-dir")
        .arg(log_dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true);
    command
}
