//! SSH beside telnet, on the example proxy in a child process: attach latency (connect to
//! the first console byte), throughput of one client, and the proxy's memory per idle SSH
//! session. One emulated VM (vspc-emulator's tokio driver) provides the console.
//!
//! ```text
//! cargo build --release --examples
//! target/release/examples/ssh_bench --samples 50 --stream-secs 3 --sessions 1000
//! ```
//!
//! - attach: SSH is TCP connect, key exchange, public-key authentication, session, pty and
//!   shell, then the banner and the first scrollback byte (an in-process russh client);
//!   telnet is TCP connect and the selection line, then the same bytes.
//! - stream: a VM writes as fast as the proxy takes it; one client reads for
//!   `--stream-secs` after its first MiB (the proxy paces the VM to its client).
//! - memory: the proxy's VmRSS growth from none to `--sessions` idle SSH sessions attached to
//!   the VM, divided by their number.
#![forbid(unsafe_code)]
#![allow(clippy::disallowed_methods)] // a benchmark reads the clock

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use vspc_emulator::driver::{Spawner, Target, Vm};
use vspc_emulator::{EmulatorConfig, OutputConfig, Pattern, Rate, VmIdentity};

#[derive(Debug, Parser)]
#[command(
    name = "ssh_bench",
    about = "SSH beside telnet: attach latency, throughput, memory"
)]
struct Cli {
    /// Attach samples per transport.
    #[arg(long, default_value_t = 50)]
    samples: usize,
    /// Seconds each stream is read.
    #[arg(long, default_value_t = 3.0)]
    stream_secs: f64,
    /// Idle SSH sessions for the memory figure.
    #[arg(long, default_value_t = 1000)]
    sessions: usize,
}

/// What a client reads on attaching to VM `n` read-write, before the console's bytes.
fn banner(n: u64) -> usize {
    format!("\r\n[vspc: attached to vm-{n:05} (rw)]\r\n").len()
}

struct Trusting;

impl russh::client::Handler for Trusting {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        _key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

type Session = (
    russh::client::Handle<Trusting>,
    russh::Channel<russh::client::Msg>,
);

async fn ssh_attach(addr: SocketAddr, key: &Arc<PrivateKey>, login: &str) -> Session {
    let config = Arc::new(russh::client::Config::default());
    let mut session = russh::client::connect(config, addr, Trusting)
        .await
        .expect("ssh connect");
    let auth = session
        .authenticate_publickey(login, PrivateKeyWithHashAlg::new(key.clone(), None))
        .await
        .expect("auth");
    assert!(auth.success(), "key refused");
    let channel = session.channel_open_session().await.expect("session");
    channel
        .request_pty(false, "xterm", 80, 24, 0, 0, &[])
        .await
        .expect("pty");
    channel.request_shell(false).await.expect("shell");
    (session, channel)
}

/// Reads the channel until `want` bytes came; the time of the first.
async fn ssh_read(channel: &mut russh::Channel<russh::client::Msg>, want: usize) -> Instant {
    let (mut got, mut first) = (0, None);
    while got < want {
        match channel.wait().await {
            Some(russh::ChannelMsg::Data { data }) => {
                first.get_or_insert_with(Instant::now);
                got += data.len();
            }
            Some(_) => {}
            None => panic!("session closed after {got} of {want} bytes"),
        }
    }
    first.unwrap_or_else(Instant::now)
}

/// Reads a telnet client's socket until `want` data bytes came (the stream holds no 0xFF,
/// so only the proxy's 15 bytes of negotiation are not data); the time of the first.
async fn telnet_read(stream: &mut TcpStream, want: usize) -> Instant {
    let mut buf = vec![0u8; 256 * 1024];
    let (mut got, mut first) = (0, None);
    while got < want + 15 {
        let n = stream.read(&mut buf).await.expect("read");
        assert!(n > 0, "closed after {got} bytes");
        first.get_or_insert_with(Instant::now);
        got += n;
    }
    first.unwrap_or_else(Instant::now)
}

async fn telnet_attach(addr: SocketAddr, n: u64) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let line = format!("vm-{n:05}\r\n");
    stream.write_all(line.as_bytes()).await.expect("select");
    stream
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at].as_secs_f64() * 1000.0
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The proxy example beside this binary, with the SSH listener on; its addresses.
fn start_proxy(
    dir: &std::path::Path,
    sessions: usize,
) -> (Child, SocketAddr, SocketAddr, SocketAddr) {
    let exe = std::env::current_exe().expect("own path");
    let proxy: PathBuf = exe.with_file_name("proxy");
    let config = dir.join("proxy.toml");
    std::fs::write(
        &config,
        format!(
            "[vm]\nlisten = [\"127.0.0.1:0\"]\n[client]\nlisten = \"127.0.0.1:0\"\nmax_clients = {}\n\
             [admin]\n[ssh]\nlisten = \"127.0.0.1:0\"\nhost_key = {:?}\nauthorized_keys = {:?}\n",
            sessions + 100,
            dir.join("host_key"),
            dir.join("authorized_keys"),
        ),
    )
    .expect("config");
    let mut child = Command::new(&proxy)
        .arg("--config")
        .arg(&config)
        .args(["--no-admin", "--log-level", "warn"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (cargo build --release --examples)",
                proxy.display()
            )
        });
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let (mut vm, mut telnet, mut ssh) = (None, None, None);
    while vm.is_none() || telnet.is_none() || ssh.is_none() {
        let line = lines.next().expect("start-up line").expect("stdout");
        let word = |prefix: &str| {
            line.strip_prefix(prefix)
                .and_then(|rest| rest.split_whitespace().next()?.parse::<SocketAddr>().ok())
        };
        vm = vm.or(word("vm telnet://"));
        telnet = telnet.or(word("clients telnet "));
        ssh = ssh.or(word("clients ssh "));
    }
    (child, vm.unwrap(), telnet.unwrap(), ssh.unwrap())
}

/// Powers on VM `n` with `output` (each phase has its own VM; it runs while kept).
fn start_vm(vm_addr: SocketAddr, n: u64, output: OutputConfig) -> Vm {
    let mut config = EmulatorConfig::new(VmIdentity::numbered(n));
    config.port.com_port_delay = None;
    config.output = Some(output);
    let uri = format!("telnet://{vm_addr}").parse().expect("uri");
    Spawner::new(Target::new(uri).expect("target")).spawn(n, config)
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let dir = std::env::temp_dir().join(format!("vspc-ssh-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    // A fixed key: a benchmark needs no secret.
    let key = Arc::new(PrivateKey::from(Ed25519Keypair::from_seed(&[7; 32])));
    let public = key.public_key().to_openssh().expect("public key");
    std::fs::write(
        dir.join("authorized_keys"),
        format!("console=\"*:all\" {public} bench\n"),
    )
    .expect("authorized_keys");
    let (mut proxy, vm_addr, telnet_addr, ssh_addr) = start_proxy(&dir, cli.sessions);
    let pid = proxy.id();

    // The console: one line of scrollback, then quiet.
    let line = b"ready 00000000\r\n".len();
    let quiet = |tag: &[u8]| OutputConfig {
        pattern: Pattern::Lines { tag: tag.to_vec() },
        rate: Rate::new(line, Duration::from_millis(1)),
        limit: Some(line as u64),
    };
    let mut vms = vec![start_vm(vm_addr, 1, quiet(b"ready"))];
    tokio::time::sleep(Duration::from_millis(500)).await;

    println!(
        "attach latency, connect to first console byte ({} samples each):",
        cli.samples
    );
    for transport in ["telnet", "ssh"] {
        let mut times = Vec::new();
        for _ in 0..cli.samples {
            let start = Instant::now();
            if transport == "ssh" {
                let (session, mut channel) = ssh_attach(ssh_addr, &key, "vm-00001").await;
                ssh_read(&mut channel, banner(1) + 1).await;
                times.push(start.elapsed());
                drop((session, channel));
            } else {
                let mut stream = telnet_attach(telnet_addr, 1).await;
                telnet_read(&mut stream, banner(1) + 1).await;
                times.push(start.elapsed());
            }
        }
        times.sort();
        println!(
            "  {transport:<6} p50 {:.2} ms  p99 {:.2} ms",
            percentile(&times, 0.5),
            percentile(&times, 0.99)
        );
    }

    // The stream: a VM of its own per transport writes as fast as the proxy takes it (the
    // proxy paces it to its client); one client reads for `--stream-secs`.
    let window = Duration::from_secs_f64(cli.stream_secs);
    println!("stream to one client ({:.1} s each):", cli.stream_secs);
    for (n, transport) in [(2, "telnet"), (3, "ssh")] {
        vms.push(start_vm(
            vm_addr,
            n,
            OutputConfig {
                pattern: Pattern::Lines {
                    tag: b"stream".to_vec(),
                },
                rate: Rate::new(64 * 1024, Duration::from_millis(1)),
                limit: None,
            },
        ));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let got = if transport == "ssh" {
            let login = format!("vm-{n:05}");
            let (_session, mut channel) = ssh_attach(ssh_addr, &key, &login).await;
            ssh_read(&mut channel, 1 << 20).await;
            let start = Instant::now();
            let mut got = 0;
            while start.elapsed() < window {
                if let Some(russh::ChannelMsg::Data { data }) = channel.wait().await {
                    got += data.len();
                }
            }
            got as f64 / start.elapsed().as_secs_f64()
        } else {
            let mut stream = telnet_attach(telnet_addr, n).await;
            telnet_read(&mut stream, 1 << 20).await;
            let mut buf = vec![0u8; 256 * 1024];
            let start = Instant::now();
            let mut got = 0;
            while start.elapsed() < window {
                got += stream.read(&mut buf).await.expect("read");
            }
            got as f64 / start.elapsed().as_secs_f64()
        };
        println!("  {transport:<6} {:.0} MB/s", got / 1e6);
    }

    // Memory: idle SSH sessions attached read-only.
    vms.push(start_vm(vm_addr, 4, quiet(b"idle")));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(pid);
    let mut sessions = Vec::new();
    let mut opening = tokio::task::JoinSet::new();
    for i in 0..cli.sessions {
        let key = key.clone();
        opening.spawn(async move {
            let (session, mut channel) = ssh_attach(ssh_addr, &key, "vm-00004+ro").await;
            channel.wait().await;
            (i, session, channel)
        });
        if opening.len() >= 64 {
            sessions.push(opening.join_next().await.expect("task").expect("session"));
        }
    }
    while let Some(done) = opening.join_next().await {
        sessions.push(done.expect("session"));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(pid);
    println!(
        "memory: {} idle SSH sessions, proxy VmRSS {} -> {} KiB: {:.1} KiB per session",
        sessions.len(),
        before,
        after,
        (after.saturating_sub(before)) as f64 / sessions.len() as f64
    );
    drop(sessions);
    drop(vms);
    let _ = proxy.kill();
    let _ = proxy.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
