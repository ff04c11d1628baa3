//! A `redis-server` of the bench's own, and the commands the instances sent it
//! (`examples/cluster_scale.rs`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Child;

use crate::support::WAIT;

/// A `redis-server` of our own on a free loopback port, without persistence; killed when
/// dropped.
pub(crate) struct Redis {
    _process: Child,
    pub(crate) addr: SocketAddr,
}

impl Redis {
    pub(crate) async fn start(binary: &std::path::Path) -> Result<Redis, String> {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let addr = probe.local_addr().map_err(|e| e.to_string())?;
        drop(probe);
        let redis = Redis {
            _process: tokio::process::Command::new(binary)
                .arg("--port")
                .arg(addr.port().to_string())
                .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .stdout(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| format!("cannot run {}: {e}", binary.display()))?,
            addr,
        };
        let deadline = Instant::now() + WAIT;
        while redis.command("PING").await.as_deref() != Some(b"+PONG".as_slice()) {
            if Instant::now() > deadline {
                return Err("redis-server did not answer PING".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(redis)
    }

    /// An inline command; its reply (a simple string's line, or a bulk string's payload).
    async fn command(&self, command: &str) -> Option<Vec<u8>> {
        let run = async {
            let mut stream = TcpStream::connect(self.addr).await.ok()?;
            stream
                .write_all(format!("{command}\r\n").as_bytes())
                .await
                .ok()?;
            let mut reply = Vec::new();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let len = stream.read(&mut buf).await.ok()?;
                if len == 0 {
                    return None;
                }
                reply.extend_from_slice(&buf[..len]);
                let Some(eol) = reply.windows(2).position(|w| w == b"\r\n") else {
                    continue;
                };
                if reply[0] != b'$' {
                    reply.truncate(eol);
                    return Some(reply);
                }
                let size: usize = std::str::from_utf8(&reply[1..eol]).ok()?.parse().ok()?;
                if reply.len() >= eol + 2 + size {
                    return Some(reply[eol + 2..eol + 2 + size].to_vec());
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), run)
            .await
            .ok()
            .flatten()
    }

    /// Calls so far of each command (`INFO commandstats`), by name.
    pub(crate) async fn calls(&self) -> Result<Calls, String> {
        let text = self
            .command("INFO commandstats")
            .await
            .ok_or("Redis did not answer INFO")?;
        Ok(String::from_utf8_lossy(&text)
            .lines()
            .filter_map(|line| {
                let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(':')?;
                let calls = stats.split(',').find_map(|s| s.strip_prefix("calls="))?;
                Some((name.to_uppercase(), calls.parse().ok()?))
            })
            .collect())
    }
}

/// Calls of each Redis command.
pub(crate) type Calls = BTreeMap<String, u64>;

/// The commands from `before` to `after`, without this program's own `INFO` (`before`'s).
pub(crate) fn delta(before: &Calls, after: &Calls) -> Calls {
    let mut delta: Calls = after
        .iter()
        .map(|(name, &n)| (name.clone(), n - before.get(name).copied().unwrap_or(0)))
        .collect();
    if let Some(info) = delta.get_mut("INFO") {
        *info = info.saturating_sub(1);
    }
    delta.retain(|_, n| *n > 0);
    delta
}

/// `total (NAME x, ...)`, each divided by `per`.
pub(crate) fn per(calls: &Calls, per: f64) -> String {
    if calls.is_empty() {
        return "0".into();
    }
    let total: u64 = calls.values().sum();
    let figure = |n: u64| match n as f64 / per {
        x if x >= 100.0 => format!("{x:.0}"),
        x => format!("{x:.2}"),
    };
    let each: Vec<String> = calls
        .iter()
        .map(|(name, &n)| format!("{name} {}", figure(n)))
        .collect();
    format!("{} ({})", figure(total), each.join(", "))
}
