//! The hub: every VM connection's `ProxySession`, the one `Coordinator`, the VM registry and
//! the client registrations, behind one `std::sync::Mutex`.
//!
//! Coordinator calls take `&mut ProxySession`, sometimes two at once, so sessions and the
//! coordinator must live together. Connection tasks lock the hub for short, non-async
//! critical sections (feed input, drain events, route bytes into bounded queues) and never
//! hold it across an `.await`; socket writes happen outside, from queues the hub fills. A VM
//! connection's task leaves its `Waker` here when it has nothing to write: queuing output for
//! it wakes it (no channel or `Notify` per idle VM).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Waker;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use serde::Serialize;
use tokio::sync::Notify;
use vspc_proto::vspc_telnet::encode_data;
use vspc_proto::{
    BeginOutcome, ClaimOutcome, CloseOutcome, CompleteOutcome, Coordinator, CoordinatorConfig,
    CoordinatorEvent, ProxyConfig, ProxyEvent, ProxySession, SendError, SessionId,
};

use super::config::Config;
use super::logs::{file_name, ConsoleLog};

/// Index of a VM entry (one serial port of one VM).
pub(crate) type VmId = u64;
/// Index of a client connection.
pub(crate) type ClientId = u64;

/// How often lingering entries expire and console logs are flushed.
const HOUSEKEEPING: Duration = Duration::from_secs(1);

/// How many VM ports the client menu lists: a screenful. Thousands of lines would take the
/// hub lock for milliseconds on every client connect and help nobody; any VM can still be
/// selected by number, name or UUID.
const MENU_ROWS: usize = 40;

/// How many vMotion records a VM keeps.
const MAX_HISTORY: usize = 32;

/// What a client may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Mode {
    /// Read and write; several may share a VM.
    ReadWrite,
    /// Watch only: input is discarded.
    ReadOnly,
    /// The only writer while attached; watchers may join, other writers may not.
    Exclusive,
}

impl Mode {
    pub(crate) fn parse(word: &str) -> Option<Mode> {
        match word.to_ascii_lowercase().as_str() {
            "rw" | "read-write" => Some(Mode::ReadWrite),
            "ro" | "read-only" => Some(Mode::ReadOnly),
            "excl" | "exclusive" | "x" => Some(Mode::Exclusive),
            _ => None,
        }
    }

    fn short(self) -> &'static str {
        match self {
            Mode::ReadWrite => "rw",
            Mode::ReadOnly => "ro",
            Mode::Exclusive => "excl",
        }
    }
}

/// Identity of a VM port: VC UUID plus the service URI of its DO-PROXY.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct VmKey {
    /// The UUID then the service URI, in one allocation; `uuid_len` splits them (and keeps
    /// the key unambiguous whatever bytes either holds).
    text: Box<str>,
    uuid_len: usize,
}

impl VmKey {
    fn new(uuid: &str, service_uri: &str) -> VmKey {
        VmKey {
            text: [uuid, service_uri].concat().into_boxed_str(),
            uuid_len: uuid.len(),
        }
    }

    fn uuid(&self) -> &str {
        self.text.get(..self.uuid_len).unwrap_or_default()
    }

    fn service_uri(&self) -> &str {
        self.text.get(self.uuid_len..).unwrap_or_default()
    }
}

/// Where a VM entry stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VmState {
    Connected,
    /// The source closed while a claimed vMotion is pending.
    Migrating,
    Disconnected {
        since: Instant,
    },
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct VmotionRecord {
    /// Seconds since the Unix epoch.
    at: u64,
    event: String,
    sequence: String,
}

/// One serial port of one VM, as clients see it. Survives reconnects and vMotions.
struct VmEntry {
    id: VmId,
    key: Arc<VmKey>,
    name: String,
    /// Why this entry is flagged (a second live connection claiming a held identity).
    flagged: Option<String>,
    active: Option<SessionId>,
    state: VmState,
    connections: u64,
    clients: Vec<ClientId>,
    exclusive: Option<ClientId>,
    scrollback: VecDeque<u8>,
    /// Boxed: most entries never log (no log directory), and a log is 72 bytes.
    log: Option<Box<ConsoleLog>>,
    bytes_from_vm: u64,
    bytes_to_vm: u64,
    /// The last vMotion records; boxed once there is one (most VMs never move): 8 bytes
    /// inline instead of an empty deque's 32.
    #[allow(clippy::box_collection)]
    history: Option<Box<VecDeque<VmotionRecord>>>,
    /// Boxed: only with `--sticky-ports`.
    sticky: Option<Box<Sticky>>,
}

/// A VM entry's own client listener.
struct Sticky {
    addr: SocketAddr,
    task: tokio::task::AbortHandle,
}

/// One VM connection.
struct VmConn {
    session: ProxySession,
    vm: Option<VmId>,
    /// VM output that arrived before the connection identified (bounded).
    unbound: BytesMut,
    /// The connection's task, when it waits for something to write.
    waker: Option<Waker>,
    /// The writer should close the socket once its queue is drained.
    close: bool,
    peer: SocketAddr,
    tls: bool,
}

impl VmEntry {
    /// The short label of the port (see `label_of`).
    fn label(&self) -> &str {
        label_of(self.key.service_uri())
    }
}

impl VmConn {
    /// Tells the connection's task there is something to write (or to close).
    fn wake(&mut self) {
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }
}

/// One client connection.
struct ClientReg {
    vm: Option<VmId>,
    mode: Mode,
    queue: VecDeque<Bytes>,
    queued: usize,
    wake: Arc<Notify>,
    /// Tells the writer to give up the current write: the client is being dropped.
    kill: Arc<Notify>,
    closing: Option<Bytes>,
    peer: SocketAddr,
    bytes_out: u64,
    bytes_in: u64,
}

/// Counters for `/metrics`.
#[derive(Debug, Default, Clone, Copy)]
struct Metrics {
    vm_connections_total: u64,
    vm_connections_refused: u64,
    client_connections_total: u64,
    client_connections_refused: u64,
    clients_dropped_slow: u64,
    bytes_from_vm: u64,
    bytes_to_vm: u64,
    client_bytes_discarded: u64,
    unbound_bytes_dropped: u64,
    protocol_errors: u64,
    reattached: u64,
    impostors: u64,
    vmotion_goahead: u64,
    vmotion_notnow: u64,
    vmotion_completed: u64,
    vmotion_aborted: u64,
    vmotion_expired: u64,
    vmotion_peer_rejected: u64,
}

/// What the VM writer should do next.
pub(crate) enum VmTx {
    Write(Bytes),
    Close,
    Idle,
}

/// What the client writer should do next.
pub(crate) enum ClientTx {
    Write(Vec<Bytes>),
    Close(Bytes),
    Idle,
}

/// The answer to client input.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum InputResult {
    Sent,
    /// The VM's queue (or the vMotion hold) is full: retry the same bytes later.
    Backpressure,
    Discarded,
    /// The client is being closed.
    Gone,
}

/// Why a connection was not registered.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refused {
    #[error("connection limit ({0}) reached")]
    Capacity(usize),
    #[error("shutting down")]
    ShuttingDown,
}

/// The shared state of the concentrator.
pub(crate) struct Hub {
    config: Arc<Config>,
    /// One configuration shared by every session.
    session_config: Arc<ProxyConfig>,
    coordinator: Coordinator,
    /// Boxed: a `VmConn` (its `ProxySession` inline) is over a kilobyte, and a hash table
    /// keeps up to half its slots empty; boxed, an empty slot costs 16 bytes (heaptrack: the
    /// table's rehash was the largest peak consumer).
    conns: HashMap<SessionId, Box<VmConn>>,
    /// Boxed: a B-tree node holds eleven values and is about half full when ids grow, so
    /// inline entries cost nearly twice their size.
    vms: BTreeMap<VmId, Box<VmEntry>>,
    /// The key is shared with the entry's.
    by_key: HashMap<Arc<VmKey>, VmId>,
    clients: HashMap<ClientId, ClientReg>,
    /// Sessions holding client data for a vMotion: the only ones with a deadline.
    holding: HashSet<SessionId>,
    /// VMs that disconnected, oldest first, for the linger expiry (an entry that came back
    /// is skipped when its turn comes): the timer never walks every VM.
    lingering: VecDeque<(Instant, VmId)>,
    /// VMs whose console log was written since the last flush.
    unflushed_logs: HashSet<VmId>,
    /// When the once-a-second housekeeping (linger expiry, log flush) is next due.
    next_housekeeping: Instant,
    next_session: u64,
    next_vm: VmId,
    next_client: ClientId,
    metrics: Metrics,
    /// Wakes the timer task when a new deadline is earlier than the one it sleeps to.
    timer: Arc<Notify>,
    /// What the timer task sleeps to (see `next_deadline`).
    timer_at: Instant,
    /// VMs waiting for a sticky listener (the sticky task binds it outside the lock).
    sticky_tx: Option<tokio::sync::mpsc::Sender<VmId>>,
    shutting_down: bool,
    started: SystemTime,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The short label of a service URI: the value of `port=` when present (VMware's kit names
/// ports that way), otherwise the whole URI.
fn label_of(service_uri: &str) -> &str {
    service_uri
        .split_once('?')
        .and_then(|(_, query)| query.split('&').find_map(|kv| kv.strip_prefix("port=")))
        .unwrap_or(service_uri)
}

impl Hub {
    pub(crate) fn new(config: Arc<Config>, timer: Arc<Notify>) -> Hub {
        let coordinator = Coordinator::new(CoordinatorConfig {
            secret_len: config.vmotion.secret_len,
            vmotion_timeout: Duration::from_millis(config.vmotion.timeout_ms),
            ..CoordinatorConfig::default()
        });
        let session_config = Arc::new(ProxyConfig {
            max_subnegotiation: config.vm.max_subnegotiation,
            max_held: config.vm.max_held,
            ..ProxyConfig::default()
        });
        Hub {
            config,
            session_config,
            coordinator,
            conns: HashMap::new(),
            vms: BTreeMap::new(),
            by_key: HashMap::new(),
            clients: HashMap::new(),
            holding: HashSet::new(),
            lingering: VecDeque::new(),
            unflushed_logs: HashSet::new(),
            next_housekeeping: Instant::now() + HOUSEKEEPING,
            timer_at: Instant::now(),
            next_session: 1,
            next_vm: 1,
            next_client: 1,
            metrics: Metrics::default(),
            timer,
            sticky_tx: None,
            shutting_down: false,
            started: SystemTime::now(),
        }
    }

    pub(crate) fn set_sticky_sender(&mut self, tx: tokio::sync::mpsc::Sender<VmId>) {
        self.sticky_tx = Some(tx);
    }

    // ----- VM connections -----

    /// A new VM connection: its session queues the opening offers at once.
    pub(crate) fn register_vm_conn(
        &mut self,
        peer: SocketAddr,
        tls: bool,
    ) -> Result<SessionId, Refused> {
        if self.shutting_down {
            return Err(Refused::ShuttingDown);
        }
        if self.conns.len() >= self.config.vm.max_connections {
            self.metrics.vm_connections_refused += 1;
            return Err(Refused::Capacity(self.config.vm.max_connections));
        }
        let id = SessionId(self.next_session);
        self.next_session += 1;
        let session = ProxySession::new(id, self.session_config.clone());
        self.conns.insert(
            id,
            Box::new(VmConn {
                session,
                vm: None,
                unbound: BytesMut::new(),
                waker: None,
                close: false,
                peer,
                tls,
            }),
        );
        self.metrics.vm_connections_total += 1;
        Ok(id)
    }

    /// Bytes read from a VM.
    pub(crate) fn vm_input(&mut self, now: Instant, sid: SessionId, bytes: &Bytes) {
        if let Some(conn) = self.conns.get_mut(&sid) {
            conn.session.handle_input(now, bytes);
            self.process(now, sid);
        }
    }

    /// The next write for a VM connection. On `Idle`, `waker` is woken when there is more,
    /// and the session gives back the memory it does not use: an idle VM holds no buffer.
    pub(crate) fn take_vm_transmit(&mut self, sid: SessionId, waker: &Waker) -> VmTx {
        match self.conns.get_mut(&sid) {
            None => VmTx::Close,
            Some(conn) => match conn.session.poll_transmit() {
                Some(bytes) => VmTx::Write(bytes),
                None if conn.close || conn.session.is_closed() => VmTx::Close,
                None => {
                    match &mut conn.waker {
                        Some(held) if held.will_wake(waker) => {}
                        held => *held = Some(waker.clone()),
                    }
                    conn.session.shrink_to_fit();
                    if conn.unbound.is_empty() {
                        conn.unbound = BytesMut::new();
                    }
                    VmTx::Idle
                }
            },
        }
    }

    /// A VM connection reached EOF or failed.
    pub(crate) fn vm_closed(&mut self, now: Instant, sid: SessionId) {
        let Some(conn) = self.conns.get_mut(&sid) else {
            return;
        };
        if conn.session.is_closed() {
            return;
        }
        let outcome = self.coordinator.session_closed(now, &mut conn.session);
        let vm = conn.vm;
        tracing::info!(session = sid.0, ?outcome, "VM connection closed");
        match outcome {
            CloseOutcome::Migrating { .. } => {
                // Keep the session: it holds client data for the destination.
                if let Some(entry) = vm.and_then(|vm| self.vms.get_mut(&vm)) {
                    if entry.active == Some(sid) {
                        entry.state = VmState::Migrating;
                    }
                }
            }
            _ => self.drop_conn(now, sid),
        }
    }

    fn drop_conn(&mut self, now: Instant, sid: SessionId) {
        self.holding.remove(&sid);
        let Some(mut conn) = self.conns.remove(&sid) else {
            return;
        };
        conn.wake();
        if let Some(entry) = conn.vm.and_then(|vm| self.vms.get_mut(&vm)) {
            if entry.active == Some(sid) {
                entry.active = None;
                entry.state = VmState::Disconnected { since: now };
                self.lingering.push_back((now, entry.id));
                tracing::info!(vm = entry.id, name = %entry.name, "VM disconnected; entry kept for a reconnect");
            }
        }
    }

    /// Drains a session's events and acts on each (see `ProxyEvent` and `Coordinator`).
    fn process(&mut self, now: Instant, sid: SessionId) {
        loop {
            let Some(conn) = self.conns.get_mut(&sid) else {
                return;
            };
            let Some(event) = conn.session.poll_event() else {
                break;
            };
            let vm = conn.vm;
            match event {
                ProxyEvent::Data(bytes) => match vm {
                    Some(vm) => self.vm_output(vm, bytes),
                    None => {
                        let room = self
                            .config
                            .vm
                            .max_unbound
                            .saturating_sub(conn.unbound.len());
                        let take = room.min(bytes.len());
                        conn.unbound.extend_from_slice(&bytes[..take]);
                        self.metrics.unbound_bytes_dropped += (bytes.len() - take) as u64;
                    }
                },
                ProxyEvent::Identified(identity) => match vm {
                    Some(vm) => {
                        if let (Some(entry), Some(name)) = (self.vms.get_mut(&vm), identity.name) {
                            entry.name = name.as_str().to_owned();
                        }
                    }
                    None => self.try_bind(sid),
                },
                ProxyEvent::ProxyRequested(_) => self.try_bind(sid),
                ProxyEvent::VmotionBegin { sequence } => {
                    let allow = self.config.vmotion.allow;
                    let outcome = self.coordinator.begin(now, &mut conn.session, allow);
                    let event = match &outcome {
                        BeginOutcome::GoAhead { .. } => {
                            self.holding.insert(sid);
                            // Every vMotion gets the same timeout, so a new deadline is
                            // rarely the earliest: wake the timer only when it is (each wake
                            // walks the held sessions).
                            let deadline = conn
                                .session
                                .poll_timeout()
                                .into_iter()
                                .chain(self.coordinator.poll_timeout())
                                .min();
                            if let Some(at) = deadline.filter(|at| *at < self.timer_at) {
                                self.timer_at = at;
                                self.timer.notify_one();
                            }
                            self.metrics.vmotion_goahead += 1;
                            "goahead".to_owned()
                        }
                        BeginOutcome::NotNow(reason) => {
                            self.metrics.vmotion_notnow += 1;
                            format!("notnow ({reason:?})")
                        }
                        _ => "begin unanswered".to_owned(),
                    };
                    tracing::info!(session = sid.0, sequence = %hex(&sequence), %event, "VMOTION-BEGIN");
                    self.record(vm, event, &sequence);
                }
                ProxyEvent::PeerClaim { key } => {
                    let outcome = self.coordinator.claim(now, &mut conn.session);
                    tracing::info!(session = sid.0, ?outcome, "VMOTION-PEER");
                    let source_vm = match outcome {
                        ClaimOutcome::Accepted { source } => {
                            self.conns.get(&source).and_then(|c| c.vm)
                        }
                        ClaimOutcome::Rejected(_) => {
                            self.metrics.vmotion_peer_rejected += 1;
                            None
                        }
                        _ => None,
                    };
                    let seq = key.sequence().map(<[u8]>::to_vec).unwrap_or_default();
                    self.record(source_vm, format!("peer {outcome:?}"), &seq);
                }
                ProxyEvent::VmotionComplete { source, .. } => self.complete(now, sid, source),
                ProxyEvent::VmotionAbort { sequence, released } => {
                    self.coordinator.abort(&conn.session);
                    if !conn.session.is_holding() {
                        self.holding.remove(&sid);
                    }
                    self.metrics.vmotion_aborted += 1;
                    tracing::info!(session = sid.0, released, "VMOTION-ABORT");
                    self.record(vm, format!("abort (released {released})"), &sequence);
                }
                ProxyEvent::VmotionExpired { sequence, released } => {
                    if !conn.session.is_holding() {
                        self.holding.remove(&sid);
                    }
                    self.metrics.vmotion_expired += 1;
                    tracing::info!(session = sid.0, released, "vMotion expired");
                    self.record(vm, format!("expired (released {released})"), &sequence);
                }
                ProxyEvent::Error(error) => {
                    self.metrics.protocol_errors += 1;
                    tracing::debug!(session = sid.0, %error, "protocol error from VM");
                }
                _ => {}
            }
        }
        if let Some(conn) = self.conns.get_mut(&sid) {
            if conn.session.pending_transmit_len() > 0 {
                conn.wake();
            }
        }
    }

    fn record(&mut self, vm: Option<VmId>, event: String, sequence: &[u8]) {
        if let Some(entry) = vm.and_then(|vm| self.vms.get_mut(&vm)) {
            let history = entry.history.get_or_insert_with(Box::default);
            if history.len() >= MAX_HISTORY {
                history.pop_front();
            }
            history.push_back(VmotionRecord {
                at: unix_now(),
                event,
                sequence: hex(sequence),
            });
        }
    }

    /// VMOTION-COMPLETE on `dest`: switch the VM entry from `source` to `dest`.
    fn complete(&mut self, now: Instant, dest: SessionId, source: SessionId) {
        let Some(mut src) = self.conns.remove(&source) else {
            tracing::warn!(
                session = dest.0,
                source = source.0,
                "COMPLETE for an unknown source"
            );
            return;
        };
        let outcome = match self.conns.get_mut(&dest) {
            Some(d) => self
                .coordinator
                .complete(now, &mut d.session, &mut src.session),
            None => CompleteOutcome::NoRequest,
        };
        let vm = src.vm;
        tracing::info!(
            session = dest.0,
            source = source.0,
            ?outcome,
            "VMOTION-COMPLETE"
        );
        match outcome {
            CompleteOutcome::Switched { source_closed, .. } => {
                self.holding.remove(&source);
                self.metrics.vmotion_completed += 1;
                if !source_closed {
                    // ESXi closes it right after; its close is then `MigratedAway`.
                    self.conns.insert(source, src);
                }
                if let Some(vm) = vm {
                    if let Some(entry) = self.vms.get_mut(&vm) {
                        entry.active = Some(dest);
                        entry.state = VmState::Connected;
                        entry.connections += 1;
                    }
                    let unbound = match self.conns.get_mut(&dest) {
                        Some(d) => {
                            d.vm = Some(vm);
                            d.wake();
                            d.unbound.split()
                        }
                        None => BytesMut::new(),
                    };
                    if !unbound.is_empty() {
                        self.vm_output(vm, unbound.freeze());
                    }
                }
                self.record(vm, "complete".to_owned(), &[]);
            }
            other => {
                self.conns.insert(source, src);
                self.record(vm, format!("complete refused ({other:?})"), &[]);
            }
        }
    }

    /// Binds an identified connection to its VM entry: a new entry, a re-attach after a
    /// reconnect, or a flagged separate entry when a live connection already holds the
    /// identity (only a vMotion secret authenticates a takeover).
    fn try_bind(&mut self, sid: SessionId) {
        let Some(conn) = self.conns.get(&sid) else {
            return;
        };
        if conn.vm.is_some() {
            return;
        }
        let identity = conn.session.identity();
        let (Some(uuid), Some(request)) = (&identity.vc_uuid, conn.session.proxy_request()) else {
            return;
        };
        if !request.accepted {
            return;
        }
        let key = VmKey::new(
            &uuid.canonical().unwrap_or_else(|| uuid.raw_lossy()),
            &String::from_utf8_lossy(&request.service_uri),
        );
        let name = identity
            .name
            .as_ref()
            .map(|n| n.as_str().to_owned())
            .unwrap_or_default();
        let peer = conn.peer;
        let existing = self.by_key.get(&key).copied();
        let vm = match existing.and_then(|vm| self.vms.get_mut(&vm)) {
            Some(entry) if entry.active.is_none() => {
                entry.active = Some(sid);
                entry.state = VmState::Connected;
                entry.connections += 1;
                if !name.is_empty() {
                    entry.name = name;
                }
                self.metrics.reattached += 1;
                tracing::info!(vm = entry.id, session = sid.0, %peer, name = %entry.name,
                    "VM reconnected: re-attached to its entry (clients, log, scrollback kept)");
                entry.id
            }
            Some(entry) => {
                let original = entry.id;
                let held_by = entry.active;
                self.metrics.impostors += 1;
                let reason = format!(
                    "identity of vm #{original} is held by live session {}: served separately",
                    held_by.map_or(0, |s| s.0)
                );
                tracing::warn!(session = sid.0, %peer, uuid = %key.uuid(), "second live connection claims a held identity without a vMotion secret: {reason}");
                self.new_entry(sid, key, name, Some(reason), false)
            }
            None => self.new_entry(sid, key, name, None, true),
        };
        let unbound = match self.conns.get_mut(&sid) {
            Some(conn) => {
                conn.vm = Some(vm);
                conn.unbound.split()
            }
            None => BytesMut::new(),
        };
        if !unbound.is_empty() {
            self.vm_output(vm, unbound.freeze());
        }
    }

    fn new_entry(
        &mut self,
        sid: SessionId,
        key: VmKey,
        name: String,
        flagged: Option<String>,
        index: bool,
    ) -> VmId {
        let id = self.next_vm;
        self.next_vm += 1;
        let key = Arc::new(key);
        tracing::info!(vm = id, session = sid.0, uuid = %key.uuid(),
            label = label_of(key.service_uri()), %name, "new VM");
        if index {
            self.by_key.insert(key.clone(), id);
        }
        self.vms.insert(
            id,
            Box::new(VmEntry {
                id,
                key,
                name,
                flagged,
                active: Some(sid),
                state: VmState::Connected,
                connections: 1,
                clients: Vec::new(),
                exclusive: None,
                scrollback: VecDeque::new(),
                log: None,
                bytes_from_vm: 0,
                bytes_to_vm: 0,
                history: None,
                sticky: None,
            }),
        );
        if let Some(tx) = &self.sticky_tx {
            // Never blocks under the hub lock; the binder drains promptly, so a full queue
            // means a connect storm: that entry goes without a sticky port (the menu serves).
            if tx.try_send(id).is_err() {
                tracing::warn!(vm = id, "sticky port requests backlogged: none for this VM");
            }
        }
        id
    }

    /// VM output: scrollback, log, then every attached client's bounded queue.
    fn vm_output(&mut self, vm: VmId, bytes: Bytes) {
        let scrollback = self.config.client.scrollback;
        let Some(entry) = self.vms.get_mut(&vm) else {
            return;
        };
        entry.bytes_from_vm += bytes.len() as u64;
        self.metrics.bytes_from_vm += bytes.len() as u64;
        if scrollback > 0 {
            let keep = bytes.len().min(scrollback);
            entry.scrollback.extend(&bytes[bytes.len() - keep..]);
            let excess = entry.scrollback.len().saturating_sub(scrollback);
            entry.scrollback.drain(..excess);
        }
        if let Some(dir) = &self.config.log.dir {
            let log = entry.log.get_or_insert_with(|| {
                let name = if entry.name.is_empty() {
                    entry.key.uuid()
                } else {
                    entry.name.as_str()
                };
                Box::new(ConsoleLog::new(dir.join(file_name(
                    &self.config.log.name,
                    name,
                    entry.key.uuid(),
                    label_of(entry.key.service_uri()),
                    entry.id,
                ))))
            });
            log.write(&bytes);
            self.unflushed_logs.insert(vm);
        }
        if entry.clients.is_empty() {
            return;
        }
        // Clients see BINARY data: only 0xFF needs escaping, and without one the read
        // buffer's bytes go out as they are (no copy).
        let encoded = if memchr::memchr(0xff, &bytes).is_none() {
            bytes
        } else {
            let mut encoded = BytesMut::with_capacity(bytes.len() + 16);
            encode_data(&bytes, true, &mut encoded);
            encoded.freeze()
        };
        for cid in entry.clients.clone() {
            self.queue_client(cid, encoded.clone());
        }
    }

    // ----- clients -----

    pub(crate) fn register_client(
        &mut self,
        peer: SocketAddr,
        wake: Arc<Notify>,
        kill: Arc<Notify>,
    ) -> Result<ClientId, Refused> {
        if self.shutting_down {
            return Err(Refused::ShuttingDown);
        }
        if self.clients.len() >= self.config.client.max_clients {
            self.metrics.client_connections_refused += 1;
            return Err(Refused::Capacity(self.config.client.max_clients));
        }
        let id = self.next_client;
        self.next_client += 1;
        self.metrics.client_connections_total += 1;
        self.clients.insert(
            id,
            ClientReg {
                vm: None,
                mode: Mode::ReadWrite,
                queue: VecDeque::new(),
                queued: 0,
                wake,
                kill,
                closing: None,
                peer,
                bytes_out: 0,
                bytes_in: 0,
            },
        );
        Ok(id)
    }

    /// Queues bytes (already telnet-encoded) for a client; past its budget the client is
    /// dropped with a message instead, so it can never stall the VM or other clients.
    pub(crate) fn queue_client(&mut self, cid: ClientId, bytes: Bytes) {
        let budget = self.config.client.output_budget;
        let Some(client) = self.clients.get_mut(&cid) else {
            return;
        };
        if client.closing.is_some() {
            return;
        }
        if client.queued + bytes.len() > budget {
            self.metrics.clients_dropped_slow += 1;
            tracing::warn!(client = cid, peer = %client.peer, budget, "client too slow: dropped");
            self.drop_client(
                cid,
                "\r\n[vspc: output buffer overflow: this client reads too slowly and was disconnected]\r\n",
            );
            return;
        }
        client.queued += bytes.len();
        client.queue.push_back(bytes);
        client.wake.notify_one();
    }

    /// Detaches a client and has its writer send `message` and close.
    pub(crate) fn drop_client(&mut self, cid: ClientId, message: &'static str) {
        let Some(client) = self.clients.get_mut(&cid) else {
            return;
        };
        client.queue.clear();
        client.queued = 0;
        client.closing = Some(Bytes::from_static(message.as_bytes()));
        client.wake.notify_one();
        client.kill.notify_one();
        let vm = client.vm.take();
        self.detach(cid, vm);
    }

    fn detach(&mut self, cid: ClientId, vm: Option<VmId>) {
        if let Some(entry) = vm.and_then(|vm| self.vms.get_mut(&vm)) {
            entry.clients.retain(|c| *c != cid);
            if entry.exclusive == Some(cid) {
                entry.exclusive = None;
            }
        }
    }

    pub(crate) fn take_client_output(&mut self, cid: ClientId) -> ClientTx {
        let Some(client) = self.clients.get_mut(&cid) else {
            return ClientTx::Close(Bytes::new());
        };
        if let Some(message) = &client.closing {
            return ClientTx::Close(message.clone());
        }
        if client.queue.is_empty() {
            return ClientTx::Idle;
        }
        client.queued = 0;
        let out: Vec<Bytes> = client.queue.drain(..).collect();
        client.bytes_out += out.iter().map(|b| b.len() as u64).sum::<u64>();
        ClientTx::Write(out)
    }

    /// Whether the client is being dropped with a goodbye message not yet written.
    pub(crate) fn is_closing(&self, cid: ClientId) -> bool {
        self.clients
            .get(&cid)
            .is_some_and(|client| client.closing.is_some())
    }

    pub(crate) fn client_closed(&mut self, cid: ClientId) {
        if let Some(client) = self.clients.remove(&cid) {
            client.wake.notify_one();
            client.kill.notify_one();
            self.detach(cid, client.vm);
        }
    }

    /// The selection menu.
    pub(crate) fn menu(&self) -> String {
        // Fits an 80-column terminal: number, name/label, UUID, state, clients.
        let mut text = format!(
            "\r\nvspc: {} VM port(s)\r\n  # {:<24} {:<36} {:<6} clients\r\n",
            self.vms.len(),
            "name/label",
            "VC UUID",
            "state"
        );
        for entry in self.vms.values().take(MENU_ROWS) {
            let state = match entry.state {
                VmState::Connected => "up",
                VmState::Migrating => "moving",
                VmState::Disconnected { .. } => "away",
            };
            let name = format!("{}/{}", entry.name, entry.label());
            text.push_str(&format!(
                "{:>3} {:<24.24} {:<36} {:<6} {}{}\r\n",
                entry.id,
                name,
                entry.key.uuid(),
                state,
                entry.clients.len(),
                if entry.flagged.is_some() {
                    "  [FLAGGED: duplicate identity]"
                } else {
                    ""
                }
            ));
        }
        if self.vms.len() > MENU_ROWS {
            text.push_str(&format!(
                "... and {} more (the admin listing has them all)\r\n",
                self.vms.len() - MENU_ROWS
            ));
        }
        text.push_str("select by number, name[/label] or UUID, then optionally ro or excl: ");
        text
    }

    /// Resolves a selector: an entry number, a UUID (canonical, compact or vmx form), or a
    /// name, each optionally followed by `/label`. Flagged entries are reachable by number
    /// only when an unflagged one matches too.
    pub(crate) fn resolve(&self, selector: &str) -> Result<VmId, String> {
        if let Ok(id) = selector.parse::<VmId>() {
            return self
                .vms
                .contains_key(&id)
                .then_some(id)
                .ok_or_else(|| format!("no VM #{id}"));
        }
        let (who, label) = match selector.split_once('/') {
            Some((who, label)) if !who.contains(':') => (who, Some(label)),
            _ => (selector, None),
        };
        let compact = |s: &str| {
            s.chars()
                .filter(|c| c.is_ascii_hexdigit())
                .collect::<String>()
                .to_ascii_lowercase()
        };
        let wanted = compact(who);
        let matches: Vec<&VmEntry> = self
            .vms
            .values()
            .map(|e| &**e)
            .filter(|e| {
                e.name == who
                    || (wanted.len() == 32 && compact(e.key.uuid()) == wanted)
                    || e.key.uuid().eq_ignore_ascii_case(who)
            })
            .filter(|e| label.is_none_or(|l| e.label() == l || e.key.service_uri() == l))
            .collect();
        let trusted: Vec<&&VmEntry> = matches.iter().filter(|e| e.flagged.is_none()).collect();
        match (trusted.as_slice(), matches.as_slice()) {
            ([one], _) => Ok(one.id),
            ([], [one]) => Ok(one.id),
            ([], []) => Err(format!("no VM matches {selector:?}")),
            _ => Err(format!(
                "{selector:?} is ambiguous: pick one of {}",
                matches
                    .iter()
                    .map(|e| format!("#{} ({})", e.id, e.label()))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }

    /// Attaches a client: the mode is enforced here, then the banner and the scrollback are
    /// queued ahead of live output.
    pub(crate) fn attach(&mut self, cid: ClientId, vm: VmId, mode: Mode) -> Result<(), String> {
        let Some(entry) = self.vms.get_mut(&vm) else {
            return Err(format!("no VM #{vm}"));
        };
        let writers = entry
            .clients
            .iter()
            .filter(|c| {
                self.clients
                    .get(c)
                    .is_some_and(|r| r.mode != Mode::ReadOnly)
            })
            .count();
        if let Some(holder) = entry.exclusive {
            if mode != Mode::ReadOnly && holder != cid {
                return Err(format!(
                    "{} is held exclusively by another client; attach read-only with \"ro\"",
                    entry.name
                ));
            }
        }
        if mode == Mode::Exclusive && writers > 0 {
            return Err(format!(
                "{} has {writers} writer(s) attached; exclusive access refused",
                entry.name
            ));
        }
        let Some(client) = self.clients.get_mut(&cid) else {
            return Err("client gone".to_owned());
        };
        client.vm = Some(vm);
        client.mode = mode;
        entry.clients.push(cid);
        if mode == Mode::Exclusive {
            entry.exclusive = Some(cid);
        }
        tracing::info!(client = cid, vm, name = %entry.name, mode = mode.short(), "client attached");
        let mut out = BytesMut::new();
        let banner = format!(
            "\r\n[vspc: attached to {} ({}){}]\r\n",
            entry.name,
            mode.short(),
            if entry.flagged.is_some() {
                ", FLAGGED duplicate identity"
            } else {
                ""
            }
        );
        out.extend_from_slice(banner.as_bytes());
        let (a, b) = entry.scrollback.as_slices();
        encode_data(a, true, &mut out);
        encode_data(b, true, &mut out);
        self.queue_client(cid, out.freeze());
        Ok(())
    }

    /// Client input for its VM (telnet-decoded). Read-only clients' bytes are discarded.
    /// The VM a client may write to and its live connection, or what to tell the client
    /// instead: gone, not allowed (read-only or detached: discarded), or the VM is away (wait).
    fn writable_target(
        &mut self,
        cid: ClientId,
        len: usize,
    ) -> Result<(VmId, SessionId), InputResult> {
        let Some(client) = self.clients.get(&cid) else {
            return Err(InputResult::Gone);
        };
        if client.closing.is_some() {
            return Err(InputResult::Gone);
        }
        let (Some(vm), Mode::ReadWrite | Mode::Exclusive) = (client.vm, client.mode) else {
            self.metrics.client_bytes_discarded += len as u64;
            return Err(InputResult::Discarded);
        };
        let Some(entry) = self.vms.get(&vm) else {
            self.metrics.client_bytes_discarded += len as u64;
            return Err(InputResult::Discarded);
        };
        // The VM is away (reconnecting, or its host restarting the port): the client's input
        // waits in its own socket, as under backpressure, and reaches the VM when it returns.
        match entry.active {
            Some(sid) => Ok((vm, sid)),
            None => Err(InputResult::Backpressure),
        }
    }

    /// A serial break from a client (telnet `IAC BRK`), for its VM's UART.
    pub(crate) fn client_break(&mut self, cid: ClientId) -> InputResult {
        let sid = match self.writable_target(cid, 0) {
            Ok((_, sid)) => sid,
            Err(result) => return result,
        };
        let Some(conn) = self.conns.get_mut(&sid) else {
            return InputResult::Discarded;
        };
        // Held client data (a vMotion under way) goes first: the break waits for it.
        if conn.session.is_holding() {
            return InputResult::Backpressure;
        }
        conn.session
            .send_command(vspc_proto::vspc_telnet::Command::Break);
        conn.wake();
        InputResult::Sent
    }

    pub(crate) fn client_input(&mut self, cid: ClientId, data: &[u8]) -> InputResult {
        let (vm, mut sid) = match self.writable_target(cid, data.len()) {
            Ok(target) => target,
            Err(result) => return result,
        };
        let Some(client) = self.clients.get_mut(&cid) else {
            return InputResult::Gone;
        };
        for _ in 0..4 {
            let Some(conn) = self.conns.get_mut(&sid) else {
                break;
            };
            if conn.session.pending_transmit_len() > self.config.vm.max_pending_to_vm {
                return InputResult::Backpressure;
            }
            match conn.session.send_data(data) {
                Ok(()) => {
                    conn.wake();
                    client.bytes_in += data.len() as u64;
                    self.metrics.bytes_to_vm += data.len() as u64;
                    if let Some(entry) = self.vms.get_mut(&vm) {
                        entry.bytes_to_vm += data.len() as u64;
                    }
                    return InputResult::Sent;
                }
                Err(SendError::HoldFull { .. }) => return InputResult::Backpressure,
                Err(SendError::MigratedTo(dest)) => sid = dest,
                Err(_) => break,
            }
        }
        self.metrics.client_bytes_discarded += data.len() as u64;
        InputResult::Discarded
    }

    // ----- sticky ports -----

    pub(crate) fn set_sticky(
        &mut self,
        vm: VmId,
        addr: SocketAddr,
        task: tokio::task::AbortHandle,
    ) -> bool {
        match self.vms.get_mut(&vm) {
            Some(entry) => {
                entry.sticky = Some(Box::new(Sticky { addr, task }));
                true
            }
            None => false,
        }
    }

    #[allow(dead_code)] // for the integration tests
    pub(crate) fn sticky_addr(&self, vm: VmId) -> Option<SocketAddr> {
        self.vms
            .get(&vm)
            .and_then(|e| e.sticky.as_ref().map(|s| s.addr))
    }

    // ----- timers -----

    /// The next instant the timer task must run at; the task sleeps to it.
    pub(crate) fn next_deadline(&mut self, now: Instant) -> Instant {
        let tick = self.next_housekeeping.max(now);
        self.timer_at = self
            .holding
            .iter()
            .filter_map(|sid| self.conns.get(sid)?.session.poll_timeout())
            .chain(self.coordinator.poll_timeout())
            .fold(tick, Instant::min);
        self.timer_at
    }

    /// Fires due deadlines: held data released at vMotion expiry, expired keys, VM entries
    /// that lingered too long, and the periodic log flush.
    pub(crate) fn on_timer(&mut self, now: Instant) {
        let due: Vec<SessionId> = self
            .holding
            .iter()
            .copied()
            .filter(|sid| {
                self.conns
                    .get(sid)
                    .and_then(|c| c.session.poll_timeout())
                    .is_some_and(|t| t <= now)
            })
            .collect();
        for sid in due {
            if let Some(conn) = self.conns.get_mut(&sid) {
                conn.session.handle_timeout(now);
            }
            self.process(now, sid);
        }
        self.coordinator.handle_timeout(now);
        while let Some(event) = self.coordinator.poll_event() {
            let CoordinatorEvent::Expired {
                source,
                source_closed,
                ..
            } = event
            else {
                continue;
            };
            tracing::info!(
                session = source.0,
                source_closed,
                "vMotion expired in the coordinator"
            );
            if source_closed {
                self.drop_conn(now, source);
            }
        }
        if now >= self.next_housekeeping {
            self.next_housekeeping = now + HOUSEKEEPING;
            self.expire_lingering(now);
            self.flush_logs();
        }
    }

    /// Removes the entries that stayed disconnected longer than the linger time.
    fn expire_lingering(&mut self, now: Instant) {
        let linger = self.config.linger();
        while let Some(&(since, vm)) = self.lingering.front() {
            if now.saturating_duration_since(since) < linger {
                break;
            }
            self.lingering.pop_front();
            let still_away = self.vms.get(&vm).is_some_and(
                |e| matches!(e.state, VmState::Disconnected { since: s } if s == since),
            );
            if still_away {
                self.remove_vm(vm, "\r\n[vspc: the VM did not come back; closing]\r\n");
            }
        }
    }

    fn remove_vm(&mut self, vm: VmId, message: &'static str) {
        let Some(entry) = self.vms.get(&vm) else {
            return;
        };
        tracing::info!(vm, name = %entry.name, "VM entry removed");
        for cid in entry.clients.clone() {
            self.drop_client(cid, message);
        }
        if let Some(entry) = self.vms.remove(&vm) {
            if self.by_key.get(&entry.key) == Some(&vm) {
                self.by_key.remove(&entry.key);
            }
            if let Some(sticky) = &entry.sticky {
                sticky.task.abort();
            }
        }
    }

    pub(crate) fn flush_logs(&mut self) {
        for vm in self.unflushed_logs.drain() {
            if let Some(log) = self.vms.get_mut(&vm).and_then(|e| e.log.as_mut()) {
                log.flush();
            }
        }
    }

    pub(crate) fn reopen_logs(&mut self) {
        for entry in self.vms.values_mut() {
            if let Some(log) = &mut entry.log {
                log.reopen();
            }
        }
        tracing::info!("console logs reopened");
    }

    /// Graceful shutdown: no new connections, every client told and closed, logs flushed,
    /// VM connections closed once their queues are written.
    pub(crate) fn shutdown(&mut self) {
        self.shutting_down = true;
        let clients: Vec<ClientId> = self.clients.keys().copied().collect();
        for cid in clients {
            self.drop_client(
                cid,
                "\r\n[vspc: the concentrator is shutting down; goodbye]\r\n",
            );
        }
        for conn in self.conns.values_mut() {
            conn.close = true;
            conn.wake();
        }
        self.flush_logs();
    }

    pub(crate) fn open_clients(&self) -> usize {
        self.clients.len()
    }

    pub(crate) fn open_vm_conns(&self) -> usize {
        self.conns
            .values()
            .filter(|c| !c.session.is_closed())
            .count()
    }

    // ----- admin -----

    /// The admin listing.
    pub(crate) fn snapshot(&self) -> serde_json::Value {
        let vms: Vec<serde_json::Value> = self
            .vms
            .values()
            .map(|e| {
                let conn = e.active.and_then(|s| self.conns.get(&s));
                let identity = conn.map(|c| c.session.identity());
                let clients: Vec<serde_json::Value> = e
                    .clients
                    .iter()
                    .filter_map(|cid| {
                        let c = self.clients.get(cid)?;
                        Some(serde_json::json!({
                            "id": cid,
                            "peer": c.peer.to_string(),
                            "mode": c.mode,
                            "bytes_out": c.bytes_out,
                            "bytes_in": c.bytes_in,
                            "queued": c.queued,
                        }))
                    })
                    .collect();
                serde_json::json!({
                    "id": e.id,
                    "name": e.name,
                    "vc_uuid": e.key.uuid(),
                    "bios_uuid": identity.and_then(|i| i.bios_uuid.as_ref()).map(|u| u.to_string()),
                    "location_uuid": identity.and_then(|i| i.location_uuid.as_ref()).map(|u| u.to_string()),
                    "service_uri": e.key.service_uri(),
                    "label": e.label(),
                    "flagged": e.flagged,
                    "state": match e.state {
                        VmState::Connected => "connected",
                        VmState::Migrating => "migrating",
                        VmState::Disconnected { .. } => "disconnected",
                    },
                    "session": e.active.map(|s| s.0),
                    "peer": conn.map(|c| c.peer.to_string()),
                    "tls": conn.map(|c| c.tls),
                    "connections": e.connections,
                    "clients": clients,
                    "exclusive": e.exclusive,
                    "bytes_from_vm": e.bytes_from_vm,
                    "bytes_to_vm": e.bytes_to_vm,
                    "sticky_port": e.sticky.as_ref().map(|s| s.addr.to_string()),
                    "log": e.log.as_ref().map(|l| l.path().display().to_string()),
                    "vmotions": e.history.as_deref().unwrap_or(&VecDeque::new()),
                })
            })
            .collect();
        serde_json::json!({
            "started": self.started.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            "vm_connections": self.open_vm_conns(),
            "clients": self.clients.len(),
            "vmotions_pending": self.coordinator.pending_len(),
            "vms": vms,
        })
    }

    /// Prometheus text format.
    pub(crate) fn metrics_text(&self) -> String {
        let m = &self.metrics;
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            for (labels, value) in samples {
                out.push_str(&format!("{name}{labels} {value}\n"));
            }
        };
        let vms = self.vms.len() as u64;
        let connected = self
            .vms
            .values()
            .filter(|e| e.state == VmState::Connected)
            .count() as u64;
        metric(
            "vspc_vms",
            "gauge",
            "VM port entries (connected or lingering).",
            &[("", vms)],
        );
        metric(
            "vspc_vms_connected",
            "gauge",
            "VM port entries with a live connection.",
            &[("", connected)],
        );
        metric(
            "vspc_vm_connections",
            "gauge",
            "Open VM connections.",
            &[("", self.open_vm_conns() as u64)],
        );
        metric(
            "vspc_vm_connections_total",
            "counter",
            "VM connections accepted.",
            &[("", m.vm_connections_total)],
        );
        metric(
            "vspc_vm_connections_refused_total",
            "counter",
            "VM connections refused at the cap.",
            &[("", m.vm_connections_refused)],
        );
        metric(
            "vspc_clients",
            "gauge",
            "Open client connections.",
            &[("", self.clients.len() as u64)],
        );
        metric(
            "vspc_client_connections_total",
            "counter",
            "Client connections accepted.",
            &[("", m.client_connections_total)],
        );
        metric(
            "vspc_client_connections_refused_total",
            "counter",
            "Client connections refused at the cap.",
            &[("", m.client_connections_refused)],
        );
        metric(
            "vspc_clients_dropped_slow_total",
            "counter",
            "Clients dropped for exceeding their output budget.",
            &[("", m.clients_dropped_slow)],
        );
        metric(
            "vspc_vm_bytes_total",
            "counter",
            "Serial bytes relayed.",
            &[
                ("{direction=\"from_vm\"}", m.bytes_from_vm),
                ("{direction=\"to_vm\"}", m.bytes_to_vm),
            ],
        );
        metric(
            "vspc_client_bytes_discarded_total",
            "counter",
            "Client bytes discarded (read-only client, or no VM connection).",
            &[("", m.client_bytes_discarded)],
        );
        metric(
            "vspc_unbound_bytes_dropped_total",
            "counter",
            "VM output dropped before identification (over vm.max_unbound).",
            &[("", m.unbound_bytes_dropped)],
        );
        metric(
            "vspc_protocol_errors_total",
            "counter",
            "Protocol violations by VMs.",
            &[("", m.protocol_errors)],
        );
        metric(
            "vspc_reattached_total",
            "counter",
            "Reconnects re-attached to their VM entry.",
            &[("", m.reattached)],
        );
        metric(
            "vspc_duplicate_identities_total",
            "counter",
            "Live connections that claimed a held identity (served as flagged entries).",
            &[("", m.impostors)],
        );
        metric(
            "vspc_vmotions_total",
            "counter",
            "vMotion events.",
            &[
                ("{event=\"goahead\"}", m.vmotion_goahead),
                ("{event=\"notnow\"}", m.vmotion_notnow),
                ("{event=\"completed\"}", m.vmotion_completed),
                ("{event=\"aborted\"}", m.vmotion_aborted),
                ("{event=\"expired\"}", m.vmotion_expired),
                ("{event=\"peer_rejected\"}", m.vmotion_peer_rejected),
            ],
        );
        metric(
            "vspc_vmotions_pending",
            "gauge",
            "vMotions pending in the coordinator.",
            &[("", self.coordinator.pending_len() as u64)],
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(label_of("vSPC.py?port=console"), "console");
        assert_eq!(label_of("vSPC.py?a=b&port=com2"), "com2");
        assert_eq!(label_of("tcp://10.0.0.5:2377"), "tcp://10.0.0.5:2377");
    }
}
