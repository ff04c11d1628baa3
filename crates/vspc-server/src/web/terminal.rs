//! A terminal over a WebSocket: a core client with [`Transport::Raw`], driven by the same
//! reader and writer tasks as a telnet client (so the same output budget, flow control and
//! goodbye), with the WebSocket as its byte pipe. Binary messages carry the bytes both ways,
//! unchanged.
//!
//! Close codes the page acts on: 1000 (closed by the concentrator: the goodbye came first as
//! data), 1003 (a text message: binary only), 1009 (a message over `web.max_message`), 1002
//! (a malformed frame), 4404 (no such VM), 4409 (the VM is held
//! exclusively, or has writers when exclusive access was asked), 4503 (the concentrator is
//! at its client cap or shutting down).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use bytes::{Buf, Bytes, BytesMut};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tracing::Instrument;
use vspc_concentrator::{
    AttachError, ClientId, ClientSetup, Grant, Mode, Rights, Transport, User, VmId,
};

use super::auth::Principal;
use crate::client::{run_client, ClientSink, ClientSource, GOODBYE_TIMEOUT};
use crate::hub::ClientSignals;
use crate::Shared;

/// The most output sent in one WebSocket message (queued chunks are coalesced up to it).
const OUT_MESSAGE: usize = 64 * 1024;

/// Close codes (see the module's documentation).
pub(crate) mod code {
    pub(crate) const NORMAL: u16 = 1000;
    pub(crate) const PROTOCOL: u16 = 1002;
    pub(crate) const UNSUPPORTED: u16 = 1003;
    pub(crate) const TOO_BIG: u16 = 1009;
    pub(crate) const NO_VM: u16 = 4404;
    pub(crate) const CONFLICT: u16 = 4409;
    pub(crate) const UNAVAILABLE: u16 = 4503;
}

/// How the connection ends, when the reader knows better than "closed by the concentrator".
type CloseSlot = Arc<Mutex<Option<(u16, &'static str)>>>;

/// What the page asked for.
pub(crate) struct Request {
    pub(crate) peer: SocketAddr,
    pub(crate) vm: VmId,
    pub(crate) mode: Mode,
    pub(crate) principal: Principal,
}

/// Serves one upgraded WebSocket as a terminal on `request.vm`.
pub(crate) async fn serve(shared: Arc<Shared>, socket: WebSocket, request: Request) {
    let Request {
        peer,
        vm,
        mode,
        principal,
    } = request;
    let (mut sink, stream) = socket.split();
    let (client, signals) = match connect(&shared, peer, vm, mode, &principal) {
        Ok(registered) => registered,
        Err((code, reason)) => {
            tracing::info!(%peer, vm = vm.0, mode = mode.short(), %reason, "web terminal refused");
            let frame = CloseFrame {
                code,
                reason: reason.into(),
            };
            let _ = tokio::time::timeout(GOODBYE_TIMEOUT, async {
                sink.send(Message::Close(Some(frame))).await?;
                sink.close().await
            })
            .await;
            return;
        }
    };
    let span = tracing::info_span!("client", client = client.0, %peer, web = true);
    async {
        tracing::info!(principal = %principal.name, vm = vm.0, mode = mode.short(), "web terminal attached");
        let close = CloseSlot::default();
        let source = WsSource {
            stream,
            pending: Bytes::new(),
            close: close.clone(),
        };
        let sink = WsSink { sink, close };
        run_client(shared, client, signals, source, sink).await;
        tracing::info!(principal = %principal.name, vm = vm.0, "web terminal detached");
    }
    .instrument(span)
    .await;
}

/// Registers a raw client attached to `vm`, in one critical section: the menu a new client
/// gets is discarded (the page chose the VM already), and an attach the core refuses
/// removes the client again.
fn connect(
    shared: &Shared,
    peer: SocketAddr,
    vm: VmId,
    mode: Mode,
    principal: &Principal,
) -> Result<(ClientId, Arc<ClientSignals>), (u16, String)> {
    // The page's principal is the client's user: the audit trail and a kick's notice name
    // it (`web:token` with the bearer token, which may reach every VM).
    let user = User {
        name: format!("web:{}", principal.name),
        grants: vec![Grant {
            pattern: "*".to_owned(),
            rights: Rights::ALL,
        }],
    };
    let mut setup = ClientSetup::new(Transport::Raw);
    setup.user = Some(Arc::new(user));
    let mut hub = shared.lock();
    let result =
        hub.core
            .handle_client_connect_with(Instant::now(), peer, setup)
            .map_err(|refused| (code::UNAVAILABLE, format!("vspc: {refused}")))
            .and_then(|client| {
                let mut menu = Vec::new();
                hub.core.poll_client_transmit(client, &mut menu);
                match hub.core.attach(client, vm, mode) {
                    Ok(()) => Ok(client),
                    Err(error) => {
                        hub.core.handle_client_closed(client);
                        let code = match error {
                            AttachError::HeldExclusively(_)
                            | AttachError::WritersAttached { .. } => code::CONFLICT,
                            AttachError::ClientGone => code::UNAVAILABLE,
                            _ => code::NO_VM,
                        };
                        Err((code, format!("vspc: {error}")))
                    }
                }
            })
            .map(|client| (client, hub.register_client(client)));
    hub.settle();
    result
}

/// The page's input: the bytes of its binary messages, in order.
struct WsSource {
    stream: SplitStream<WebSocket>,
    /// The rest of a message larger than the reader's buffer (at most `web.max_message`).
    pending: Bytes,
    close: CloseSlot,
}

impl WsSource {
    fn end(&self, code: u16, reason: &'static str) -> std::io::Result<usize> {
        *self.close.lock().unwrap_or_else(|e| e.into_inner()) = Some((code, reason));
        Ok(0)
    }
}

impl ClientSource for WsSource {
    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if !self.pending.is_empty() {
                let n = self.pending.len().min(buf.len());
                buf[..n].copy_from_slice(&self.pending[..n]);
                self.pending.advance(n);
                return Ok(n);
            }
            match self.stream.next().await {
                Some(Ok(Message::Binary(bytes))) => self.pending = bytes,
                // Pings are answered by the WebSocket layer itself.
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Text(_))) => {
                    return self.end(code::UNSUPPORTED, "binary messages only")
                }
                Some(Ok(Message::Close(_))) | None => return Ok(0),
                Some(Err(error)) => {
                    let (code, reason) = classify(error);
                    tracing::debug!(reason, "web terminal: bad WebSocket input");
                    return self.end(code, reason);
                }
            }
        }
    }
}

/// The close code and reason for a WebSocket error on input.
fn classify(error: axum::Error) -> (u16, &'static str) {
    use tokio_tungstenite::tungstenite::Error;
    match error.into_inner().downcast::<Error>().map(|e| *e) {
        Ok(Error::Capacity(_)) => (code::TOO_BIG, "message too big"),
        Ok(Error::Protocol(_) | Error::Utf8(_)) => (code::PROTOCOL, "malformed WebSocket frame"),
        _ => (code::PROTOCOL, "WebSocket error"),
    }
}

/// The page's output: queued chunks as binary messages of at most [`OUT_MESSAGE`] bytes.
struct WsSink {
    sink: SplitSink<WebSocket, Message>,
    close: CloseSlot,
}

impl ClientSink for WsSink {
    async fn write_chunks(&mut self, chunks: &mut [Bytes]) -> std::io::Result<()> {
        while let Some(payload) = next_message(chunks) {
            self.sink
                .feed(Message::Binary(payload))
                .await
                .map_err(std::io::Error::other)?;
        }
        self.sink.flush().await.map_err(std::io::Error::other)
    }

    async fn close(&mut self) -> std::io::Result<()> {
        let (code, reason) = self
            .close
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .unwrap_or((code::NORMAL, "closed by the concentrator"));
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        self.sink
            .send(Message::Close(Some(frame)))
            .await
            .map_err(std::io::Error::other)?;
        self.sink.close().await.map_err(std::io::Error::other)
    }
}

/// Takes the next message's payload off the front of `chunks`: a large chunk is split
/// without copying, small ones are gathered.
fn next_message(chunks: &mut [Bytes]) -> Option<Bytes> {
    let at = chunks.iter().position(|c| !c.is_empty())?;
    let rest_empty = chunks[at + 1..].iter().all(|c| c.is_empty());
    let first = &mut chunks[at];
    if first.len() >= OUT_MESSAGE || rest_empty {
        return Some(first.split_to(first.len().min(OUT_MESSAGE)));
    }
    let mut gathered = BytesMut::with_capacity(OUT_MESSAGE);
    for chunk in &mut chunks[at..] {
        let take = chunk.len().min(OUT_MESSAGE - gathered.len());
        gathered.extend_from_slice(&chunk[..take]);
        chunk.advance(take);
        if gathered.len() == OUT_MESSAGE {
            break;
        }
    }
    Some(gathered.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(chunks: &mut [Bytes]) -> Vec<Bytes> {
        std::iter::from_fn(|| next_message(chunks)).collect()
    }

    #[test]
    fn messages_gather_small_chunks_and_split_large_ones() {
        let mut chunks = vec![
            Bytes::from_static(b"ab"),
            Bytes::new(),
            Bytes::from_static(b"cd"),
        ];
        assert_eq!(drain(&mut chunks), vec![Bytes::from_static(b"abcd")]);
        assert!(chunks.iter().all(|c| c.is_empty()));

        let big = Bytes::from(vec![7u8; OUT_MESSAGE * 2 + 3]);
        let mut chunks = vec![big.clone(), Bytes::from_static(b"z")];
        let messages = drain(&mut chunks);
        let lens: Vec<usize> = messages.iter().map(|m| m.len()).collect();
        assert_eq!(lens, vec![OUT_MESSAGE, OUT_MESSAGE, 4]);
        assert_eq!(messages.concat(), [&big[..], b"z"].concat());

        let mut chunks = vec![
            Bytes::from(vec![1u8; OUT_MESSAGE - 1]),
            Bytes::from_static(b"xy"),
        ];
        let lens: Vec<usize> = drain(&mut chunks).iter().map(|m| m.len()).collect();
        assert_eq!(lens, vec![OUT_MESSAGE, 1]);
        assert!(drain(&mut []).is_empty());
    }
}
