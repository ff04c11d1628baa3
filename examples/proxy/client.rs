//! Client connections (people and tools, over telnet): selection, then relay.
//!
//! The client side speaks telnet through `vspc_telnet::Telnet`, negotiated for interactive
//! use: we WILL ECHO and WILL SGA (the client goes character-at-a-time and lets the VM's
//! console echo), and BINARY both ways so bytes, CR and LF included, pass unmangled.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tracing::Instrument;
use vspc_proto::vspc_telnet::{option, Command, Policy, Side, Telnet, TelnetConfig, TelnetEvent};

use super::hub::{ClientId, ClientTx, InputResult, Mode, VmId};
use super::Shared;

/// Longest selection line accepted.
const MAX_LINE: usize = 256;
/// How long the writer tries to deliver the goodbye message to a client being dropped.
const GOODBYE_TIMEOUT: Duration = Duration::from_millis(500);

fn client_telnet() -> Telnet {
    let policy = Policy::new()
        .accept_both(option::BINARY)
        .accept_both(option::SGA)
        .accept_local(option::ECHO);
    let mut telnet = Telnet::new(TelnetConfig {
        policy,
        ..TelnetConfig::default()
    });
    telnet.request(Side::Local, option::ECHO, true);
    telnet.request(Side::Local, option::SGA, true);
    telnet.request(Side::Local, option::BINARY, true);
    telnet.request(Side::Remote, option::BINARY, true);
    telnet.request(Side::Remote, option::SGA, true);
    telnet
}

/// Serves one client; `sticky` attaches it at once to that VM (a sticky port).
pub(crate) async fn serve_client(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    sticky: Option<VmId>,
) {
    let _ = stream.set_nodelay(true);
    let wake = Arc::new(Notify::new());
    let kill = Arc::new(Notify::new());
    let registered = shared
        .lock()
        .register_client(peer, wake.clone(), kill.clone());
    let cid = match registered {
        Ok(cid) => cid,
        Err(refused) => {
            tracing::warn!(%peer, %refused, "client refused");
            let mut stream = stream;
            let message = format!("vspc: {refused}\r\n");
            let _ =
                tokio::time::timeout(GOODBYE_TIMEOUT, stream.write_all(message.as_bytes())).await;
            return;
        }
    };
    let span = tracing::info_span!("client", client = cid, %peer);
    async move {
        tracing::info!("client connected");
        let (reader, writer) = stream.into_split();
        let writer_task =
            tokio::spawn(client_writer(shared.clone(), cid, writer, wake, kill).in_current_span());
        let mut writer_task = writer_task;
        client_reader(&shared, cid, reader, sticky).await;
        // A client being dropped (shutdown, too slow) has a goodbye in flight: let the writer
        // deliver it before the registration, which holds it, goes away.
        let mut writer_done = false;
        if shared.lock().is_closing(cid) {
            writer_done = tokio::time::timeout(GOODBYE_TIMEOUT * 2, &mut writer_task)
                .await
                .is_ok();
        }
        shared.lock().client_closed(cid);
        // A JoinHandle must not be polled again once it has completed.
        if !writer_done {
            let _ = tokio::time::timeout(GOODBYE_TIMEOUT * 2, writer_task).await;
        }
        tracing::info!("client closed");
    }
    .instrument(span)
    .await;
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

async fn client_writer<W>(
    shared: Arc<Shared>,
    cid: ClientId,
    mut writer: W,
    wake: Arc<Notify>,
    kill: Arc<Notify>,
) where
    W: AsyncWrite + Unpin,
{
    loop {
        let next = shared.lock().take_client_output(cid);
        match next {
            ClientTx::Write(mut chunks) => {
                // A client being dropped may have stopped reading: `kill` abandons the write
                // so the task ends even when the socket buffer is full.
                tokio::select! {
                    result = write_chunks(&mut writer, &mut chunks) => {
                        if result.is_err() {
                            return;
                        }
                    }
                    _ = kill.notified() => {
                        kill.notify_one();
                    }
                }
            }
            ClientTx::Close(message) => {
                let _ = tokio::time::timeout(GOODBYE_TIMEOUT, async {
                    writer.write_all(&message).await?;
                    writer.flush().await?;
                    writer.shutdown().await
                })
                .await;
                return;
            }
            ClientTx::Idle => wake.notified().await,
        }
    }
}

/// Line editing while the client chooses a VM.
struct Selection {
    line: Vec<u8>,
    /// Skip one LF or NUL after the CR that ended a line.
    after_cr: bool,
}

enum Picked {
    /// Bytes after the selection line (forwarded to the VM once attached).
    Line(String, Vec<u8>),
    More,
    Overflow,
}

impl Selection {
    fn feed(&mut self, data: &[u8], echo: &mut Vec<u8>) -> Picked {
        for (i, &b) in data.iter().enumerate() {
            match b {
                b'\r' | b'\n' => {
                    if self.after_cr && (b == b'\n') {
                        self.after_cr = false;
                        continue;
                    }
                    if self.line.is_empty() {
                        self.after_cr = b == b'\r';
                        echo.extend_from_slice(b"\r\n");
                        continue;
                    }
                    let line = String::from_utf8_lossy(&self.line).trim().to_owned();
                    self.line.clear();
                    let mut rest = &data[i + 1..];
                    if b == b'\r' {
                        if let Some(&(b'\n' | 0)) = rest.first() {
                            rest = &rest[1..];
                        }
                    }
                    echo.extend_from_slice(b"\r\n");
                    return Picked::Line(line, rest.to_vec());
                }
                0 => {}
                0x08 | 0x7f => {
                    self.after_cr = false;
                    if self.line.pop().is_some() {
                        echo.extend_from_slice(b"\x08 \x08");
                    }
                }
                _ => {
                    self.after_cr = false;
                    if self.line.len() >= MAX_LINE {
                        return Picked::Overflow;
                    }
                    self.line.push(b);
                    if (0x20..0x7f).contains(&b) {
                        echo.push(b);
                    }
                }
            }
        }
        Picked::More
    }
}

/// Parses `[connect] <selector> [rw|ro|excl]`.
fn parse_selection(line: &str) -> (String, Mode) {
    let mut words: Vec<&str> = line.split_whitespace().collect();
    if words
        .first()
        .is_some_and(|w| w.eq_ignore_ascii_case("connect"))
    {
        words.remove(0);
    }
    let mode = match words.last().and_then(|w| Mode::parse(w)) {
        Some(mode) if words.len() > 1 => {
            words.pop();
            mode
        }
        _ => Mode::ReadWrite,
    };
    (words.join(" "), mode)
}

async fn client_reader<R>(shared: &Arc<Shared>, cid: ClientId, mut reader: R, sticky: Option<VmId>)
where
    R: AsyncRead + Unpin,
{
    let mut telnet = client_telnet();
    let mut selection = Selection {
        line: Vec::new(),
        after_cr: false,
    };
    let mut attached = false;
    {
        let mut hub = shared.lock();
        if let Some(tx) = telnet.poll_transmit() {
            hub.queue_client(cid, tx);
        }
        match sticky {
            Some(vm) => match hub.attach(cid, vm, Mode::ReadWrite) {
                Ok(()) => attached = true,
                Err(message) => {
                    let text = format!("vspc: {message}\r\n");
                    hub.queue_client(cid, Bytes::from(text));
                }
            },
            None => {
                let menu = hub.menu();
                hub.queue_client(cid, Bytes::from(menu));
            }
        }
    }
    let mut stop = shared.stop.subscribe();
    let mut buf = vec![0u8; 8192];
    let mut data = Vec::with_capacity(8192);
    loop {
        let n = tokio::select! {
            read = reader.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            _ = stop.wait_for(|stop| *stop) => return,
        };
        data.clear();
        // Where in `data` each serial break (IAC BRK) fell, so order is kept.
        let mut breaks: Vec<usize> = Vec::new();
        let was_attached = attached;
        let mut input = &buf[..n];
        while let Some(event) = telnet.next_event(&mut input) {
            match event {
                TelnetEvent::Data(bytes) => data.extend_from_slice(bytes),
                TelnetEvent::Command(Command::Break) => breaks.push(data.len()),
                _ => {}
            }
        }
        let reply = telnet.poll_transmit();
        if let Some(reply) = reply {
            shared.lock().queue_client(cid, reply);
        }
        let mut forward = std::mem::take(&mut data);
        if !attached {
            let mut echo = Vec::new();
            let picked = selection.feed(&forward, &mut echo);
            forward.clear();
            let mut hub = shared.lock();
            if !echo.is_empty() {
                hub.queue_client(cid, Bytes::from(echo));
            }
            match picked {
                Picked::More => {}
                Picked::Overflow => {
                    hub.drop_client(cid, "\r\nvspc: selection line too long\r\n");
                    return;
                }
                Picked::Line(line, rest) => {
                    let (selector, mode) = parse_selection(&line);
                    let result = hub
                        .resolve(&selector)
                        .and_then(|vm| hub.attach(cid, vm, mode));
                    match result {
                        Ok(()) => {
                            attached = true;
                            forward = rest;
                        }
                        Err(message) => {
                            let text = format!("vspc: {message}\r\n{}", hub.menu());
                            hub.queue_client(cid, Bytes::from(text));
                        }
                    }
                }
            }
        }
        if attached {
            // Breaks typed before the selection completed have no VM to go to.
            let breaks = if was_attached { breaks } else { Vec::new() };
            let mut start = 0;
            for at in breaks {
                if at > start && !send_to_vm(shared, cid, &forward[start..at]).await {
                    return;
                }
                start = at;
                if !send_break(shared, cid).await {
                    return;
                }
            }
            if start < forward.len() && !send_to_vm(shared, cid, &forward[start..]).await {
                return;
            }
        }
        data = forward;
    }
}

/// Sends a serial break to the VM after whatever the client sent before it. Returns false
/// when the client is gone.
async fn send_break(shared: &Arc<Shared>, cid: ClientId) -> bool {
    loop {
        let result = shared.lock().client_break(cid);
        match result {
            InputResult::Sent | InputResult::Discarded => return true,
            InputResult::Gone => return false,
            InputResult::Backpressure => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

/// Sends client input to the VM, waiting while the VM side is full (backpressure reaches the
/// client through TCP, since we stop reading). Returns false when the client is gone.
async fn send_to_vm(shared: &Arc<Shared>, cid: ClientId, bytes: &[u8]) -> bool {
    loop {
        let result = shared.lock().client_input(cid, bytes);
        match result {
            InputResult::Sent | InputResult::Discarded => return true,
            InputResult::Gone => return false,
            InputResult::Backpressure => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_lines() {
        assert_eq!(
            parse_selection("vm-1"),
            ("vm-1".to_owned(), Mode::ReadWrite)
        );
        assert_eq!(
            parse_selection("connect vm-1 ro"),
            ("vm-1".to_owned(), Mode::ReadOnly)
        );
        assert_eq!(
            parse_selection("vm-1 excl"),
            ("vm-1".to_owned(), Mode::Exclusive)
        );
        let mut s = Selection {
            line: Vec::new(),
            after_cr: false,
        };
        let mut echo = Vec::new();
        assert!(matches!(s.feed(b"vm", &mut echo), Picked::More));
        match s.feed(b"-1\r\nabc", &mut echo) {
            Picked::Line(line, rest) => {
                assert_eq!(line, "vm-1");
                assert_eq!(rest, b"abc");
            }
            _ => panic!("no line"),
        }
    }
}
