//! One task per VM connection: it feeds what it reads to the hub and writes what the hub's
//! session queues, from a single `poll` (no split stream, no second task, no channel): an
//! idle VM costs one small task, its socket and its hub entry.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use std::future::Future;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tracing::Instrument;
use vspc_backing::KeepIdle;
use vspc_proto::SessionId;

use vspc_concentrator::VmTransmit;

use crate::{cluster, Shared};

/// Read size: a VM sends little at a time, but a console can stream, and a 64 KiB read takes
/// a stream in a quarter of the reads (and hub locks) of 16 KiB. The buffer lives on the
/// stack of the poll that finds data ready and is copied out at its length, so an idle
/// connection holds no read buffer at all.
const READ_CHUNK: usize = 64 * 1024;

/// Bytes queued toward a VM whose socket is full, past which the VM is not read: its own
/// requests cannot grow what waits for it.
const MAX_BACKLOG: usize = 64 * 1024;

/// Reads per poll before the task yields to the runtime.
const READS_PER_POLL: usize = 4;

/// Where a VM connection's task stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading and writing.
    Open,
    /// The hub said close: write what was taken, flush, send FIN.
    Closing,
    /// FIN sent: read (and hand to the hub, which ignores a dropped connection) until the VM
    /// closes too, so that closing with unread bytes does not reset what it has yet to read.
    Draining,
}

/// One VM connection's task: the whole state it keeps between polls.
pub(crate) struct VmLink<S> {
    shared: Arc<Shared>,
    sid: SessionId,
    /// `None` once carried to another instance.
    stream: Option<S>,
    /// With shared vMotions, what the VM sent before it was identified: a destination whose
    /// PEER names another instance's vMotion is carried there with it (`cluster`). Boxed:
    /// every VM's task carries the field, few ever fill it.
    replay: Option<Box<BytesMut>>,
    /// The hub said, at the last read, not to read this VM (a client of it is behind).
    paused: bool,
    /// The write in progress (what the socket has not taken yet).
    out: Option<Bytes>,
    /// Written since the last flush (TLS buffers inside the stream).
    unflushed: bool,
    phase: Phase,
    span: tracing::Span,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> VmLink<S> {
    /// Writes until the session has nothing more or the socket is full. Ready when the
    /// connection is finished with (closed by the hub and shut down, or a write failed).
    fn poll_write_side(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(stream) = self.stream.as_mut() else {
            return Poll::Ready(());
        };
        while self.phase == Phase::Open {
            if self.out.is_none() {
                match self.shared.lock().take_vm_transmit(self.sid, cx.waker()) {
                    VmTransmit::Write(bytes) => self.out = Some(bytes),
                    VmTransmit::Close => self.phase = Phase::Closing,
                    VmTransmit::Idle => break,
                }
                continue;
            }
            let Some(out) = self.out.as_mut() else {
                break;
            };
            match Pin::new(&mut *stream).poll_write(cx, out) {
                Poll::Ready(Ok(0)) => return Poll::Ready(()),
                Poll::Ready(Ok(written)) => {
                    self.unflushed = true;
                    out.advance(written);
                    if out.is_empty() {
                        self.out = None;
                    }
                }
                Poll::Ready(Err(error)) => {
                    tracing::info!(%error, "VM connection write failed");
                    return Poll::Ready(());
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        if self.unflushed {
            match Pin::new(&mut *stream).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.unflushed = false,
                Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        }
        if self.phase == Phase::Closing {
            match Pin::new(&mut *stream).poll_shutdown(cx) {
                Poll::Ready(_) => self.phase = Phase::Draining,
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Pending
    }

    /// Drives the connection until the VM closes it, a socket call fails, or the hub closed
    /// it and the VM acknowledged.
    fn drive(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let mut reads = 0;
        loop {
            if reads == READS_PER_POLL {
                // Let the clients' writers run before more output is queued for them: a
                // client reading at full speed must never look slow because this task read
                // a whole burst in one scheduling slice.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            // An unidentified connection may have been handed to the instance that holds its
            // vMotion: carry it there before this task writes or closes anything.
            if self.replay.is_some() && self.carried() {
                return Poll::Ready(());
            }
            if self.poll_write_side(cx).is_ready() {
                return Poll::Ready(());
            }
            // A VM that does not read what it makes us answer (option toggles, queries) is
            // not read either until it does: the write in progress wakes this task. Nor is
            // one whose client is a budget behind: the hub wakes it when the client catches
            // up or is dropped.
            // (Checked under the lock only when a write is in progress or the last read
            // found the VM paused: most reads take the lock once.)
            if self.out.is_some() || self.paused {
                let hub = self.shared.lock();
                let backlogged = self.out.is_some()
                    && hub.core.endpoint().pending_transmit_len(self.sid) > MAX_BACKLOG;
                self.paused = !hub.core.vm_wants_input(self.sid);
                if backlogged || self.paused {
                    return Poll::Pending;
                }
            }
            let Some(stream) = self.stream.as_mut() else {
                return Poll::Ready(());
            };
            let mut buf = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
            let mut read = ReadBuf::uninit(&mut buf);
            match Pin::new(stream).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) if read.filled().is_empty() => return Poll::Ready(()),
                Poll::Ready(Ok(())) => {
                    reads += 1;
                    let bytes = Bytes::copy_from_slice(read.filled());
                    let mut hub = self.shared.lock();
                    hub.core.handle_vm_input(Instant::now(), self.sid, &bytes);
                    self.paused = !hub.core.vm_wants_input(self.sid);
                    if let Some(replay) = self.replay.as_mut() {
                        if hub.core.is_identified(self.sid)
                            || replay.len() + bytes.len() > cluster::MAX_REPLAY
                        {
                            // Bound to a VM here (or too chatty to be a destination's
                            // handshake): it will never be carried elsewhere.
                            self.replay = None;
                        } else {
                            replay.extend_from_slice(&bytes);
                        }
                    }
                    hub.settle();
                }
                Poll::Ready(Err(error)) => {
                    tracing::info!(%error, "VM connection read failed");
                    return Poll::Ready(());
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> VmLink<S> {
    /// Whether the hub handed this connection to another instance; if so it is carried
    /// there (with what the VM sent so far) by a task of its own.
    fn carried(&mut self) -> bool {
        let Some(owner) = self.shared.lock().take_handoff(self.sid) else {
            return false;
        };
        if let (Some(stream), Some(replay)) = (self.stream.take(), self.replay.take()) {
            let span = self.span.clone();
            tokio::spawn(cluster::carry(stream, replay.freeze(), owner).instrument(span));
        }
        true
    }
}

/// Sets TCP keepalive after ESXi's keepIdle model: idle `keepIdle`, then 5 probes every
/// keepIdle/100, so a vanished host is noticed within keepIdle x 1.05, as ESXi notices us.
pub fn set_keepalive(stream: &tokio::net::TcpStream, keep_idle_secs: u32) {
    let params = KeepIdle::from_secs(keep_idle_secs).tcp_keepalive();
    if let Err(error) = socket2::SockRef::from(stream).set_tcp_keepalive(&params) {
        tracing::warn!(%error, "cannot set TCP keepalive");
    }
    let _ = stream.set_nodelay(true);
}

/// Registers a VM connection (plain or TLS) with the hub and returns the future that serves
/// it until it closes: spawn it, or await it. `None` when the hub refuses the connection
/// (capacity, shutdown), which is logged. The future is the connection's whole state, about
/// 130 bytes: a task of 256 where an `async fn` around it took 512.
pub(crate) fn vm_link<S>(
    shared: Arc<Shared>,
    stream: S,
    peer: SocketAddr,
    tls: bool,
) -> Option<VmLink<S>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let replay = shared.lock().is_clustered().then(Box::default);
    let registered = shared
        .lock()
        .core
        .handle_vm_connect(Instant::now(), peer, tls);
    let sid = match registered {
        Ok(sid) => sid,
        Err(refused) => {
            tracing::warn!(%peer, %refused, "VM connection refused");
            return None;
        }
    };
    let span = tracing::info_span!("vm", session = sid.0, %peer, tls);
    span.in_scope(|| tracing::info!("VM connected"));
    Some(VmLink {
        shared,
        sid,
        stream: Some(stream),
        replay,
        paused: false,
        out: None,
        unflushed: false,
        phase: Phase::Open,
        span,
    })
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Future for VmLink<S> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let link = self.get_mut();
        let span = link.span.clone();
        let _entered = span.enter();
        let done = link.drive(cx);
        if done.is_ready() {
            link.shared.lock().vm_finished(Instant::now(), link.sid);
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The kernel holds what ESXi's keepIdle model asks: idle keepIdle, then 5 probes every
    /// keepIdle/100 (whole seconds, at least 1), so a dead host is found by keepIdle * 1.05.
    #[tokio::test]
    async fn vm_sockets_carry_the_keep_idle_model() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        for (keep_idle, interval) in [(300, 3), (1000, 10), (60, 1)] {
            set_keepalive(&accepted, keep_idle);
            let socket = socket2::SockRef::from(&accepted);
            assert!(socket.keepalive().unwrap());
            assert_eq!(
                socket.keepalive_time().unwrap(),
                Duration::from_secs(keep_idle.into())
            );
            assert_eq!(
                socket.keepalive_interval().unwrap(),
                Duration::from_secs(interval)
            );
            assert_eq!(socket.keepalive_retries().unwrap(), 5);
        }
        set_keepalive(&accepted, 300);
        let socket = socket2::SockRef::from(&accepted);
        let bound = socket.keepalive_time().unwrap()
            + socket.keepalive_interval().unwrap() * socket.keepalive_retries().unwrap();
        assert_eq!(
            bound,
            Duration::from_secs(315),
            "ESXi's default detection bound"
        );
    }
}
