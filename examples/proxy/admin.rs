//! The admin listener: `GET /vms` (JSON listing) and `GET /metrics` (Prometheus text).
//!
//! A deliberately small HTTP/1.1 responder: one request per connection, GET only, bounded
//! request head, bounded time. It is unauthenticated: keep it on loopback.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Shared;

const MAX_HEAD: usize = 8 * 1024;
const TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) async fn serve_admin(shared: Arc<Shared>, mut stream: TcpStream) {
    let _ = tokio::time::timeout(TIMEOUT, async {
        let mut head = Vec::with_capacity(1024);
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.ends_with(b"\n\n") {
            let n = stream.read(&mut buf).await?;
            if n == 0 || head.len() + n > MAX_HEAD {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
        let line = String::from_utf8_lossy(line);
        let mut parts = line.split_whitespace();
        let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let (status, content_type, body) = match (method, path) {
            ("GET", "/vms") => {
                let snapshot = shared.lock().snapshot();
                let body = serde_json::to_string_pretty(&snapshot).unwrap_or_default();
                ("200 OK", "application/json", body + "\n")
            }
            ("GET", "/metrics") => {
                let text = shared.lock().metrics_text();
                ("200 OK", "text/plain; version=0.0.4", text)
            }
            ("GET", _) => ("404 Not Found", "text/plain", "try /vms or /metrics\n".to_owned()),
            _ => ("405 Method Not Allowed", "text/plain", "GET only\n".to_owned()),
        };
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}
