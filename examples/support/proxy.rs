//! The concentrator under test: the example proxy in a child process, its memory and its
//! metrics (`examples/scale.rs`, `examples/cluster_scale.rs`).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A proxy process; SIGTERM (then SIGKILL) when dropped.
pub(crate) struct ProxyProc {
    child: Child,
    _stdout: BufReader<ChildStdout>,
    pub(crate) vm: SocketAddr,
    pub(crate) client: SocketAddr,
    pub(crate) admin: SocketAddr,
    config: PathBuf,
}

impl ProxyProc {
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ProxyProc {
    fn drop(&mut self) {
        // SIGTERM first (a graceful shutdown, which profilers wrapping the proxy need), then
        // SIGKILL after a bounded wait.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        for _ in 0..100 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
    }
}

/// Starts the proxy at `path` (default: `proxy` beside this program) on loopback ports of
/// its own; `extra` is appended to its configuration file.
pub(crate) fn spawn_proxy(
    path: Option<&Path>,
    log: &str,
    extra: &str,
) -> Result<ProxyProc, String> {
    static STARTED: AtomicU64 = AtomicU64::new(0);
    let path = match path {
        Some(path) => path.to_path_buf(),
        None => std::env::current_exe()
            .map_err(|e| e.to_string())?
            .with_file_name("proxy"),
    };
    let config = std::env::temp_dir().join(format!(
        "vspc-scale-{}-{}.toml",
        std::process::id(),
        STARTED.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(
        &config,
        format!(
            "[vm]\nlisten = [\"127.0.0.1:0\"]\nmax_connections = 100000\n\
             [client]\nlisten = \"127.0.0.1:0\"\nmax_clients = 10000\noutput_budget = 33554432\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n{extra}"
        ),
    )
    .map_err(|e| e.to_string())?;
    let mut child = Command::new(&path)
        .arg("--config")
        .arg(&config)
        .arg("--log-level")
        .arg(log)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| {
            format!(
                "cannot run {} ({e}); build it first: cargo build --release --examples",
                path.display()
            )
        })?;
    let mut stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
    let (mut vm, mut client, mut admin) = (None, None, None);
    for _ in 0..20 {
        let mut line = String::new();
        if stdout.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
            break;
        }
        let mut words = line.split_whitespace();
        let addr = |w: Option<&str>, prefix: &str, suffix: &str| {
            w.and_then(|w| w.strip_prefix(prefix))
                .map(|w| w.split(suffix).next().unwrap_or(w))
                .and_then(|w| w.parse::<SocketAddr>().ok())
        };
        match words.next() {
            Some("vm") => vm = vm.or(addr(words.next(), "telnet://", " ")),
            Some("clients") => client = addr(words.nth(1), "", " "),
            Some("admin") => admin = addr(words.next(), "http://", "/"),
            _ => {}
        }
        if vm.is_some() && client.is_some() && admin.is_some() {
            break;
        }
    }
    match (vm, client, admin) {
        (Some(vm), Some(client), Some(admin)) => Ok(ProxyProc {
            child,
            _stdout: stdout,
            vm,
            client,
            admin,
            config,
        }),
        _ => {
            let _ = child.kill();
            let _ = child.wait();
            Err("the proxy did not print its addresses".into())
        }
    }
}

/// A process's resident set, in bytes.
pub(crate) fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// One value of the proxy's Prometheus metrics.
pub(crate) async fn metric(admin: SocketAddr, name: &str) -> Option<u64> {
    let fetch = async {
        let mut stream = TcpStream::connect(admin).await.ok()?;
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .ok()?;
        let mut body = String::new();
        stream.read_to_string(&mut body).await.ok()?;
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    };
    tokio::time::timeout(Duration::from_secs(5), fetch)
        .await
        .ok()
        .flatten()
}

/// Percentile `p` (0..=1) of sorted durations, in milliseconds (NaN when there are none).
pub(crate) fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let at = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[at].as_secs_f64() * 1e3
}
