//! Client connections (people and tools, over telnet, or a web console's WebSocket): a
//! reader and a writer task per client. The core does the protocol (negotiation, selection,
//! modes, budgets); these tasks move bytes through a [`ClientSource`] and a [`ClientSink`],
//! so every transport shares one copy of the flow control.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::Instrument;
use vspc_concentrator::{ClientId, ClientTransmit, Mode, Transport, VmId};

use crate::hub::ClientSignals;
use crate::Shared;

/// How long the writer tries to deliver the goodbye message to a client being dropped.
pub(crate) const GOODBYE_TIMEOUT: Duration = Duration::from_millis(500);

/// Bytes read from a client at a time (also the most of its input that can wait for a VM).
const READ_CHUNK: usize = 8192;

/// Where a client's input comes from.
pub(crate) trait ClientSource: Send {
    /// Reads some input into `buf`; `Ok(0)` at the end.
    fn read(&mut self, buf: &mut [u8]) -> impl Future<Output = std::io::Result<usize>> + Send;
}

/// Where a client's output goes.
pub(crate) trait ClientSink: Send {
    /// Writes every chunk (emptying them as they go).
    fn write_chunks(
        &mut self,
        chunks: &mut [Bytes],
    ) -> impl Future<Output = std::io::Result<()>> + Send;

    /// Ends the output after what was written (the core closed the client).
    fn close(&mut self) -> impl Future<Output = std::io::Result<()>> + Send;
}

/// A byte stream's read half (TCP, TLS).
pub(crate) struct StreamSource<R>(pub(crate) R);

/// A byte stream's write half (TCP, TLS).
pub(crate) struct StreamSink<W>(pub(crate) W);

impl<R: AsyncRead + Unpin + Send> ClientSource for StreamSource<R> {
    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf).await
    }
}

impl<W: AsyncWrite + Unpin + Send> ClientSink for StreamSink<W> {
    async fn write_chunks(&mut self, chunks: &mut [Bytes]) -> std::io::Result<()> {
        write_chunks(&mut self.0, chunks).await
    }

    async fn close(&mut self) -> std::io::Result<()> {
        self.0.flush().await?;
        self.0.shutdown().await
    }
}

/// Serves one telnet client; `sticky` attaches it at once to that VM (a sticky port).
pub(crate) async fn serve_client(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    sticky: Option<VmId>,
) {
    let _ = stream.set_nodelay(true);
    let registered = {
        let mut hub = shared.lock();
        let target = sticky.map(|vm| (vm, Mode::ReadWrite));
        let result =
            hub.core
                .handle_client_connect(Instant::now(), peer, Transport::Telnet, target);
        let result = result.map(|client| (client, hub.register_client(client)));
        hub.settle();
        result
    };
    let (client, signals) = match registered {
        Ok(registered) => registered,
        Err(refused) => {
            tracing::warn!(%peer, %refused, "client refused");
            let mut stream = stream;
            let message = format!("vspc: {refused}\r\n");
            let _ =
                tokio::time::timeout(GOODBYE_TIMEOUT, stream.write_all(message.as_bytes())).await;
            return;
        }
    };
    let span = tracing::info_span!("client", client = client.0, %peer);
    let (reader, writer) = stream.into_split();
    run_client(
        shared,
        client,
        signals,
        StreamSource(reader),
        StreamSink(writer),
    )
    .instrument(span)
    .await;
}

/// Runs a registered client until its connection or the core closes it: a writer task
/// drains its output into `sink` while this task feeds `source` to the core.
pub(crate) async fn run_client<R, W>(
    shared: Arc<Shared>,
    client: ClientId,
    signals: Arc<ClientSignals>,
    source: R,
    sink: W,
) where
    R: ClientSource,
    W: ClientSink + 'static,
{
    tracing::info!("client connected");
    let mut writer_task = tokio::spawn(
        client_writer(shared.clone(), client, sink, signals.clone()).in_current_span(),
    );
    client_reader(&shared, client, source, &signals).await;
    // A client being dropped (shutdown, too slow) has a goodbye in flight: let the writer
    // deliver it before the registration, which holds it, goes away.
    let mut writer_done = false;
    if shared.lock().core.client_is_closing(client) {
        writer_done = tokio::time::timeout(GOODBYE_TIMEOUT * 2, &mut writer_task)
            .await
            .is_ok();
    }
    shared.lock().client_closed(client);
    signals.output.notify_one();
    signals.kill.notify_one();
    // A JoinHandle must not be polled again once it has completed.
    if !writer_done {
        let _ = tokio::time::timeout(GOODBYE_TIMEOUT * 2, writer_task).await;
    }
    tracing::info!("client closed");
}

/// Writes every chunk, as many as the socket takes per call (one `writev` for a queue of
/// small chunks, where a write each cost a system call each).
async fn write_chunks<W: AsyncWrite + Unpin>(
    writer: &mut W,
    chunks: &mut [Bytes],
) -> std::io::Result<()> {
    /// Slices per call (Linux takes up to 1024; the kernel copies them all anyway).
    const MAX_SLICES: usize = 64;
    let mut at = 0;
    loop {
        while chunks.get(at).is_some_and(|chunk| chunk.is_empty()) {
            at += 1;
        }
        if at == chunks.len() {
            return Ok(());
        }
        let slices: Vec<std::io::IoSlice<'_>> = chunks[at..]
            .iter()
            .take(MAX_SLICES)
            .map(|chunk| std::io::IoSlice::new(chunk))
            .collect();
        let mut written = writer.write_vectored(&slices).await?;
        drop(slices);
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while written > 0 {
            let Some(chunk) = chunks.get_mut(at) else {
                break;
            };
            let take = written.min(chunk.len());
            bytes::Buf::advance(chunk, take);
            written -= take;
            if chunk.is_empty() {
                at += 1;
            }
        }
    }
}

async fn client_writer<W: ClientSink>(
    shared: Arc<Shared>,
    client: ClientId,
    mut writer: W,
    signals: Arc<ClientSignals>,
) {
    let mut chunks = Vec::new();
    loop {
        chunks.clear();
        let next = {
            let mut hub = shared.lock();
            let next = hub.core.poll_client_transmit(client, &mut chunks);
            hub.settle();
            next
        };
        match next {
            ClientTransmit::Write => {
                // A client being dropped may have stopped reading: `kill` abandons the write
                // so the task ends even when the socket buffer is full.
                tokio::select! {
                    result = writer.write_chunks(&mut chunks) => {
                        if result.is_err() {
                            return;
                        }
                    }
                    _ = signals.kill.notified() => {
                        signals.kill.notify_one();
                    }
                }
            }
            ClientTransmit::Close => {
                let _ = tokio::time::timeout(GOODBYE_TIMEOUT, async {
                    writer.write_chunks(&mut chunks).await?;
                    writer.close().await
                })
                .await;
                return;
            }
            ClientTransmit::Idle => signals.output.notified().await,
        }
    }
}

async fn client_reader<R: ClientSource>(
    shared: &Arc<Shared>,
    client: ClientId,
    mut reader: R,
    signals: &ClientSignals,
) {
    let mut stop = shared.stop.subscribe();
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        // Input that waits for its VM keeps the rest in the client's socket (backpressure).
        loop {
            let (wants, closing) = {
                let hub = shared.lock();
                (
                    hub.core.client_wants_input(client),
                    hub.core.client_is_closing(client),
                )
            };
            if closing {
                return;
            }
            if wants {
                break;
            }
            // Announce the wait, then look again: a wakeup between the look above and the
            // wait below is not lost (the hub notifies only a waiting reader).
            signals.reader_waiting.store(true, Ordering::Release);
            let ready = shared.lock().core.client_wants_input(client);
            if !ready {
                tokio::select! {
                    _ = signals.input.notified() => {}
                    _ = stop.wait_for(|stop| *stop) => {
                        signals.reader_waiting.store(false, Ordering::Release);
                        return;
                    }
                }
            }
            signals.reader_waiting.store(false, Ordering::Release);
        }
        let n = tokio::select! {
            read = reader.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            _ = signals.kill.notified() => {
                signals.kill.notify_one();
                return;
            }
            _ = stop.wait_for(|stop| *stop) => return,
        };
        let mut hub = shared.lock();
        hub.core
            .handle_client_input(Instant::now(), client, &buf[..n]);
        hub.settle();
    }
}
