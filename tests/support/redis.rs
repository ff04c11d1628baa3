//! A `redis-server` of a test's own (the shared-state tests).

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::WAIT;

/// `redis-server` on `addr`, not persisting anything (`None` if it cannot be run).
fn spawn(addr: SocketAddr) -> Option<std::process::Child> {
    std::process::Command::new("redis-server")
        .args(["--port", &addr.port().to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .ok()
}

/// A `redis-server` of the test's own on a free loopback port; killed when dropped.
pub struct Redis {
    child: std::process::Child,
    addr: SocketAddr,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Redis {
    /// `None` (the test says it skipped) only when `redis-server` is not installed.
    pub async fn start() -> Option<Redis> {
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let redis = Redis {
            child: spawn(addr)?,
            addr,
        };
        redis.wait_up().await;
        Some(redis)
    }

    /// Kills the server (SIGKILL: nothing saved); the store is unreachable until
    /// [`restart`](Self::restart).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts an empty server again on the same port (after [`kill`](Self::kill)), as a
    /// restarted store without persistence comes back.
    pub async fn restart(&mut self) {
        self.kill();
        self.child = spawn(self.addr).expect("redis-server runs again");
        self.wait_up().await;
    }

    async fn wait_up(&self) {
        let deadline = Instant::now() + WAIT;
        while self.command(&["PING"]).await.as_deref() != Some("+PONG") {
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn url(&self) -> String {
        format!("redis://{}/0", self.addr)
    }

    /// One command in RESP; the reply's first line (`None` if unreachable).
    pub async fn command(&self, args: &[&str]) -> Option<String> {
        let mut stream = TcpStream::connect(self.addr).await.ok()?;
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut reply = vec![0u8; 4096];
        let n = tokio::time::timeout(WAIT, stream.read(&mut reply))
            .await
            .ok()?
            .ok()?;
        let text = String::from_utf8_lossy(&reply[..n]).into_owned();
        Some(text.lines().next().unwrap_or_default().to_owned())
    }
}
