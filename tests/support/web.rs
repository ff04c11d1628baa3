//! Clients of the web console: a WebSocket terminal (tokio-tungstenite), raw WebSocket
//! frames for malformed input, and plain HTTP requests.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error, Message};
use tokio_tungstenite::WebSocketStream;
use vspc_server::{Server, ServerConfig};

use super::{find, vms, wait_snapshot, WAIT};

/// The token of the tests' consoles.
pub const TOKEN: &str = "test-token-0123456789";

/// The configuration of a console on an ephemeral loopback port with [`TOKEN`].
pub fn web_config() -> ServerConfig {
    let mut config = ServerConfig::ephemeral();
    config.web.listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    config.web.token = Some(TOKEN.to_owned());
    config
}

/// A terminal over the console's WebSocket.
pub struct WsTerm<S> {
    ws: WebSocketStream<S>,
    /// Bytes received and not yet matched by an `expect`.
    pub got: Vec<u8>,
}

/// Opens `/ws/terminal?{query}` with the token and the extra `headers`.
pub async fn try_open(
    addr: SocketAddr,
    query: &str,
    headers: &[(&'static str, &str)],
) -> Result<WsTerm<TcpStream>, Error> {
    let stream = TcpStream::connect(addr).await.unwrap();
    try_open_on(stream, &format!("ws://{addr}/ws/terminal?{query}"), headers).await
}

/// The WebSocket handshake for `url` on a connected stream (plain or TLS).
pub async fn try_open_on<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    url: &str,
    headers: &[(&'static str, &str)],
) -> Result<WsTerm<S>, Error> {
    let mut request = url.into_client_request().unwrap();
    for (name, value) in headers {
        request
            .headers_mut()
            .append(*name, HeaderValue::from_str(value).unwrap());
    }
    let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::client_async(request, stream))
        .await
        .expect("WebSocket handshake timed out")?;
    Ok(WsTerm {
        ws,
        got: Vec::new(),
    })
}

/// The HTTP status of a refused WebSocket handshake.
pub fn refused_status<S>(result: Result<WsTerm<S>, Error>) -> u16 {
    match result {
        Err(Error::Http(response)) => response.status().as_u16(),
        Err(error) => panic!("not refused by status: {error}"),
        Ok(_) => panic!("the handshake succeeded"),
    }
}

/// `Authorization: Bearer` with the tests' token.
pub const BEARER: (&str, &str) = ("authorization", "Bearer test-token-0123456789");

/// Opens a terminal on `vm` (a selector) in `mode`, with the token.
pub async fn open(addr: SocketAddr, vm: &str, mode: &str) -> WsTerm<TcpStream> {
    try_open(addr, &format!("vm={vm}&mode={mode}"), &[BEARER])
        .await
        .expect("terminal refused")
}

impl<S: AsyncRead + AsyncWrite + Unpin> super::typing::Typist for WsTerm<S> {
    async fn type_keys(&mut self, keys: &[u8]) {
        self.send(keys).await;
    }

    async fn pause(&mut self) {
        self.drain(Duration::from_millis(2)).await;
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsTerm<S> {
    /// Sends bytes as one binary message.
    pub async fn send(&mut self, bytes: &[u8]) {
        self.ws
            .send(Message::Binary(bytes.to_vec().into()))
            .await
            .unwrap();
    }

    /// Reads one more message into `got` (bounded); `Some(close frame)` when it closed.
    async fn read_more(&mut self, deadline: Instant) -> Option<Option<CloseFrame>> {
        let left = deadline.saturating_duration_since(Instant::now());
        let next = tokio::time::timeout(left, self.ws.next()).await;
        match next {
            Err(_) => panic!("timed out; got {:?}", String::from_utf8_lossy(&self.got)),
            Ok(Some(Ok(Message::Binary(bytes)))) => {
                self.got.extend_from_slice(&bytes);
                None
            }
            Ok(Some(Ok(Message::Text(text)))) => panic!("a text message: {text:?}"),
            Ok(Some(Ok(Message::Close(frame)))) => Some(frame),
            Ok(Some(Ok(_))) => None,
            Ok(Some(Err(_)) | None) => Some(None),
        }
    }

    /// Reads until `needle` arrived; returns what came up to its end (kept after it).
    pub async fn expect(&mut self, needle: &[u8]) -> Vec<u8> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(at) = find(&self.got, needle) {
                let rest = self.got.split_off(at + needle.len());
                return std::mem::replace(&mut self.got, rest);
            }
            if let Some(frame) = self.read_more(deadline).await {
                panic!(
                    "closed ({frame:?}) before {:?}; got {:?}",
                    String::from_utf8_lossy(needle),
                    String::from_utf8_lossy(&self.got)
                );
            }
        }
    }

    /// Reads exactly `expected` next (fails at once on a wrong byte).
    pub async fn expect_exact(&mut self, expected: &[u8]) {
        let deadline = Instant::now() + WAIT;
        while self.got.len() < expected.len() {
            let prefix = self.got.len();
            assert_eq!(self.got[..], expected[..prefix], "wrong bytes");
            if let Some(frame) = self.read_more(deadline).await {
                panic!(
                    "closed ({frame:?}) after {} of {} bytes",
                    prefix,
                    expected.len()
                );
            }
        }
        assert_eq!(self.got[..expected.len()], expected[..], "wrong bytes");
        self.got.drain(..expected.len());
    }

    /// Reads until the console closes the WebSocket: its close frame (`None` when the
    /// connection ended without one).
    pub async fn closed(&mut self) -> Option<CloseFrame> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(frame) = self.read_more(deadline).await {
                return frame;
            }
        }
    }

    /// Reads whatever arrives within `limit`.
    pub async fn drain(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while let Ok(Some(Ok(message))) =
            tokio::time::timeout_at(deadline.into(), self.ws.next()).await
        {
            if let Message::Binary(bytes) = message {
                self.got.extend_from_slice(&bytes);
            }
        }
    }
}

/// A raw WebSocket, after a hand-written handshake: frames are written as given.
pub struct RawWs {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl RawWs {
    pub async fn open(addr: SocketAddr, query: &str) -> RawWs {
        RawWs::open_with(addr, query, None).await
    }

    /// `open`, with the socket's receive buffer set to `rcvbuf` bytes (a small window: a page
    /// that stops reading backs the console up sooner).
    pub async fn open_with(addr: SocketAddr, query: &str, rcvbuf: Option<u32>) -> RawWs {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        if let Some(size) = rcvbuf {
            socket.set_recv_buffer_size(size).unwrap();
        }
        let mut stream = socket.connect(addr).await.unwrap();
        let request = format!(
            "GET /ws/terminal?{query} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut raw = RawWs {
            stream,
            buf: Vec::new(),
        };
        let deadline = Instant::now() + WAIT;
        while find(&raw.buf, b"\r\n\r\n").is_none() {
            raw.fill(deadline).await;
        }
        let end = find(&raw.buf, b"\r\n\r\n").unwrap() + 4;
        let head = String::from_utf8_lossy(&raw.buf[..end]).into_owned();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        raw.buf.drain(..end);
        raw
    }

    async fn fill(&mut self, deadline: Instant) -> usize {
        let mut chunk = [0u8; 4096];
        let left = deadline.saturating_duration_since(Instant::now());
        let n = tokio::time::timeout(left, self.stream.read(&mut chunk))
            .await
            .expect("timed out reading")
            .unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n
    }

    /// The next frame from the server: (opcode, payload); `None` at the end of the stream.
    pub async fn frame(&mut self) -> Option<(u8, Vec<u8>)> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some((opcode, payload, used)) = parse_frame(&self.buf) {
                self.buf.drain(..used);
                return Some((opcode, payload));
            }
            if self.fill(deadline).await == 0 {
                return None;
            }
        }
    }

    /// Frames until a close frame: its code and reason (`None` if the stream just ended).
    pub async fn close_frame(&mut self) -> Option<(u16, String)> {
        while let Some((opcode, payload)) = self.frame().await {
            if opcode == 8 {
                let code = u16::from_be_bytes([payload[0], payload[1]]);
                return Some((code, String::from_utf8_lossy(&payload[2..]).into_owned()));
            }
        }
        None
    }
}

/// A server frame (unmasked) at the front of `buf`: (opcode, payload, bytes used).
fn parse_frame(buf: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    let (&b0, &b1) = (buf.first()?, buf.get(1)?);
    assert_eq!(b1 & 0x80, 0, "a server frame must not be masked");
    let (len, at) = match b1 & 0x7f {
        126 => (
            u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?) as usize,
            4,
        ),
        127 => (
            u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    let payload = buf.get(at..at + len)?.to_vec();
    Some((b0 & 0x0f, payload, at + len))
}

/// A client frame: `first` is FIN/RSV/opcode, the payload masked with a fixed key.
pub fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let key = [0x37, 0xfa, 0x21, 0x3d];
    let mut frame = vec![first];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n < 65536 => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&key);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    frame
}

/// One HTTP/1.1 GET with `headers`: (status line and headers, body).
pub async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (String, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut response))
        .await
        .expect("HTTP response timed out")
        .unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.to_owned(), body.to_owned())
}

/// Starts the console with `tweak` applied to [`web_config`].
pub async fn start(tweak: impl FnOnce(&mut ServerConfig)) -> Server {
    let mut config = web_config();
    tweak(&mut config);
    Server::start(config).await.unwrap()
}

/// Waits (bounded) until the first VM entry has `n` clients attached.
pub async fn wait_clients(proxy: &Server, n: usize, what: &str) {
    wait_snapshot(
        what,
        || proxy.snapshot(),
        |s| vms(s)[0]["clients"].as_array().map(Vec::len) == Some(n),
    )
    .await;
}
