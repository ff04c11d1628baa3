//! One task pair per VM connection: the reader feeds the hub, the writer drains the session.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::Poll;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::Notify;
use tracing::Instrument;
use vspc_backing::KeepIdle;

use super::hub::VmTx;
use super::Shared;

/// Read size: a VM sends little at a time; 16 KiB covers a burst in one read.
const READ_CHUNK: usize = 16 * 1024;

/// One read, into a buffer on the stack of the poll that finds data ready, copied out at its
/// length: an idle connection's task holds no read buffer at all (a `BytesMut` kept across
/// the await cost 16 KiB per idle VM).
async fn read_some<R: AsyncRead + Unpin>(reader: &mut R) -> std::io::Result<Bytes> {
    std::future::poll_fn(|cx| {
        let mut buf = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
        let mut read = ReadBuf::uninit(&mut buf);
        match Pin::new(&mut *reader).poll_read(cx, &mut read) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(Bytes::copy_from_slice(read.filled()))),
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// TCP keepalive after ESXi's keepIdle model: idle `keepIdle`, then 5 probes every
/// keepIdle/100, so a vanished host is noticed within keepIdle x 1.05, as ESXi notices us.
pub(crate) fn set_keepalive(stream: &tokio::net::TcpStream, keep_idle_secs: u32) {
    let keep_idle = KeepIdle::from_secs(keep_idle_secs);
    let interval = keep_idle.probe_interval().max(Duration::from_secs(1));
    let params = socket2::TcpKeepalive::new()
        .with_time(keep_idle.idle())
        .with_interval(interval);
    #[cfg(any(target_os = "linux", target_os = "macos", target_os = "freebsd"))]
    let params = params.with_retries(KeepIdle::PROBES);
    if let Err(error) = socket2::SockRef::from(stream).set_tcp_keepalive(&params) {
        tracing::warn!(%error, "cannot set TCP keepalive on a VM connection");
    }
    let _ = stream.set_nodelay(true);
}

/// Serves one VM connection (plain or TLS) until it closes.
pub(crate) async fn serve_vm<S>(shared: Arc<Shared>, stream: S, peer: SocketAddr, tls: bool)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let wake = Arc::new(Notify::new());
    let registered = shared.lock().register_vm_conn(peer, tls, wake.clone());
    let sid = match registered {
        Ok(sid) => sid,
        Err(refused) => {
            tracing::warn!(%peer, %refused, "VM connection refused");
            return;
        }
    };
    let span = tracing::info_span!("vm", session = sid.0, %peer, tls);
    async move {
        tracing::info!("VM connected");
        let (mut reader, writer) = tokio::io::split(stream);
        let writer_task =
            tokio::spawn(vm_writer(shared.clone(), sid, writer, wake.clone()).in_current_span());
        let mut stop = shared.stop.subscribe();
        let mut stopping = false;
        loop {
            let read = tokio::select! {
                read = read_some(&mut reader) => read,
                _ = stop.wait_for(|stop| *stop) => {
                    stopping = true;
                    break;
                }
            };
            match read {
                Ok(bytes) if bytes.is_empty() => break,
                Ok(bytes) => {
                    shared.lock().vm_input(Instant::now(), sid, &bytes);
                }
                Err(error) => {
                    tracing::info!(%error, "VM connection read failed");
                    break;
                }
            }
        }
        if stopping {
            // Shutdown: the writer sends what is queued, then closes (bounded wait).
            let _ = tokio::time::timeout(Duration::from_secs(2), writer_task).await;
        } else {
            // The peer is gone: nothing more can be written to it.
            writer_task.abort();
        }
        shared.lock().vm_closed(Instant::now(), sid);
    }
    .instrument(span)
    .await;
}

async fn vm_writer<W>(
    shared: Arc<Shared>,
    sid: vspc_proto::SessionId,
    mut writer: W,
    wake: Arc<Notify>,
) where
    W: AsyncWrite + Unpin,
{
    loop {
        let next = shared.lock().take_vm_transmit(sid);
        match next {
            VmTx::Write(bytes) => {
                if let Err(error) = writer.write_all(&bytes).await {
                    tracing::info!(%error, "VM connection write failed");
                    return;
                }
            }
            VmTx::Close => {
                let _ = writer.flush().await;
                let _ = writer.shutdown().await;
                return;
            }
            VmTx::Idle => {
                if writer.flush().await.is_err() {
                    return;
                }
                wake.notified().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
