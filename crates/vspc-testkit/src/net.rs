//! Test clients over real tokio sockets, every wait bounded by [`WAIT`]: a telnet client
//! ([`TestClient`], what a person's `telnet` does minus the terminal), a raw byte client
//! ([`RawClient`], for a VM connection that never speaks telnet properly or a port that must
//! close) and a one-shot HTTP GET ([`http_get`]).
#![allow(clippy::disallowed_methods)] // the IO layer: real sockets and the real clock

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use vspc_proto::vspc_telnet::{encode_data, option, Policy, Telnet, TelnetConfig, TelnetEvent};

use crate::find;

/// Every wait of a test client is bounded by this.
pub const WAIT: Duration = Duration::from_secs(10);

/// A telnet client (what a person's `telnet` does, minus the terminal).
pub struct TestClient {
    stream: TcpStream,
    telnet: Telnet,
    /// Decoded data received and not yet consumed by an `expect`.
    pub data: Vec<u8>,
    consumed: Vec<u8>,
    /// Whether the server closed the connection (EOF or an error).
    pub closed: bool,
}

impl TestClient {
    /// Connects (bounded by [`WAIT`]); panics if it cannot.
    pub async fn connect(addr: SocketAddr) -> TestClient {
        TestClient::from_stream(connect(addr).await)
    }

    /// A client on an accepted or connected stream: BINARY and SGA both ways, the
    /// server's ECHO accepted, as a terminal's `telnet` would.
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
        let mut wire = Vec::new();
        if !read_within(&mut self.stream, limit, &mut wire).await {
            self.closed = true;
            return false;
        }
        let mut input = &wire[..];
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

/// A client that reads and writes bytes as they are, telnet commands included.
#[derive(Debug)]
pub struct RawClient {
    stream: TcpStream,
    /// Bytes received and not yet consumed by an `expect`.
    pub data: Vec<u8>,
    /// Whether the server closed the connection (EOF or an error).
    pub closed: bool,
}

impl RawClient {
    /// Connects (bounded by [`WAIT`]); panics if it cannot.
    pub async fn connect(addr: SocketAddr) -> RawClient {
        RawClient::from_stream(connect(addr).await)
    }

    /// A client on a stream the test set up itself (e.g. with small kernel buffers).
    pub fn from_stream(stream: TcpStream) -> RawClient {
        RawClient {
            stream,
            data: Vec::new(),
            closed: false,
        }
    }

    /// The socket, for what the client does not do (e.g. `try_write` until the peer stalls).
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Writes `wire` as it is.
    pub async fn send(&mut self, wire: &[u8]) {
        self.stream.write_all(wire).await.expect("raw write");
    }

    /// One read (bounded by `limit`); false on EOF.
    async fn read_once(&mut self, limit: Duration) -> bool {
        if !read_within(&mut self.stream, limit, &mut self.data).await {
            self.closed = true;
            return false;
        }
        true
    }

    /// Reads until the data contains `needle`; returns what came up to and including it and
    /// keeps the rest.
    pub async fn read_until(&mut self, needle: &[u8]) -> Vec<u8> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(at) = find(&self.data, needle) {
                let rest = self.data.split_off(at + needle.len());
                return std::mem::replace(&mut self.data, rest);
            }
            assert!(
                !self.closed,
                "closed before {needle:02x?}; got {:02x?}",
                self.data
            );
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {needle:02x?}; got {:02x?}",
                self.data
            );
            self.read_once(Duration::from_millis(50)).await;
        }
    }

    /// Reads until exactly `expected` has arrived (fails at once on a wrong prefix).
    pub async fn expect_exact(&mut self, expected: &[u8]) {
        let deadline = Instant::now() + WAIT;
        loop {
            let upto = self.data.len().min(expected.len());
            assert_eq!(
                self.data[..upto],
                expected[..upto],
                "raw client got a wrong prefix"
            );
            if self.data.len() >= expected.len() {
                break;
            }
            assert!(!self.closed, "closed after {:02x?}", self.data);
            assert!(
                Instant::now() < deadline,
                "timed out; got {:02x?}",
                self.data
            );
            self.read_once(Duration::from_millis(50)).await;
        }
        assert_eq!(
            self.data.len(),
            expected.len(),
            "raw client got extra bytes"
        );
        self.data.clear();
    }

    /// Reads until the server closes the connection (bounded by [`WAIT`]); returns every
    /// byte that came before the close.
    pub async fn expect_closed(&mut self) -> Vec<u8> {
        let deadline = Instant::now() + WAIT;
        while !self.closed {
            assert!(
                Instant::now() < deadline,
                "not closed; got {:02x?}",
                self.data
            );
            self.read_once(Duration::from_millis(50)).await;
        }
        std::mem::take(&mut self.data)
    }
}

/// Connects (bounded by [`WAIT`]; panics if it cannot), Nagle off so that each write of a
/// test is one segment.
async fn connect(addr: SocketAddr) -> TcpStream {
    let stream = tokio::time::timeout(WAIT, TcpStream::connect(addr))
        .await
        .expect("connect timeout")
        .expect("connect");
    let _ = stream.set_nodelay(true);
    stream
}

/// One read of at most 16 KiB within `limit`, appended to `into` (nothing when the time ran
/// out); false at EOF or on an error.
async fn read_within(stream: &mut TcpStream, limit: Duration, into: &mut Vec<u8>) -> bool {
    let mut buf = [0u8; 16384];
    match tokio::time::timeout(limit, stream.read(&mut buf)).await {
        Err(_) => true,
        Ok(Ok(0)) | Ok(Err(_)) => false,
        Ok(Ok(n)) => {
            into.extend_from_slice(&buf[..n]);
            true
        }
    }
}

/// A one-shot `GET path` over HTTP/1.1 (read to the server's close, bounded by [`WAIT`]):
/// the response's head and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut client = RawClient::connect(addr).await;
    client
        .send(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await;
    let response = String::from_utf8(client.expect_closed().await).expect("UTF-8 response");
    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    (head.to_owned(), body.to_owned())
}
