//! A client attached to a VM that another instance of the site holds: the link between the
//! client's instance and the VM's owner.
//!
//! The client's instance looks the selection up in the site's directory
//! ([`SharedState::locate`](crate::SharedState::locate)), checks its client's grants
//! ([`Concentrator::attach_remote`](vspc_concentrator::Concentrator::attach_remote)), then
//! connects to the owner's link listener and sends one header line:
//!
//! ```text
//! VSPC-LINK 1 <site-token> <rw|ro|excl|kick> <vc-uuid> <service-uri> <user>@<instance>\n
//! ```
//!
//! (fields percent-encoded, so none holds a space). The owner checks the token (in constant
//! time), answers `OK\n` or `ERR <reason>\n`, and serves the link as an ordinary core client:
//! raw, with the in-band escape (a break is `Ctrl-] b`, a literal `Ctrl-]` is doubled), a
//! user whose one grant is that VM in that mode, attached at once. So the owner enforces the
//! modes, exclusivity and kicks across the site, replays the scrollback, applies its flow
//! control, lists the client as `user@instance`, and alone writes the VM's console log. On
//! the client's side the client stays a core client of its own instance: its input goes to
//! the link ([`Concentrator::poll_remote_input`](vspc_concentrator::Concentrator::poll_remote_input)),
//! the link's bytes to it under its output budget, and the link's end sends it back to the
//! menu.

use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tracing::Instrument;
use vspc_concentrator::{
    label_of, AttachError, ClientId, ClientSetup, Grant, Mode, RemoteGrant, RemoteVm, Rights,
    Transport, User,
};

use crate::client::{run_client, StreamSink, StreamSource};
use crate::cluster::{Cluster, SiteVm};
use crate::Shared;

/// The header's first word and version.
const MAGIC: &str = "VSPC-LINK 1";

/// Longest header line (the owner's answer too): a token, a UUID, a service URI, a user.
const MAX_HEADER: usize = 2048;

/// How long connecting, the header and its answer may take, each.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a directory lookup may take before the client is told the site is unavailable.
const LOCATE_TIMEOUT: Duration = Duration::from_secs(2);

/// Bytes read from a link at a time.
const READ_CHUNK: usize = 8192;

/// TCP keepalive on links (the keepIdle model of VM sockets): an owner that vanished
/// without a FIN is noticed.
const LINK_KEEP_IDLE_SECS: u32 = 30;

/// How a remote link's tasks are woken: the hub notifies both on every wakeup of their
/// client (output taken, input typed, closing), and when the link is no longer current.
#[derive(Debug, Default)]
pub(crate) struct LinkSignals {
    reader: Notify,
    writer: Notify,
}

impl LinkSignals {
    pub(crate) fn wake(&self) {
        self.reader.notify_one();
        self.writer.notify_one();
    }
}

/// What a link asks the owner for.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Header {
    token: String,
    /// `rw`, `ro`, `excl` or `kick`.
    mode: String,
    uuid: String,
    service_uri: String,
    /// `user@instance`.
    who: String,
}

impl Header {
    fn line(&self) -> String {
        format!(
            "{MAGIC} {} {} {} {} {}\n",
            encode(&self.token),
            self.mode,
            encode(&self.uuid),
            encode(&self.service_uri),
            encode(&self.who)
        )
    }

    fn parse(line: &str) -> Option<Header> {
        let rest = line.strip_prefix(MAGIC)?.strip_prefix(' ')?;
        let fields: Vec<&str> = rest.trim_end_matches(['\r', '\n']).split(' ').collect();
        let [token, mode, uuid, service_uri, who] = fields.as_slice() else {
            return None;
        };
        Some(Header {
            token: decode(token)?,
            mode: (*mode).to_owned(),
            uuid: decode(uuid)?,
            service_uri: decode(service_uri)?,
            who: decode(who)?,
        })
    }
}

/// Percent-encodes every byte that is not unreserved in a URI (so no field holds a space,
/// a newline or a `%` of its own).
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for &b in text.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Compares two secrets in time that depends on their lengths only.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Reads one line of at most [`MAX_HEADER`] bytes within [`HANDSHAKE_TIMEOUT`]; what
/// follows it stays in `reader`'s buffer.
async fn read_line<R: AsyncRead + Unpin>(reader: &mut BufReader<R>) -> Option<String> {
    let mut line = Vec::new();
    let read = async {
        let mut limited = (&mut *reader).take(MAX_HEADER as u64);
        limited.read_until(b'\n', &mut line).await
    };
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, read).await {
        Ok(Ok(_)) if line.ends_with(b"\n") => String::from_utf8(line).ok(),
        _ => None,
    }
}

// ----- the owner's side -----

/// Links that may be sending their header at once: past it a new connection is closed at
/// once, so connections that never send one cannot pile up (each waits at most
/// [`HANDSHAKE_TIMEOUT`]).
const MAX_HANDSHAKES: usize = 64;

/// Accepts links from the site's other instances until shutdown.
pub(crate) async fn accept_links(shared: Arc<Shared>, listener: TcpListener, cluster: Cluster) {
    let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    crate::accept_loop(&shared, listener, "link", |stream, peer| {
        match handshakes.clone().try_acquire_owned() {
            Ok(permit) => {
                tokio::spawn(serve_link(
                    shared.clone(),
                    cluster.clone(),
                    stream,
                    peer,
                    permit,
                ));
            }
            Err(_) => tracing::debug!(%peer, "too many links in their handshake: closed"),
        }
    })
    .await;
}

/// Serves one link: the header, then the VM as a core client.
async fn serve_link(
    shared: Arc<Shared>,
    cluster: Cluster,
    stream: TcpStream,
    peer: SocketAddr,
    handshake: tokio::sync::OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    crate::vm_conn::set_keepalive(&stream, LINK_KEEP_IDLE_SECS);
    let (reader, mut writer) = stream.into_split();
    let mut reader = BufReader::new(reader);
    let answer = match read_line(&mut reader)
        .await
        .as_deref()
        .and_then(Header::parse)
    {
        None => Err("malformed header".to_owned()),
        Some(header) => match cluster.site_token().await {
            Ok(token) if same_secret(&header.token, &token) => {
                register(&shared, peer, &header).map(|c| (c, header))
            }
            Ok(_) => Err("bad site token".to_owned()),
            Err(error) => Err(format!("site token unavailable: {error}")),
        },
    };
    let ((client, signals), header) = match answer {
        Ok(registered) => registered,
        Err(reason) => {
            tracing::warn!(%peer, %reason, "link refused");
            let line = format!("ERR {}\n", reason.replace(['\r', '\n'], " "));
            let _ =
                tokio::time::timeout(HANDSHAKE_TIMEOUT, writer.write_all(line.as_bytes())).await;
            return;
        }
    };
    let ok = tokio::time::timeout(HANDSHAKE_TIMEOUT, writer.write_all(b"OK\n")).await;
    drop(handshake);
    if !matches!(ok, Ok(Ok(()))) {
        shared.lock().client_closed(client);
        return;
    }
    let span = tracing::info_span!("link", client = client.0, %peer, who = %header.who);
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

/// Registers a link as a raw client with the escape, attached at once to the VM it names in
/// the mode it asks for (its user's one grant).
fn register(
    shared: &Shared,
    peer: SocketAddr,
    header: &Header,
) -> Result<(ClientId, Arc<crate::hub::ClientSignals>), String> {
    let (mode, kick) = match header.mode.as_str() {
        "kick" => (Mode::Exclusive, true),
        word => (Mode::parse(word).ok_or("unknown mode")?, false),
    };
    let mut hub = shared.lock();
    let vm = hub
        .core
        .find_port(&header.uuid, &header.service_uri)
        .ok_or_else(|| "the VM is not here any more".to_owned())?;
    let rights = Rights {
        read_only: mode == Mode::ReadOnly,
        read_write: mode == Mode::ReadWrite,
        exclusive: mode == Mode::Exclusive,
        kick,
    };
    let user = User {
        name: header.who.clone(),
        grants: vec![Grant {
            pattern: header.uuid.clone(),
            rights,
        }],
    };
    let setup = ClientSetup::new(Transport::Raw)
        .user(Arc::new(user))
        .escape(true);
    let client = hub
        .core
        .handle_client_connect_with(Instant::now(), peer, setup)
        .map_err(|refused| refused.to_string())?;
    // The menu a new client gets is not the link's: it asked for its VM.
    hub.core.poll_client_transmit(client, &mut Vec::new());
    let attached = if kick {
        hub.core.attach_kick(client, vm)
    } else {
        hub.core.attach(client, vm, mode)
    };
    let result = match attached {
        Ok(()) => Ok((client, hub.register_client(client))),
        Err(error) => {
            hub.core.handle_client_closed(client);
            Err(error.to_string())
        }
    };
    hub.settle();
    result
}

// ----- the client's side -----

/// Answers [`Event::SelectionElsewhere`](vspc_concentrator::Event::SelectionElsewhere): looks
/// `selector` up in the site's directory, attaches the client to the VM another instance
/// holds, and runs the link until either end closes it.
pub(crate) async fn attach_elsewhere(
    shared: Weak<Shared>,
    cluster: Cluster,
    client: ClientId,
    selector: String,
) {
    let found = tokio::time::timeout(LOCATE_TIMEOUT, cluster.state.locate(&selector)).await;
    let Some(shared) = shared.upgrade() else {
        return;
    };
    let found = match found {
        Ok(Ok(found)) => found,
        Ok(Err(error)) => {
            tracing::warn!(%error, client = client.0, "site directory unavailable");
            return fail(&shared, client, AttachError::SiteUnavailable(selector));
        }
        Err(_) => {
            tracing::warn!(client = client.0, "site directory did not answer in time");
            return fail(&shared, client, AttachError::SiteUnavailable(selector));
        }
    };
    // A port this instance holds would have matched here; a record of it is stale.
    let found: Vec<SiteVm> = found
        .into_iter()
        .filter(|vm| vm.instance.link != cluster.link)
        .collect();
    let target = match found.as_slice() {
        [] => return fail(&shared, client, AttachError::NoMatch(selector)),
        [one] => one.clone(),
        several => {
            let choices = several
                .iter()
                .map(|vm| {
                    format!(
                        "{}/{} on {}",
                        vm.port.name,
                        label_of(&vm.port.service_uri),
                        vm.instance.id
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            let error = AttachError::Ambiguous { selector, choices };
            return fail(&shared, client, error);
        }
    };
    let remote = RemoteVm::new(
        target.port.name.clone(),
        label_of(&target.port.service_uri),
        target.port.uuid.clone(),
        target.instance.id.clone(),
    );
    let (grant, who, signals) = {
        let mut hub = shared.lock();
        let granted = hub.core.attach_remote(client, remote);
        let who = hub.core.client(client).map(|c| match c.user {
            Some(user) => user,
            None => c.peer.to_string(),
        });
        let signals = granted.is_ok().then(|| hub.link_opened(client));
        hub.settle();
        match (granted, who, signals) {
            (Ok(grant), Some(who), Some(signals)) => (grant, who, signals),
            // Refused (the client was told why) or gone.
            _ => return,
        }
    };
    let span = tracing::info_span!("remote", client = client.0, vm = %target.port.name, owner = %target.instance.id);
    run_remote(shared, cluster, client, target, grant, who, signals)
        .instrument(span)
        .await;
}

fn fail(shared: &Shared, client: ClientId, error: AttachError) {
    let mut hub = shared.lock();
    hub.core.selection_failed(client, error);
    hub.settle();
}

/// Connects to the owner, sends the header, and relays until either end closes.
async fn run_remote(
    shared: Arc<Shared>,
    cluster: Cluster,
    client: ClientId,
    target: SiteVm,
    grant: RemoteGrant,
    who: String,
    signals: Arc<LinkSignals>,
) {
    let owner = target.instance.id.clone();
    let connected = connect(&cluster, &target, grant, &who).await;
    let (reader, writer) = match connected {
        Ok(halves) => halves,
        Err(reason) => {
            tracing::info!(%reason, "remote attach refused");
            return end(&shared, client, &signals, &format!("{owner}: {reason}"));
        }
    };
    tracing::info!("attached to a VM on another instance");
    let mut writer_task = tokio::spawn(
        link_writer(shared.clone(), client, writer, signals.clone()).in_current_span(),
    );
    let ended = link_reader(&shared, client, reader, &signals).await;
    if let Some(reason) = ended {
        end(&shared, client, &signals, &format!("{owner} {reason}"));
    }
    signals.wake();
    if tokio::time::timeout(HANDSHAKE_TIMEOUT, &mut writer_task)
        .await
        .is_err()
    {
        writer_task.abort();
    }
    tracing::info!("remote link closed");
}

/// The link's end, told to the client (back to its menu) if the link is still its own.
fn end(shared: &Shared, client: ClientId, signals: &Arc<LinkSignals>, reason: &str) {
    let mut hub = shared.lock();
    if hub.link_closed(client, signals) {
        hub.core
            .handle_remote_closed(Instant::now(), client, reason);
    }
    hub.settle();
}

/// Connects to `target`'s owner and has the header accepted: the link's halves, the
/// reader holding what followed the answer.
async fn connect(
    cluster: &Cluster,
    target: &SiteVm,
    grant: RemoteGrant,
    who: &str,
) -> Result<(BufReader<OwnedReadHalf>, OwnedWriteHalf), String> {
    let token = cluster
        .site_token()
        .await
        .map_err(|e| format!("site token unavailable: {e}"))?;
    let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, TcpStream::connect(target.instance.link))
        .await
        .map_err(|_| "did not accept the link in time".to_owned())?
        .map_err(|e| format!("cannot be reached ({e})"))?;
    let _ = stream.set_nodelay(true);
    crate::vm_conn::set_keepalive(&stream, LINK_KEEP_IDLE_SECS);
    let header = Header {
        token,
        mode: if grant.kick {
            "kick".to_owned()
        } else {
            grant.mode.short().to_owned()
        },
        uuid: target.port.uuid.clone(),
        service_uri: target.port.service_uri.clone(),
        who: format!("{who}@{}", cluster.instance),
    };
    let (reader, mut writer) = stream.into_split();
    let mut reader = BufReader::new(reader);
    let line = header.line();
    let sent = tokio::time::timeout(HANDSHAKE_TIMEOUT, writer.write_all(line.as_bytes())).await;
    if !matches!(sent, Ok(Ok(()))) {
        return Err("closed the link".to_owned());
    }
    match read_line(&mut reader).await.as_deref() {
        Some("OK\n") => Ok((reader, writer)),
        Some(line) => match line.strip_prefix("ERR ") {
            Some(reason) => Err(reason.trim_end().to_owned()),
            None => Err("answered the link with something else".to_owned()),
        },
        None => Err("did not answer the link".to_owned()),
    }
}

/// Feeds the owner's output to the client while it keeps up. `Some(reason)` when the link
/// ended under a client still attached through it.
async fn link_reader(
    shared: &Arc<Shared>,
    client: ClientId,
    mut reader: BufReader<OwnedReadHalf>,
    signals: &Arc<LinkSignals>,
) -> Option<&'static str> {
    let mut stop = shared.stop.subscribe();
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        // A client a whole budget behind stops the link's reading: the owner's flow control
        // then holds the VM, as for a local client.
        loop {
            let (wants, live) = {
                let hub = shared.lock();
                (
                    hub.core.remote_wants_output(client),
                    hub.link_is(client, signals) && !hub.core.client_is_closing(client),
                )
            };
            if !live {
                return None;
            }
            if wants {
                break;
            }
            tokio::select! {
                _ = signals.reader.notified() => {}
                _ = stop.wait_for(|stop| *stop) => return None,
            }
        }
        let n = tokio::select! {
            read = reader.read(&mut buf) => match read {
                Ok(0) => return Some("closed the link"),
                Err(_) => return Some("dropped the link"),
                Ok(n) => n,
            },
            _ = signals.reader.notified() => continue,
            _ = stop.wait_for(|stop| *stop) => return None,
        };
        let mut hub = shared.lock();
        if !hub.link_is(client, signals) {
            return None;
        }
        hub.core
            .handle_remote_output(Instant::now(), client, &buf[..n]);
        hub.settle();
    }
}

/// Writes the client's input to the owner; shuts the link down when the client is gone or
/// no longer attached through it.
async fn link_writer(
    shared: Arc<Shared>,
    client: ClientId,
    mut writer: OwnedWriteHalf,
    signals: Arc<LinkSignals>,
) {
    loop {
        let next = {
            let mut hub = shared.lock();
            let live = hub.link_is(client, &signals)
                && hub.core.client_remote(client).is_some()
                && !hub.core.client_is_closing(client);
            let next = live.then(|| hub.core.poll_remote_input(client));
            hub.settle();
            next
        };
        match next {
            None => break,
            Some(Some(bytes)) => {
                if writer.write_all(&bytes).await.is_err() {
                    break;
                }
            }
            Some(None) => signals.writer.notified().await,
        }
    }
    let _ = tokio::time::timeout(HANDSHAKE_TIMEOUT, writer.shutdown()).await;
    // The reader ends with the link.
    signals.reader.notify_one();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_with_spaces_and_newlines_encoded() {
        let header = Header {
            token: "ab12".into(),
            mode: "excl".into(),
            uuid: "01 23 45 67 89 ab cd ef-fe dc ba 98 00 00 00 00".into(),
            service_uri: "vSPC.py?port=console".into(),
            who: "alice smith\r\n@b".into(),
        };
        let line = header.line();
        assert_eq!(
            line,
            "VSPC-LINK 1 ab12 excl 01%2023%2045%2067%2089%20ab%20cd%20ef-fe%20dc%20ba%2098%2000%2000%2000%2000 vSPC.py%3Fport%3Dconsole alice%20smith%0D%0A%40b\n"
        );
        assert_eq!(Header::parse(&line), Some(header));
        assert_eq!(Header::parse("VSPC-LINK 2 a rw b c d\n"), None);
        assert_eq!(Header::parse("VSPC-LINK 1 a rw b c\n"), None);
        assert_eq!(Header::parse("VSPC-LINK 1 a rw b c %4\n"), None);
        assert_eq!(Header::parse("VSPC-LINK 1 a rw b c %ff\n"), None);
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("abcd", "abcd"));
        assert!(!same_secret("abcd", "abce"));
        assert!(!same_secret("abcd", "abc"));
        assert!(!same_secret("", "a"));
    }
}
