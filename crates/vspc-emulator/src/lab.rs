//! An in-memory test bench: one [`EmulatedVm`] against a concentrator built on vspc-proto's
//! [`Endpoint`] (its [`ProxySession`]s and vMotion [`Coordinator`]), on a simulated clock.
//!
//! The proxy side is wired as a concentrator wires an endpoint: every read, close and timer
//! goes to the endpoint, which answers and routes vMotions itself; the bench follows the VM
//! for its clients ([`EndpointEvent::Ready`], [`EndpointEvent::Moved`]) and retries client
//! data when a vMotion hold is full. Clients are read-write or read-only; every one sees every
//! VM byte; read-write ones send a [`Pattern`] the VM's recorder verifies. Bytes can be
//! delivered in chunks of any size and the VM can read slowly.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use vspc_proto::{
    Answer, Coordinator, CoordinatorConfig, Endpoint, EndpointConfig, EndpointEvent, ProxyConfig,
    ProxySession, SessionId,
};

use crate::connection::ConnId;
use crate::pattern::{Pattern, Recorder, VerifyError};
use crate::vm::{EmulatedVm, EmulatorConfig, EmulatorEvent, Transmit};

/// How the bench's proxy answers VMOTION-BEGIN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BeginAnswer {
    /// At once, by the endpoint ([`Answer::Automatic`]: GOAHEAD unless the coordinator
    /// refuses).
    Coordinator,
    /// NOTNOW, vetoed by the application (`allow_vmotion: false`).
    NotNow,
    /// By the application ([`Answer::Manual`]), allowing it, but only this long after BEGIN
    /// arrived (a stalled proxy).
    Delayed(Duration),
}

/// A client of the VM's console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientMode {
    /// Reads and writes.
    ReadWrite,
    /// Reads only.
    ReadOnly,
}

/// The bench's configuration.
#[derive(Debug)]
pub struct LabConfig {
    /// Every proxy session's configuration.
    pub proxy: ProxyConfig,
    /// The coordinator's.
    pub coordinator: CoordinatorConfig,
    /// Seed of the coordinator's secrets (deterministic, for reproducible runs).
    pub secret_seed: u64,
    /// How BEGIN is answered.
    pub begin_answer: BeginAnswer,
    /// The clients.
    pub clients: Vec<ClientMode>,
    /// What read-write clients send (in turns, one stream in total).
    pub client_pattern: Pattern,
    /// Deliver every write in reads of at most this many bytes (0 counts as 1).
    pub read_chunk: usize,
    /// A slow reader: the VM reads at most `.0` bytes every `.1` (`None`: at once).
    pub vm_read_budget: Option<(usize, Duration)>,
    /// Answer VMOTION-PEER (`false`: [`Answer::Manual`] and never answered, a proxy that
    /// stalls on it; the destination times out).
    pub answer_peer: bool,
    /// Bytes of VM output each client keeps (for inspection).
    pub max_kept: usize,
}

impl Default for LabConfig {
    fn default() -> Self {
        LabConfig {
            proxy: ProxyConfig::default(),
            coordinator: CoordinatorConfig::default(),
            secret_seed: 1,
            begin_answer: BeginAnswer::Coordinator,
            clients: vec![ClientMode::ReadWrite, ClientMode::ReadOnly],
            client_pattern: Pattern::Noise { seed: 0xc1 },
            read_chunk: usize::MAX,
            vm_read_budget: None,
            answer_peer: true,
            max_kept: 1 << 16,
        }
    }
}

/// A broken invariant found by [`Lab::check`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Violation {
    /// Client `client` did not get the VM's output exactly.
    #[error("client {client}: {error}")]
    VmToClient {
        /// The client's index.
        client: usize,
        /// What differs.
        error: VerifyError,
    },
    /// The VM did not get the clients' bytes exactly.
    #[error("VM: {0}")]
    ClientToVm(VerifyError),
    /// Bytes are still in flight (run the bench to quiescence first).
    #[error("{0} bytes still in flight")]
    NotQuiet(usize),
}

/// The socket side of one VM connection the endpoint holds.
#[derive(Debug)]
struct Wire {
    /// The endpoint's id of the connection.
    id: SessionId,
    to_vm: VecDeque<Bytes>,
    /// The VM side has closed (FIN delivered after the queued bytes).
    vm_closed: bool,
    /// The proxy side has closed.
    proxy_closed: bool,
}

/// One emulated VM, a concentrator and its clients, in memory.
///
/// Drive it with the VM's commands ([`vm_mut`](Self::vm_mut) with [`now`](Self::now)),
/// [`client_send`](Self::client_send), [`advance`](Self::advance) and
/// [`proxy_close`](Self::proxy_close); each runs the bench until no byte moves.
///
/// The endpoint numbers connections itself, in connect order; the bench maps its
/// [`ConnId`]s to them (the endpoint's per-connection data is the [`ConnId`]).
#[derive(Debug)]
pub struct Lab {
    now: Instant,
    config: LabConfig,
    vm: EmulatedVm,
    endpoint: Endpoint<ConnId>,
    /// Every connection the endpoint holds, by the emulator's id (ordered: deterministic).
    wires: BTreeMap<ConnId, Wire>,
    /// The emulator's id of each connection the endpoint holds.
    conns: BTreeMap<SessionId, ConnId>,
    /// The connection carrying the VM for the clients.
    current: Option<ConnId>,
    clients: Vec<Recorder>,
    /// Client bytes not yet taken by a proxy session.
    backlog: VecDeque<u8>,
    client_offset: u64,
    /// Client bytes a session took.
    client_accepted: u64,
    delayed_begins: Vec<(Instant, ConnId)>,
    next_read: Instant,
    endpoint_events: Vec<(ConnId, EndpointEvent<ConnId>)>,
    vm_events: Vec<EmulatorEvent>,
    outcomes: Vec<String>,
    max_log: usize,
}

impl Lab {
    /// A bench at `now` with a powered-off VM.
    /// The VM's recorder verifies the clients' pattern (`client_pattern` is overridden).
    pub fn new(now: Instant, mut vm: EmulatorConfig, config: LabConfig) -> Self {
        vm.client_pattern = Some(config.client_pattern.clone());
        let output = vm.output.as_ref().map(|o| o.pattern.clone());
        let clients = config
            .clients
            .iter()
            .map(|_| Recorder::new(config.max_kept, output.clone()))
            .collect();
        let mut state = config.secret_seed;
        let secrets = move |out: &mut [u8]| {
            for byte in out.iter_mut() {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                *byte = (state >> 33) as u8;
            }
            Ok(())
        };
        let endpoint_config = EndpointConfig {
            proxy: Arc::new(config.proxy.clone()),
            coordinator: config.coordinator.clone(),
            allow_vmotion: config.begin_answer != BeginAnswer::NotNow,
            begin: match config.begin_answer {
                BeginAnswer::Delayed(_) => Answer::Manual,
                BeginAnswer::Coordinator | BeginAnswer::NotNow => Answer::Automatic,
            },
            peer: if config.answer_peer {
                Answer::Automatic
            } else {
                Answer::Manual
            },
        };
        Lab {
            now,
            vm: EmulatedVm::new(vm),
            endpoint: Endpoint::with_secret_source(endpoint_config, secrets),
            wires: BTreeMap::new(),
            conns: BTreeMap::new(),
            current: None,
            clients,
            backlog: VecDeque::new(),
            client_offset: 0,
            client_accepted: 0,
            delayed_begins: Vec::new(),
            next_read: now,
            endpoint_events: Vec::new(),
            vm_events: Vec::new(),
            outcomes: Vec::new(),
            max_log: 10_000,
            config,
        }
    }

    /// The simulated time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The VM.
    pub fn vm(&self) -> &EmulatedVm {
        &self.vm
    }

    /// The VM, for commands (pass [`now`](Self::now)); call [`run`](Self::run) afterwards.
    pub fn vm_mut(&mut self) -> &mut EmulatedVm {
        &mut self.vm
    }

    /// The concentrator's endpoint.
    pub fn endpoint(&self) -> &Endpoint<ConnId> {
        &self.endpoint
    }

    /// The coordinator.
    pub fn coordinator(&self) -> &Coordinator {
        self.endpoint.coordinator()
    }

    /// The endpoint's id of a VM connection still known to the proxy.
    pub fn session_id(&self, conn: ConnId) -> Option<SessionId> {
        self.wires.get(&conn).map(|w| w.id)
    }

    /// The proxy session of a VM connection still known to the proxy.
    pub fn session(&self, conn: ConnId) -> Option<&ProxySession> {
        self.endpoint.session(self.session_id(conn)?)
    }

    /// The connection whose session carries the VM for the clients.
    pub fn current(&self) -> Option<ConnId> {
        self.current
    }

    /// Client `index`'s record of the VM output.
    pub fn client(&self, index: usize) -> Option<&Recorder> {
        self.clients.get(index)
    }

    /// Client bytes the proxy took (and so owes the VM).
    pub fn client_accepted(&self) -> u64 {
        self.client_accepted
    }

    /// Client bytes waiting for a session to take them.
    pub fn client_backlog(&self) -> usize {
        self.backlog.len()
    }

    /// The endpoint's events so far (the first 10,000), each with the VM connection it is
    /// about ([`EndpointEvent::conn`]); [`EndpointEvent::Closed`] hands back the [`ConnId`].
    pub fn endpoint_events(&self) -> &[(ConnId, EndpointEvent<ConnId>)] {
        &self.endpoint_events
    }

    /// VM events so far (the first 10,000).
    pub fn vm_events(&self) -> &[EmulatorEvent] {
        &self.vm_events
    }

    /// The vMotion answers and outcomes the endpoint reported (BEGIN and PEER answers,
    /// moves, refused COMPLETEs, aborts, expiries, closes), as `Debug` text (the first
    /// 10,000).
    pub fn outcomes(&self) -> &[String] {
        &self.outcomes
    }

    /// Read-write clients send the next `len` bytes of the client pattern.
    pub fn client_send(&mut self, len: usize) {
        if !self.config.clients.contains(&ClientMode::ReadWrite) {
            return;
        }
        let mut bytes = Vec::new();
        self.config
            .client_pattern
            .extend(self.client_offset, len, &mut bytes);
        self.client_offset += len as u64;
        self.backlog.extend(bytes);
        self.run();
    }

    /// The proxy closes the VM connection `conn` (as a proxy restart or kick would).
    pub fn proxy_close(&mut self, conn: ConnId) {
        if let Some(wire) = self.wires.get_mut(&conn) {
            wire.proxy_closed = true;
            wire.to_vm.clear();
            let id = wire.id;
            self.endpoint.handle_close(self.now, id);
            self.drain_events();
            self.vm.handle_closed(self.now, conn);
        }
        self.run();
    }

    /// Bytes the proxy wrote that the VM has not read yet (VM writes are delivered at once).
    pub fn in_flight(&self) -> usize {
        self.wires
            .values()
            .map(|w| w.to_vm.iter().map(Bytes::len).sum::<usize>())
            .sum()
    }

    /// Advances the clock by `by`, firing every timer at its own deadline.
    pub fn advance(&mut self, by: Duration) {
        let target = self.now + by;
        // Every round fires at least one due timer, which moves its deadline; the bound only
        // guards against a timer that fails to.
        for _ in 0..10_000_000 {
            self.run();
            let slow_read = match self.config.vm_read_budget {
                Some(_) if self.in_flight() > 0 => Some(self.next_read.max(self.now)),
                _ => None,
            };
            let next = [
                slow_read,
                self.vm.poll_timeout(),
                self.endpoint.poll_timeout(),
                self.delayed_begins.iter().map(|(at, _)| *at).min(),
            ]
            .into_iter()
            .flatten()
            .min();
            match next {
                Some(at) if at <= target => {
                    self.now = self.now.max(at);
                    self.fire_timers();
                }
                _ => break,
            }
        }
        self.now = target;
        self.fire_timers();
        self.run();
    }

    fn fire_timers(&mut self) {
        let now = self.now;
        if let Some((budget, interval)) = self.config.vm_read_budget {
            if self.next_read <= now && self.in_flight() > 0 {
                self.next_read = now + interval.max(Duration::from_micros(1));
                self.deliver_to_vm(Some(budget));
            }
        }
        if self.vm.poll_timeout().is_some_and(|t| t <= now) {
            self.vm.handle_timeout(now);
        }
        if self.endpoint.poll_timeout().is_some_and(|t| t <= now) {
            self.endpoint.handle_timeout(now);
        }
        self.drain_events();
        let due: Vec<ConnId> = self
            .delayed_begins
            .iter()
            .filter(|(at, _)| *at <= now)
            .map(|(_, c)| *c)
            .collect();
        self.delayed_begins.retain(|(at, _)| *at > now);
        for conn in due {
            if let Some(id) = self.session_id(conn) {
                self.endpoint.answer_begin(now, id, true);
            }
            self.drain_events();
        }
    }

    /// Moves bytes until nothing moves (the VM reads within its budget only on `advance`).
    pub fn run(&mut self) {
        // Each round moves at least one write or stops; the bound only guards a livelock bug.
        for _ in 0..1_000_000 {
            let mut moved = self.pump_vm();
            self.drain_events();
            moved |= self.collect_from_proxy();
            moved |= self.feed_backlog();
            if self.config.vm_read_budget.is_none() {
                moved |= self.deliver_to_vm(None);
            }
            if !moved {
                return;
            }
        }
    }

    /// Delivers the VM's transmits in their order (a FIN before or after a write on another
    /// connection reaches the proxy in that order).
    fn pump_vm(&mut self) -> bool {
        let mut moved = false;
        let now = self.now;
        let chunk = self.config.read_chunk.max(1);
        while let Some(transmit) = self.vm.poll_transmit() {
            moved = true;
            match transmit {
                Transmit::Open { conn } => {
                    let id = self.endpoint.connect(conn);
                    self.conns.insert(id, conn);
                    self.wires.insert(
                        conn,
                        Wire {
                            id,
                            to_vm: VecDeque::new(),
                            vm_closed: false,
                            proxy_closed: false,
                        },
                    );
                }
                Transmit::Write { conn, mut bytes } => {
                    if let Some(wire) = self.wires.get(&conn) {
                        if !wire.proxy_closed {
                            while !bytes.is_empty() {
                                let part = bytes.split_to(chunk.min(bytes.len()));
                                self.endpoint.handle_input(now, wire.id, &part);
                            }
                        }
                    }
                    self.drain_events();
                }
                Transmit::Close { conn } => {
                    if let Some(wire) = self.wires.get_mut(&conn) {
                        wire.vm_closed = true;
                        wire.to_vm.clear();
                        if !wire.proxy_closed {
                            wire.proxy_closed = true;
                            self.endpoint.handle_close(now, wire.id);
                        }
                    }
                    self.drain_events();
                }
            }
        }
        while let Some(event) = self.vm.poll_event() {
            if self.vm_events.len() < self.max_log {
                self.vm_events.push(event);
            }
        }
        moved
    }

    /// Takes every connection's writes to the VM (dropped once either side closed).
    fn collect_from_proxy(&mut self) -> bool {
        let mut moved = false;
        for wire in self.wires.values_mut() {
            while let Some(bytes) = self.endpoint.poll_transmit(wire.id) {
                moved = true;
                if !wire.proxy_closed && !wire.vm_closed {
                    wire.to_vm.push_back(bytes);
                }
            }
        }
        moved
    }

    /// Delivers queued proxy bytes to the VM, at most `budget` bytes in total.
    fn deliver_to_vm(&mut self, budget: Option<usize>) -> bool {
        let now = self.now;
        let chunk = self.config.read_chunk.max(1);
        let mut budget = budget.unwrap_or(usize::MAX);
        let mut moved = false;
        for (conn, wire) in self.wires.iter_mut() {
            while budget > 0 {
                let Some(front) = wire.to_vm.front_mut() else {
                    break;
                };
                let take = chunk.min(budget).min(front.len());
                let part = front.split_to(take);
                if front.is_empty() {
                    wire.to_vm.pop_front();
                }
                budget -= take;
                moved = true;
                self.vm.handle_input(now, *conn, &part);
            }
        }
        moved
    }

    /// Hands the clients' bytes to the connection carrying the VM (the endpoint follows a
    /// completed vMotion); kept for later when a vMotion hold is full.
    fn feed_backlog(&mut self) -> bool {
        let Some(id) = self.current.and_then(|c| self.session_id(c)) else {
            return false;
        };
        if self.backlog.is_empty() {
            return false;
        }
        let bytes: Vec<u8> = self.backlog.iter().copied().collect();
        match self.endpoint.send_data(id, &bytes) {
            Ok(target) => {
                if target != id {
                    self.current = self.conns.get(&target).copied();
                }
                self.backlog.clear();
                self.client_accepted += bytes.len() as u64;
                true
            }
            Err(_) => false,
        }
    }

    /// Acts on the endpoint's events as a concentrator does: VM output to the clients, the
    /// clients following the VM, delayed BEGIN answers scheduled, connections forgotten.
    fn drain_events(&mut self) {
        let now = self.now;
        while let Some(event) = self.endpoint.poll_event() {
            let Some(&conn) = self.conns.get(&event.conn()) else {
                continue;
            };
            let mut outcome = false;
            match &event {
                EndpointEvent::Data { bytes, .. }
                    if self.current.is_none() || self.current == Some(conn) =>
                {
                    for client in &mut self.clients {
                        client.record(bytes);
                    }
                }
                EndpointEvent::Ready { .. } if self.current.is_none() => {
                    self.current = Some(conn);
                }
                EndpointEvent::BeginRequested { .. } => {
                    if let BeginAnswer::Delayed(by) = self.config.begin_answer {
                        self.delayed_begins.push((now + by, conn));
                    }
                }
                EndpointEvent::Moved { .. } => {
                    self.current = Some(conn);
                    outcome = true;
                }
                EndpointEvent::Closed { conn: id, .. } => {
                    self.conns.remove(id);
                    self.wires.remove(&conn);
                    if self.current == Some(conn) {
                        self.current = None;
                    }
                    outcome = true;
                }
                EndpointEvent::BeginAnswered { .. }
                | EndpointEvent::PeerAnswered { .. }
                | EndpointEvent::CompleteRefused { .. }
                | EndpointEvent::VmotionAborted { .. }
                | EndpointEvent::VmotionExpired { .. }
                | EndpointEvent::SourceClosed { .. } => outcome = true,
                // Unanswered PEERs (`answer_peer: false`) stall the destination on purpose.
                EndpointEvent::PeerRequested { .. }
                | EndpointEvent::Data { .. }
                | EndpointEvent::Ready { .. }
                | EndpointEvent::Identified { .. }
                | EndpointEvent::KnownSuboptions { .. }
                | EndpointEvent::ProxyRequested { .. }
                | EndpointEvent::ComPort { .. }
                | EndpointEvent::UnknownSuboptionReported { .. }
                | EndpointEvent::Command { .. }
                | EndpointEvent::OptionChanged { .. }
                | EndpointEvent::ProtocolError { .. } => {}
            }
            if outcome && self.outcomes.len() < self.max_log {
                self.outcomes.push(format!("{event:?}"));
            }
            if self.endpoint_events.len() < self.max_log {
                self.endpoint_events.push((conn, event));
            }
        }
    }

    /// Checks that every client got exactly the VM's output and the VM exactly what the
    /// proxy took from clients. Meaningful once quiet, with no fault that loses bytes
    /// (garbage, silence, abrupt close).
    pub fn check(&self) -> Result<(), Violation> {
        let in_flight = self.in_flight();
        if in_flight > 0 {
            return Err(Violation::NotQuiet(in_flight));
        }
        let sent = self.vm.serial_sent();
        for (client, recorder) in self.clients.iter().enumerate() {
            let result = match recorder.verifier() {
                Some(verifier) => verifier.verify(sent),
                None if recorder.total() == sent => Ok(()),
                None => Err(VerifyError::Length {
                    received: recorder.total(),
                    expected: sent,
                }),
            };
            result.map_err(|error| Violation::VmToClient { client, error })?;
        }
        let received = self.vm.recorder();
        match received.verifier() {
            Some(verifier) => verifier
                .verify(self.client_accepted)
                .map_err(Violation::ClientToVm),
            None if received.total() == self.client_accepted => Ok(()),
            None => Err(Violation::ClientToVm(VerifyError::Length {
                received: received.total(),
                expected: self.client_accepted,
            })),
        }
    }
}
