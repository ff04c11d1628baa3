//! The [`Concentrator`] and its VM side: connections, binding to entries, vMotion outcomes,
//! VM output, lingering entries and timers. The client side is in `clients.rs`, `attach.rs`,
//! `flow.rs` and `remote.rs`.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use vspc_proto::vspc_telnet::encode_data;
use vspc_proto::{
    Answer, CloseReason, ComPortPolicy, CoordinatorConfig, Endpoint, EndpointConfig, EndpointEvent,
    ProxyConfig, SecretSource, SessionId,
};

use crate::clients::Client;
use crate::config::ConcentratorConfig;
use crate::registry::{Registry, VmKey};
use crate::snapshot::Counters;
use crate::types::{
    ClientId, DropReason, Event, Refused, VmId, VmState, VmTransmit, VmotionRecord, VmotionStep,
    Wakeup,
};

/// What the concentrator keeps per VM connection (beside its session in the endpoint).
#[derive(Debug)]
pub(crate) struct VmConn {
    /// The entry this connection carries, once bound.
    pub(crate) vm: Option<VmId>,
    /// VM output that arrived before the connection was bound (bounded).
    pub(crate) unbound: BytesMut,
    pub(crate) peer: SocketAddr,
    pub(crate) tls: bool,
    /// It claimed a vMotion (a destination never identifies with DO-PROXY).
    pub(crate) claimed: bool,
}

/// How long after a stuck client's grace a deferred reconnect waits for its old
/// connection's FIN to be read (the driver reads it once woken).
const READ_AFTER_GRACE: Duration = Duration::from_millis(250);

/// The sans-IO core of a virtual serial port concentrator.
///
/// It owns every VM connection (through a [`vspc_proto::Endpoint`], which owns the sessions
/// and the vMotion coordinator), the VM registry (identity by VC UUID plus service URI,
/// several ports per VM, reconnect re-attach, lingering entries, a second live claimant
/// served apart and flagged), and every client (selection, read-write / read-only /
/// exclusive modes, output budgets, scrollback, input backpressure).
///
/// # Driving contract
/// One mutation, then poll until empty (the order of polls does not matter):
/// - VM connections: [`handle_vm_connect`](Self::handle_vm_connect),
///   [`handle_vm_input`](Self::handle_vm_input) (read only while
///   [`vm_wants_input`](Self::vm_wants_input)), [`handle_vm_closed`](Self::handle_vm_closed);
///   write what [`poll_vm_transmit`](Self::poll_vm_transmit) gives.
/// - Clients: [`handle_client_connect`](Self::handle_client_connect),
///   [`handle_client_input`](Self::handle_client_input) (read only while
///   [`client_wants_input`](Self::client_wants_input)),
///   [`handle_client_closed`](Self::handle_client_closed); write what
///   [`poll_client_transmit`](Self::poll_client_transmit) gives.
/// - After every call: drain [`poll_wakeup`](Self::poll_wakeup) (which connections have
///   something to write or may read again) and [`poll_event`](Self::poll_event) (what
///   happened), and re-arm the timer at [`poll_timeout`](Self::poll_timeout); call
///   [`handle_timeout`](Self::handle_timeout) when it passes.
///
/// # Time model
/// `now` is an argument; the core reads no clock, spawns nothing, touches no socket.
/// Timeouts early or late are harmless.
///
/// # Panics and bounds
/// No call panics on any input or order; unknown ids are ignored. Every buffer is bounded by
/// [`ConcentratorConfig`]: per VM connection the telnet subnegotiation, the vMotion hold,
/// the bytes queued toward it and the output kept before identification; per client its
/// output budget (past it the client is dropped with a message) and its waiting input; per
/// entry the scrollback and the vMotion history. Events and wakeups grow only with calls:
/// drain them after each.
pub struct Concentrator {
    pub(crate) config: Arc<ConcentratorConfig>,
    pub(crate) endpoint: Endpoint<VmConn>,
    pub(crate) registry: Registry,
    pub(crate) clients: HashMap<ClientId, Client>,
    /// VMs that went away, oldest first; an entry that came back is skipped when its turn
    /// comes (its `away_since` differs): expiry never walks every VM.
    pub(crate) lingering: VecDeque<(Instant, VmId)>,
    /// Entries with no connection (what `max_lingering` caps).
    pub(crate) away_count: usize,
    /// VM connections by connect time, for the identification timeout (a bound one is
    /// skipped when its turn comes).
    pub(crate) unidentified: VecDeque<(Instant, SessionId)>,
    /// Clients by connect time, for the selection timeout (an attached one is skipped).
    pub(crate) selecting: VecDeque<(Instant, ClientId)>,
    /// Clients still choosing a VM.
    pub(crate) selecting_count: usize,
    /// Clients that fell a budget behind, by grace deadline (one that caught up since is
    /// skipped when its turn comes).
    pub(crate) behind: VecDeque<(Instant, ClientId)>,
    /// Ready connections claiming an identity whose live connection is not being read (a
    /// client of it is a budget behind, so its FIN may wait unread): reconnect or impostor
    /// is decided when that connection closes or at the deadline.
    pub(crate) deferred_binds: VecDeque<(Instant, SessionId)>,
    /// Clients dropped, whose connection the driver has not reported closed yet.
    pub(crate) closing_clients: usize,
    pub(crate) events: VecDeque<Event>,
    pub(crate) wakeups: VecDeque<Wakeup>,
    pub(crate) counters: Counters,
    pub(crate) next_client: u64,
    pub(crate) shutting_down: bool,
    /// VMOTION-BEGIN is answered NOTNOW while set ([`Concentrator::hold_vmotions`]).
    pub(crate) vmotions_held: bool,
}

impl std::fmt::Debug for Concentrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Concentrator")
            .field("vm_connections", &self.endpoint.len())
            .field("vms", &self.registry.vms.len())
            .field("clients", &self.clients.len())
            .finish_non_exhaustive()
    }
}

fn endpoint_config(config: &ConcentratorConfig) -> EndpointConfig {
    EndpointConfig {
        proxy: Arc::new(ProxyConfig {
            max_subnegotiation: config.max_subnegotiation,
            max_held: config.max_held,
            com_port: if config.vm_com_port {
                ComPortPolicy::Accept
            } else {
                ComPortPolicy::Refuse
            },
            ..ProxyConfig::default()
        }),
        coordinator: CoordinatorConfig {
            secret_len: config.secret_len,
            vmotion_timeout: config.vmotion_timeout,
            ..CoordinatorConfig::default()
        },
        allow_vmotion: config.allow_vmotion,
        // The core decides who may start a vMotion (see `BeginRequested` below).
        begin: Answer::Manual,
        // Shared with other concentrators, a PEER may name a key held elsewhere.
        peer: if config.shared_vmotions {
            Answer::Manual
        } else {
            Answer::Automatic
        },
    }
}

impl Concentrator {
    /// A concentrator whose vMotion secrets come from the OS CSPRNG.
    pub fn new(config: ConcentratorConfig) -> Self {
        let endpoint = Endpoint::new(endpoint_config(&config));
        Concentrator::with_endpoint(config, endpoint)
    }

    /// A concentrator whose vMotion secrets come from `secrets` (tests, fuzzing).
    pub fn with_secret_source(
        config: ConcentratorConfig,
        secrets: impl SecretSource + 'static,
    ) -> Self {
        let endpoint = Endpoint::with_secret_source(endpoint_config(&config), secrets);
        Concentrator::with_endpoint(config, endpoint)
    }

    fn with_endpoint(config: ConcentratorConfig, endpoint: Endpoint<VmConn>) -> Self {
        Concentrator {
            config: Arc::new(config),
            endpoint,
            registry: Registry::default(),
            clients: HashMap::new(),
            lingering: VecDeque::new(),
            away_count: 0,
            unidentified: VecDeque::new(),
            selecting: VecDeque::new(),
            behind: VecDeque::new(),
            deferred_binds: VecDeque::new(),
            selecting_count: 0,
            closing_clients: 0,
            events: VecDeque::new(),
            wakeups: VecDeque::new(),
            counters: Counters::default(),
            next_client: 1,
            shutting_down: false,
            vmotions_held: false,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ConcentratorConfig {
        &self.config
    }

    /// The endpoint (sessions and coordinator), for inspection.
    pub fn endpoint(&self) -> &Endpoint<impl std::fmt::Debug> {
        &self.endpoint
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The next connection to attend to, if any (the same one may come more than once).
    pub fn poll_wakeup(&mut self) -> Option<Wakeup> {
        self.wakeups.pop_front()
    }

    /// Reports console output as [`Event::Console`] from now on (or stops).
    pub fn set_console_events(&mut self, on: bool) {
        Arc::make_mut(&mut self.config).console_events = on;
    }

    // ----- VM connections -----

    /// A new VM connection from `peer` (`tls` for telnets), at `now` (its identification
    /// deadline runs from here). Its opening offers are queued at
    /// once: write [`poll_vm_transmit`](Self::poll_vm_transmit).
    pub fn handle_vm_connect(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        tls: bool,
    ) -> Result<SessionId, Refused> {
        if self.shutting_down {
            return Err(Refused::ShuttingDown);
        }
        // Sources kept for a vMotion count: each still holds its socket.
        if self.endpoint.len() >= self.config.max_vm_connections {
            self.counters.vm_connections_refused += 1;
            return Err(Refused::Capacity(self.config.max_vm_connections));
        }
        let conn = self.endpoint.connect(VmConn {
            vm: None,
            unbound: BytesMut::new(),
            peer,
            tls,
            claimed: false,
        });
        self.counters.vm_connections_total += 1;
        self.unidentified
            .push_back((now + self.config.identify_timeout, conn));
        Ok(conn)
    }

    /// Bytes read from a VM connection.
    pub fn handle_vm_input(&mut self, now: Instant, conn: SessionId, bytes: &Bytes) {
        self.endpoint.handle_input(now, conn, bytes);
        self.drain_endpoint(now);
        if self.endpoint.pending_transmit_len(conn) > 0 {
            self.wakeups.push_back(Wakeup::Vm(conn));
        }
    }

    /// A VM connection reached EOF, failed, or was shut down after
    /// [`VmTransmit::Close`].
    pub fn handle_vm_closed(&mut self, now: Instant, conn: SessionId) {
        self.endpoint.handle_close(now, conn);
        self.drain_endpoint(now);
    }

    /// The next write for a VM connection. On [`VmTransmit::Idle`] the session gives back
    /// the memory it does not use: an idle VM holds no buffer.
    pub fn poll_vm_transmit(&mut self, conn: SessionId) -> VmTransmit {
        match self.endpoint.poll_transmit(conn) {
            Some(bytes) => {
                // Room toward the VM: its waiting writers may go on.
                if let Some(vm) = self.endpoint.data(conn).and_then(|c| c.vm) {
                    self.flush_writers(vm);
                }
                VmTransmit::Write(bytes)
            }
            None if self.endpoint.wants_close(conn) => VmTransmit::Close,
            None => {
                self.endpoint.shrink_to_fit(conn);
                if let Some(c) = self.endpoint.data_mut(conn) {
                    if c.unbound.is_empty() {
                        c.unbound = BytesMut::new();
                    }
                }
                VmTransmit::Idle
            }
        }
    }

    /// Open VM connections (a vMotion source that closed but is kept for its held data is
    /// not counted).
    pub fn open_vm_connections(&self) -> usize {
        self.endpoint
            .connections()
            .filter(|c| self.endpoint.session(*c).is_some_and(|s| !s.is_closed()))
            .count()
    }

    // ----- timers -----

    /// The next deadline: a vMotion's expiry, a lingering entry's, a connection's
    /// identification, a client's selection timeout or its grace to catch up.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let linger = self
            .lingering
            .front()
            .map(|(since, _)| *since + self.config.linger);
        [
            self.endpoint.poll_timeout(),
            linger,
            self.unidentified.front().map(|(at, _)| *at),
            self.selecting.front().map(|(at, _)| *at),
            self.behind.front().map(|(at, _)| *at),
            self.deferred_binds.front().map(|(at, _)| *at),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Fires what is due: held data released at a vMotion's expiry, expired keys, entries
    /// that lingered too long.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.endpoint.handle_timeout(now);
        self.drain_endpoint(now);
        while let Some(&(since, vm)) = self.lingering.front() {
            if now.saturating_duration_since(since) < self.config.linger {
                break;
            }
            self.lingering.pop_front();
            let still_away = self
                .registry
                .get(vm)
                .is_some_and(|e| e.active.is_none() && e.away_since == Some(since));
            if still_away {
                self.remove_vm(vm);
            }
        }
        while let Some(&(at, conn)) = self.unidentified.front() {
            if at > now {
                break;
            }
            self.unidentified.pop_front();
            let idle = self
                .endpoint
                .data(conn)
                .is_some_and(|c| c.vm.is_none() && !c.claimed);
            if idle && !self.endpoint.wants_close(conn) {
                self.counters.vm_identify_timeouts += 1;
                self.endpoint.close(conn);
                self.wakeups.push_back(Wakeup::Vm(conn));
            }
        }
        self.expire_selections(now);
        self.expire_behind(now);
        while let Some(&(at, conn)) = self.deferred_binds.front() {
            if at > now {
                break;
            }
            self.deferred_binds.pop_front();
            self.bind_now(now, conn);
        }
    }

    /// A destination connection whose PEER was reported as
    /// [`Event::PeerElsewhere`] leaves this concentrator: the driver carries its bytes to the
    /// instance that holds the vMotion. The session is forgotten here without a word to the
    /// VM (the other instance answers the PEER).
    pub fn hand_off(&mut self, now: Instant, conn: SessionId) {
        let unbound = self
            .endpoint
            .data(conn)
            .is_some_and(|c| c.vm.is_none() && !c.claimed);
        if unbound {
            self.endpoint.handle_close(now, conn);
            self.drain_endpoint(now);
        }
    }

    /// Whether VM connection `conn` carries a VM here (it identified, or its PEER was
    /// accepted): a connection that does can no longer be handed to another instance.
    pub fn is_identified(&self, conn: SessionId) -> bool {
        self.endpoint
            .data(conn)
            .is_some_and(|c| c.vm.is_some() || c.claimed)
    }

    /// Refuses the PEER reported as [`Event::PeerElsewhere`] (no instance holds its key, or
    /// the shared state cannot be reached): the destination gives up, as for any unknown key.
    pub fn refuse_peer(&mut self, now: Instant, conn: SessionId) {
        self.endpoint.answer_peer(now, conn);
        self.drain_endpoint(now);
        if self.endpoint.pending_transmit_len(conn) > 0 {
            self.wakeups.push_back(Wakeup::Vm(conn));
        }
    }

    /// While `held`, every VMOTION-BEGIN is answered NOTNOW (the VM stays where it is and its
    /// host tries later), whatever [`ConcentratorConfig::allow_vmotion`] says: the driver
    /// holds vMotions while it cannot publish where a destination must be carried (the
    /// shared state is unreachable). vMotions already under way are not affected.
    pub fn hold_vmotions(&mut self, held: bool) {
        self.vmotions_held = held;
    }

    /// Closes VM entry `vm`'s live connection once what is queued for it is written; the
    /// entry stays, as when the VM closes it (its clients are told, it lingers for a
    /// reconnect). The driver's decision: e.g. another concentrator holds this VM port now
    /// and this connection is stale. Nothing for an entry without a connection.
    pub fn close_vm(&mut self, vm: VmId) {
        if let Some(conn) = self.vm_connection(vm) {
            if !self.endpoint.wants_close(conn) {
                self.endpoint.close(conn);
                self.wakeups.push_back(Wakeup::Vm(conn));
            }
        }
    }

    /// Graceful shutdown: no new connections, every client told and closed, every VM
    /// connection closed once what is queued for it is written.
    pub fn shutdown(&mut self) {
        self.shutting_down = true;
        let clients: Vec<ClientId> = self.clients.keys().copied().collect();
        for client in clients {
            self.drop_client(client, DropReason::Shutdown);
        }
        let conns: Vec<SessionId> = self.endpoint.connections().collect();
        for conn in conns {
            self.endpoint.close(conn);
            self.wakeups.push_back(Wakeup::Vm(conn));
        }
    }

    /// Whether [`shutdown`](Self::shutdown) was called.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down
    }

    // ----- the endpoint's events -----

    /// Acts on everything the endpoint reported.
    fn drain_endpoint(&mut self, now: Instant) {
        let mut moved_closed = None;
        let mut expired_closed = Vec::new();
        while let Some(event) = self.endpoint.poll_event() {
            match event {
                EndpointEvent::Data { conn, bytes } => self.conn_output(now, conn, bytes),
                EndpointEvent::ComPort { conn, message } => self.serial_vm_report(conn, message),
                EndpointEvent::Identified { conn, identity } => {
                    let name = identity.name.as_ref().map(|n| n.as_str().to_owned());
                    let vm = self.endpoint.data(conn).and_then(|c| c.vm);
                    if let (Some(vm), Some(name)) = (vm, name) {
                        if let Some(entry) = self.registry.get_mut(vm) {
                            if entry.name != name {
                                entry.name = name;
                                self.events.push_back(Event::VmRenamed { vm });
                            }
                        }
                    }
                }
                EndpointEvent::Ready { conn } => self.bind(now, conn),
                EndpointEvent::BeginAnswered {
                    conn,
                    sequence,
                    outcome,
                } => {
                    match &outcome {
                        vspc_proto::BeginOutcome::GoAhead { key, deadline } => {
                            self.counters.vmotion_goahead += 1;
                            if self.config.shared_vmotions {
                                self.events.push_back(Event::HandoverOffered {
                                    conn,
                                    key: key.bytes().clone(),
                                    deadline: *deadline,
                                });
                            }
                        }
                        vspc_proto::BeginOutcome::NotNow(_) => self.counters.vmotion_notnow += 1,
                        _ => {}
                    }
                    if let Some(step) = VmotionStep::from_begin(&outcome) {
                        let vm = self.vm_of(conn);
                        self.record(now, vm, conn, step, sequence);
                    }
                }
                EndpointEvent::PeerAnswered { conn, key, outcome } => {
                    let source = match outcome {
                        vspc_proto::ClaimOutcome::Accepted { source } => {
                            if let Some(c) = self.endpoint.data_mut(conn) {
                                c.claimed = true;
                            }
                            Some(source)
                        }
                        vspc_proto::ClaimOutcome::Rejected(_) => {
                            self.counters.vmotion_peer_rejected += 1;
                            None
                        }
                        _ => None,
                    };
                    if let Some(step) = VmotionStep::from_claim(&outcome) {
                        let vm = source.and_then(|s| self.vm_of(s));
                        let sequence = key
                            .sequence()
                            .map(Bytes::copy_from_slice)
                            .unwrap_or_default();
                        self.record(now, vm, conn, step, sequence);
                    }
                }
                EndpointEvent::Moved {
                    from,
                    to,
                    sequence,
                    replayed,
                } => {
                    self.counters.vmotion_completed += 1;
                    self.wakeups.push_back(Wakeup::Vm(to));
                    match self.vm_of(from) {
                        Some(vm) => self.moved(now, vm, from, to, sequence, replayed),
                        // The source had closed: the endpoint hands its data (and so its
                        // entry) back in the `Closed` that follows at once.
                        None => moved_closed = Some((from, to, sequence, replayed)),
                    }
                }
                EndpointEvent::CompleteRefused { conn, outcome } => {
                    let vm = self.vm_of(conn);
                    let step = VmotionStep::CompleteRefused(outcome);
                    self.record(now, vm, conn, step, Bytes::new());
                }
                EndpointEvent::VmotionAborted {
                    conn,
                    sequence,
                    released,
                } => {
                    self.counters.vmotion_aborted += 1;
                    let vm = self.vm_of(conn);
                    self.record(now, vm, conn, VmotionStep::Aborted { released }, sequence);
                    self.wakeups.push_back(Wakeup::Vm(conn));
                    if let Some(vm) = vm {
                        self.flush_writers(vm);
                    }
                }
                EndpointEvent::VmotionExpired {
                    conn,
                    sequence,
                    released,
                } => {
                    self.counters.vmotion_expired += 1;
                    self.wakeups.push_back(Wakeup::Vm(conn));
                    if self.endpoint.data(conn).is_none() {
                        // The source had closed: its data (and so its entry) comes back in
                        // the `Closed` that follows at once, and its writers' input waits
                        // for the VM to come back.
                        expired_closed.push((conn, sequence, released));
                        continue;
                    }
                    let vm = self.vm_of(conn);
                    self.record(now, vm, conn, VmotionStep::Expired { released }, sequence);
                    if let Some(vm) = vm {
                        self.flush_writers(vm);
                    }
                }
                EndpointEvent::SourceClosed { conn, .. } => {
                    if let Some(vm) = self.vm_of(conn) {
                        if let Some(entry) = self.registry.get_mut(vm) {
                            if entry.active == Some(conn) {
                                entry.state = VmState::Migrating;
                            }
                        }
                    }
                }
                EndpointEvent::Closed { conn, reason, data } => {
                    self.wakeups.push_back(Wakeup::Vm(conn));
                    match reason {
                        CloseReason::MovedAway { .. } => {
                            if let (Some(vm), Some((from, to, sequence, replayed))) =
                                (data.vm, moved_closed.take_if(|m| m.0 == conn))
                            {
                                self.moved(now, vm, from, to, sequence, replayed);
                            }
                        }
                        CloseReason::Disconnected | CloseReason::VmotionExpired => {
                            if let Some(at) = expired_closed.iter().position(|e| e.0 == conn) {
                                let (_, sequence, released) = expired_closed.swap_remove(at);
                                let step = VmotionStep::Expired { released };
                                self.record(now, data.vm, conn, step, sequence);
                            }
                            if let Some(vm) = data.vm {
                                self.vm_away(now, vm, conn);
                            }
                        }
                    }
                }
                EndpointEvent::ProtocolError { conn, error } => {
                    self.counters.protocol_errors += 1;
                    self.events.push_back(Event::ProtocolError { conn, error });
                }
                // Negotiation details the concentrator's policy does not act on; the
                // endpoint answered what the protocol requires.
                EndpointEvent::KnownSuboptions { .. }
                | EndpointEvent::ProxyRequested { .. }
                | EndpointEvent::UnknownSuboptionReported { .. }
                | EndpointEvent::Command { .. }
                | EndpointEvent::OptionChanged { .. } => {}
                EndpointEvent::BeginRequested { conn, .. } => {
                    // Only the connection that carries a trusted entry may start a vMotion:
                    // an unidentified or flagged connection cannot take a pending slot.
                    let trusted = self
                        .vm_of(conn)
                        .and_then(|vm| self.registry.get(vm))
                        .is_some_and(|e| e.flagged.is_none() && e.active == Some(conn));
                    let allow = self.config.allow_vmotion && !self.vmotions_held && trusted;
                    self.endpoint.answer_begin(now, conn, allow);
                }
                // The endpoint answers PEER itself (`Answer::Automatic`): only the secret
                // authenticates a destination.
                EndpointEvent::PeerRequested { conn, key } => {
                    if self.endpoint.coordinator().holds(key.as_bytes()) {
                        self.endpoint.answer_peer(now, conn);
                    } else {
                        self.events.push_back(Event::PeerElsewhere {
                            conn,
                            key: key.bytes().clone(),
                        });
                    }
                }
            }
        }
    }

    fn vm_of(&self, conn: SessionId) -> Option<VmId> {
        self.endpoint.data(conn).and_then(|c| c.vm)
    }

    /// Output read from a connection: to its entry, or kept until it binds.
    fn conn_output(&mut self, now: Instant, conn: SessionId, bytes: Bytes) {
        let max_unbound = self.config.max_unbound;
        let Some(c) = self.endpoint.data_mut(conn) else {
            return;
        };
        match c.vm {
            Some(vm) => self.vm_output(now, vm, bytes),
            None => {
                let room = max_unbound.saturating_sub(c.unbound.len());
                let take = room.min(bytes.len());
                c.unbound.extend_from_slice(&bytes[..take]);
                self.counters.unbound_bytes_dropped += (bytes.len() - take) as u64;
            }
        }
    }

    /// Binds a ready connection to its VM entry: a new entry, a re-attach after a reconnect,
    /// or a flagged separate entry when a live connection already holds the identity (only
    /// a vMotion secret authenticates a takeover).
    fn bind(&mut self, now: Instant, conn: SessionId) {
        if self.held_unread(conn) {
            // Within the grace the holder is read again (its client caught up or was
            // dropped), and a little later its FIN has been read; never so long that the
            // identification timeout closes this one.
            let wait = self
                .config
                .slow_client_grace
                .min(self.config.identify_timeout / 2);
            let deadline = now + wait + READ_AFTER_GRACE;
            self.deferred_binds.push_back((deadline, conn));
            return;
        }
        self.bind_now(now, conn);
    }

    /// Whether `conn`'s identity is held by another live connection that is not being read:
    /// its FIN (a reconnect) may be waiting behind its unread output.
    fn held_unread(&self, conn: SessionId) -> bool {
        let holder = self
            .key_of(conn)
            .and_then(|key| self.registry.find(&key))
            .and_then(|vm| self.registry.get(vm))
            .filter(|e| e.state != VmState::Migrating)
            .and_then(|e| e.active);
        holder.is_some_and(|active| active != conn && !self.vm_wants_input(active))
    }

    /// The identity a ready connection claims.
    fn key_of(&self, conn: SessionId) -> Option<VmKey> {
        let session = self.endpoint.session(conn)?;
        let uuid = session.identity().vc_uuid.as_ref()?;
        let request = session.proxy_request()?;
        Some(VmKey::new(
            &uuid.canonical().unwrap_or_else(|| uuid.raw_lossy()),
            &String::from_utf8_lossy(&request.service_uri),
        ))
    }

    /// Binds the deferred connections whose identity's holder closed or is read again.
    fn retry_deferred_binds(&mut self, now: Instant) {
        if self.deferred_binds.is_empty() {
            return;
        }
        let waiting = std::mem::take(&mut self.deferred_binds);
        for (deadline, conn) in waiting {
            if self.held_unread(conn) {
                self.deferred_binds.push_back((deadline, conn));
            } else {
                self.bind_now(now, conn);
            }
        }
    }

    /// Binds a ready connection (see [`bind`](Self::bind)); one bound already, or gone, is
    /// left alone.
    fn bind_now(&mut self, now: Instant, conn: SessionId) {
        if self.endpoint.data(conn).is_none_or(|c| c.vm.is_some()) {
            return;
        }
        let Some(session) = self.endpoint.session(conn) else {
            return;
        };
        let identity = session.identity();
        let (Some(uuid), Some(request)) = (&identity.vc_uuid, session.proxy_request()) else {
            return;
        };
        let key = VmKey::new(
            &uuid.canonical().unwrap_or_else(|| uuid.raw_lossy()),
            &String::from_utf8_lossy(&request.service_uri),
        );
        let name = identity
            .name
            .as_ref()
            .map(|n| n.as_str().to_owned())
            .unwrap_or_default();
        let existing = self.registry.find(&key);
        let vm = match existing.and_then(|vm| self.registry.get_mut(vm)) {
            // Away, or in transit after its source closed mid-vMotion (no live connection
            // holds it: a VM that reconnects instead of completing is still itself).
            Some(entry) if entry.active.is_none() || entry.state == VmState::Migrating => {
                if entry.active.is_none() {
                    self.away_count -= 1;
                }
                entry.active = Some(conn);
                entry.state = VmState::Connected;
                entry.away_since = None;
                entry.connections += 1;
                if !name.is_empty() {
                    entry.name = name;
                }
                self.counters.reattached += 1;
                let vm = entry.id;
                self.events.push_back(Event::VmReconnected { vm, conn });
                vm
            }
            Some(entry) => {
                let reason = format!(
                    "identity of vm #{} is held by live session {}: served separately",
                    entry.id.0,
                    entry.active.map_or(0, |s| s.0)
                );
                self.counters.impostors += 1;
                let vm = self.registry.insert(conn, key, name, Some(reason.clone()));
                self.events.push_back(Event::VmAdded {
                    vm,
                    conn,
                    flagged: Some(reason),
                });
                vm
            }
            None => {
                let vm = self.registry.insert(conn, key, name, None);
                self.events.push_back(Event::VmAdded {
                    vm,
                    conn,
                    flagged: None,
                });
                vm
            }
        };
        let unbound = match self.endpoint.data_mut(conn) {
            Some(c) => {
                c.vm = Some(vm);
                c.unbound.split()
            }
            None => BytesMut::new(),
        };
        if !unbound.is_empty() {
            self.vm_output(now, vm, unbound.freeze());
        }
        self.flush_writers(vm);
        // Carrier detect, for the clients that waited through a reconnect.
        self.notify_vm_clients(vm);
    }

    /// A completed vMotion: the entry follows the VM to its new connection.
    fn moved(
        &mut self,
        now: Instant,
        vm: VmId,
        from: SessionId,
        to: SessionId,
        sequence: Bytes,
        replayed: usize,
    ) {
        if let Some(entry) = self.registry.get_mut(vm) {
            entry.active = Some(to);
            entry.state = VmState::Connected;
            entry.away_since = None;
            entry.connections += 1;
        }
        let unbound = match self.endpoint.data_mut(to) {
            Some(c) => {
                c.vm = Some(vm);
                c.unbound.split()
            }
            None => BytesMut::new(),
        };
        self.record(
            now,
            Some(vm),
            to,
            VmotionStep::Completed { replayed },
            sequence,
        );
        self.events.push_back(Event::VmMoved { vm, from, to });
        if !unbound.is_empty() {
            self.vm_output(now, vm, unbound.freeze());
        }
        self.flush_writers(vm);
    }

    /// The VM's connection is gone: the entry lingers.
    fn vm_away(&mut self, now: Instant, vm: VmId, conn: SessionId) {
        let Some(entry) = self.registry.get_mut(vm) else {
            return;
        };
        if entry.active != Some(conn) {
            return;
        }
        entry.active = None;
        entry.state = VmState::Disconnected;
        entry.away_since = Some(now);
        self.lingering.push_back((now, vm));
        self.away_count += 1;
        self.events.push_back(Event::VmDisconnected { vm });
        self.notify_vm_clients(vm);
        // A reconnect that arrived before this FIN was read is one.
        self.retry_deferred_binds(now);
        while self.away_count > self.config.max_lingering {
            let Some((since, oldest)) = self.lingering.pop_front() else {
                break;
            };
            let still_away = self
                .registry
                .get(oldest)
                .is_some_and(|e| e.active.is_none() && e.away_since == Some(since));
            if still_away {
                self.counters.lingering_evicted += 1;
                self.remove_vm(oldest);
            }
        }
    }

    fn remove_vm(&mut self, vm: VmId) {
        let Some(entry) = self.registry.get(vm) else {
            return;
        };
        if entry.active.is_none() {
            self.away_count -= 1;
        }
        for client in entry.clients.clone() {
            self.drop_client(client, DropReason::VmRemoved);
        }
        if self.registry.remove(vm).is_some() {
            self.events.push_back(Event::VmRemoved { vm });
        }
    }

    fn record(
        &mut self,
        now: Instant,
        vm: Option<VmId>,
        conn: SessionId,
        step: VmotionStep,
        sequence: Bytes,
    ) {
        let keep = self.config.vmotion_history;
        if let Some(entry) = vm.and_then(|vm| self.registry.get_mut(vm)) {
            if keep > 0 {
                let history = entry.history.get_or_insert_with(Box::default);
                if history.len() >= keep {
                    history.pop_front();
                }
                history.push_back(VmotionRecord {
                    at: now,
                    step: step.clone(),
                    sequence,
                });
            }
        }
        self.events.push_back(Event::Vmotion { vm, conn, step });
    }

    /// VM output: scrollback, the console event, then every attached client's queue.
    pub(crate) fn vm_output(&mut self, now: Instant, vm: VmId, bytes: Bytes) {
        let scrollback = self.config.scrollback;
        let Some(entry) = self.registry.get_mut(vm) else {
            return;
        };
        entry.bytes_from_vm += bytes.len() as u64;
        self.counters.bytes_from_vm += bytes.len() as u64;
        if scrollback > 0 {
            let keep = bytes.len().min(scrollback);
            entry.scrollback.extend(&bytes[bytes.len() - keep..]);
            let excess = entry.scrollback.len().saturating_sub(scrollback);
            entry.scrollback.drain(..excess);
        }
        if self.config.console_events {
            self.events.push_back(Event::Console {
                vm,
                bytes: bytes.clone(),
            });
        }
        if entry.clients.is_empty() {
            return;
        }
        // Telnet clients see BINARY data: only 0xFF needs escaping, and without one the
        // read buffer's bytes go out as they are (no copy). Escaped once for all of them.
        let mut escaped: Option<Bytes> = None;
        for client in entry.clients.clone() {
            let telnet = self.clients.get(&client).is_some_and(|c| c.is_telnet());
            let out = if telnet {
                escaped.get_or_insert_with(|| escape_iac(&bytes)).clone()
            } else {
                bytes.clone()
            };
            self.queue_output(now, client, out);
        }
    }
}

/// `bytes` with every 0xFF doubled (telnet BINARY data), without a copy when there is none.
pub(crate) fn escape_iac(bytes: &Bytes) -> Bytes {
    if memchr::memchr(0xff, bytes).is_none() {
        return bytes.clone();
    }
    let mut out = BytesMut::with_capacity(bytes.len() + 16);
    encode_data(bytes, true, &mut out);
    out.freeze()
}
