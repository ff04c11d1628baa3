//! An in-memory test bench: one [`EmulatedVm`] against a concentrator built from
//! vspc-proto's [`ProxySession`]s and [`Coordinator`], on a simulated clock.
//!
//! The proxy side is wired as a concentrator must wire it (the reference wiring: vMotion
//! events to the coordinator, client data to the session carrying the VM, retried when a
//! vMotion hold is full, closes reported to the coordinator). Clients are read-write or
//! read-only; every one sees every VM byte; read-write ones send a [`Pattern`] the VM's
//! recorder verifies. Bytes can be delivered in chunks of any size and the VM can read slowly.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use vspc_proto::{
    CloseOutcome, CompleteOutcome, Coordinator, CoordinatorConfig, CoordinatorEvent, ProxyConfig,
    ProxyEvent, ProxySession, SendError, SessionId,
};

use crate::connection::ConnId;
use crate::pattern::{Pattern, Recorder, VerifyError};
use crate::vm::{EmulatedVm, EmulatorConfig, EmulatorEvent, Transmit};

/// How the bench's proxy answers VMOTION-BEGIN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BeginAnswer {
    /// At once, through the coordinator (GOAHEAD unless it refuses).
    Coordinator,
    /// NOTNOW, vetoed by the application.
    NotNow,
    /// Through the coordinator, but only this long after BEGIN arrived (a stalled proxy).
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
    /// Answer VMOTION-PEER (`false`: a proxy that stalls on it; the destination times out).
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

#[derive(Debug)]
struct Link {
    session: ProxySession,
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
#[derive(Debug)]
pub struct Lab {
    now: Instant,
    config: LabConfig,
    vm: EmulatedVm,
    coordinator: Coordinator,
    links: BTreeMap<ConnId, Link>,
    /// The proxy session carrying the VM for the clients.
    current: Option<ConnId>,
    clients: Vec<Recorder>,
    /// Client bytes not yet taken by a proxy session.
    backlog: VecDeque<u8>,
    client_offset: u64,
    /// Client bytes a session took.
    client_accepted: u64,
    delayed_begins: Vec<(Instant, ConnId)>,
    next_read: Instant,
    proxy_events: Vec<(ConnId, ProxyEvent)>,
    vm_events: Vec<EmulatorEvent>,
    outcomes: Vec<String>,
    coordinator_events: Vec<CoordinatorEvent>,
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
        let coordinator = Coordinator::with_secret_source(config.coordinator.clone(), secrets);
        Lab {
            now,
            vm: EmulatedVm::new(vm),
            coordinator,
            links: BTreeMap::new(),
            current: None,
            clients,
            backlog: VecDeque::new(),
            client_offset: 0,
            client_accepted: 0,
            delayed_begins: Vec::new(),
            next_read: now,
            proxy_events: Vec::new(),
            vm_events: Vec::new(),
            outcomes: Vec::new(),
            coordinator_events: Vec::new(),
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

    /// The coordinator.
    pub fn coordinator(&self) -> &Coordinator {
        &self.coordinator
    }

    /// The proxy session of a VM connection still known to the proxy.
    pub fn session(&self, conn: ConnId) -> Option<&ProxySession> {
        self.links.get(&conn).map(|l| &l.session)
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

    /// Proxy events so far (the first 10,000).
    pub fn proxy_events(&self) -> &[(ConnId, ProxyEvent)] {
        &self.proxy_events
    }

    /// VM events so far (the first 10,000).
    pub fn vm_events(&self) -> &[EmulatorEvent] {
        &self.vm_events
    }

    /// The coordinator's answers, as `Debug` text (the first 10,000).
    pub fn outcomes(&self) -> &[String] {
        &self.outcomes
    }

    /// The coordinator's own events.
    pub fn coordinator_events(&self) -> &[CoordinatorEvent] {
        &self.coordinator_events
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
        if let Some(link) = self.links.get_mut(&conn) {
            link.proxy_closed = true;
            link.to_vm.clear();
            let outcome = self.coordinator.session_closed(self.now, &mut link.session);
            self.log_outcome(format!("{outcome:?}"));
            self.on_session_closed(conn, outcome);
            self.vm.handle_closed(self.now, conn);
        }
        self.run();
    }

    /// Bytes the proxy wrote that the VM has not read yet (VM writes are delivered at once).
    pub fn in_flight(&self) -> usize {
        self.links
            .values()
            .map(|l| l.to_vm.iter().map(Bytes::len).sum::<usize>())
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
                Some(_) if self.to_vm_len() > 0 => Some(self.next_read.max(self.now)),
                _ => None,
            };
            let next = [
                slow_read,
                self.vm.poll_timeout(),
                self.coordinator.poll_timeout(),
                self.links
                    .values()
                    .filter_map(|l| l.session.poll_timeout())
                    .min(),
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

    fn to_vm_len(&self) -> usize {
        self.links
            .values()
            .map(|l| l.to_vm.iter().map(Bytes::len).sum::<usize>())
            .sum()
    }

    fn fire_timers(&mut self) {
        let now = self.now;
        if let Some((budget, interval)) = self.config.vm_read_budget {
            if self.next_read <= now && self.to_vm_len() > 0 {
                self.next_read = now + interval.max(Duration::from_micros(1));
                self.deliver_to_vm(Some(budget));
            }
        }
        if self.vm.poll_timeout().is_some_and(|t| t <= now) {
            self.vm.handle_timeout(now);
        }
        let ids: Vec<ConnId> = self.links.keys().copied().collect();
        for id in &ids {
            if let Some(link) = self.links.get_mut(id) {
                if link.session.poll_timeout().is_some_and(|t| t <= now) {
                    link.session.handle_timeout(now);
                }
            }
            self.process(*id);
        }
        if self.coordinator.poll_timeout().is_some_and(|t| t <= now) {
            self.coordinator.handle_timeout(now);
        }
        while let Some(event) = self.coordinator.poll_event() {
            if let CoordinatorEvent::Expired {
                source,
                source_closed: true,
                ..
            } = &event
            {
                self.links.remove(&ConnId(source.0));
                if self.current == Some(ConnId(source.0)) {
                    self.current = None;
                }
            }
            if self.coordinator_events.len() < self.max_log {
                self.coordinator_events.push(event);
            }
        }
        let due: Vec<ConnId> = self
            .delayed_begins
            .iter()
            .filter(|(at, _)| *at <= now)
            .map(|(_, c)| *c)
            .collect();
        self.delayed_begins.retain(|(at, _)| *at > now);
        for conn in due {
            self.answer_begin(conn, true);
            self.process(conn);
        }
    }

    /// Moves bytes until nothing moves (the VM reads within its budget only on `advance`).
    pub fn run(&mut self) {
        // Each round moves at least one write or stops; the bound only guards a livelock bug.
        for _ in 0..1_000_000 {
            let mut moved = self.pump_vm();
            let ids: Vec<ConnId> = self.links.keys().copied().collect();
            for id in ids {
                self.process(id);
                moved |= self.collect_from_proxy(id);
            }
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
                    let session = ProxySession::new(SessionId(conn.0), self.config.proxy.clone());
                    self.links.insert(
                        conn,
                        Link {
                            session,
                            to_vm: VecDeque::new(),
                            vm_closed: false,
                            proxy_closed: false,
                        },
                    );
                }
                Transmit::Write { conn, mut bytes } => {
                    if let Some(link) = self.links.get_mut(&conn) {
                        if !link.proxy_closed {
                            while !bytes.is_empty() {
                                let part = bytes.split_to(chunk.min(bytes.len()));
                                link.session.handle_input(now, &part);
                            }
                        }
                    }
                    self.process(conn);
                }
                Transmit::Close { conn } => {
                    if let Some(link) = self.links.get_mut(&conn) {
                        link.vm_closed = true;
                        link.to_vm.clear();
                        if !link.proxy_closed {
                            link.proxy_closed = true;
                            let outcome = self.coordinator.session_closed(now, &mut link.session);
                            self.log_outcome(format!("{outcome:?}"));
                            self.on_session_closed(conn, outcome);
                        }
                    }
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

    fn on_session_closed(&mut self, id: ConnId, outcome: CloseOutcome) {
        match outcome {
            CloseOutcome::Migrating { .. } => {}
            _ => {
                self.links.remove(&id);
                if self.current == Some(id) {
                    self.current = None;
                }
            }
        }
    }

    fn collect_from_proxy(&mut self, id: ConnId) -> bool {
        let Some(link) = self.links.get_mut(&id) else {
            return false;
        };
        let mut moved = false;
        while let Some(bytes) = link.session.poll_transmit() {
            moved = true;
            if !link.proxy_closed && !link.vm_closed {
                link.to_vm.push_back(bytes);
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
        for (id, link) in self.links.iter_mut() {
            while budget > 0 {
                let Some(front) = link.to_vm.front_mut() else {
                    break;
                };
                let take = chunk.min(budget).min(front.len());
                let part = front.split_to(take);
                if front.is_empty() {
                    link.to_vm.pop_front();
                }
                budget -= take;
                moved = true;
                self.vm.handle_input(now, *id, &part);
            }
        }
        moved
    }

    fn feed_backlog(&mut self) -> bool {
        let Some(mut target) = self.current else {
            return false;
        };
        if self.backlog.is_empty() {
            return false;
        }
        let bytes: Vec<u8> = self.backlog.iter().copied().collect();
        for _ in 0..2 {
            let Some(link) = self.links.get_mut(&target) else {
                return false;
            };
            match link.session.send_data(&bytes) {
                Ok(()) => {
                    self.backlog.clear();
                    self.client_accepted += bytes.len() as u64;
                    return true;
                }
                Err(SendError::MigratedTo(to)) => {
                    target = ConnId(to.0);
                    self.current = Some(target);
                }
                Err(_) => return false,
            }
        }
        false
    }

    fn answer_begin(&mut self, id: ConnId, allow: bool) {
        if let Some(link) = self.links.get_mut(&id) {
            let outcome = self.coordinator.begin(self.now, &mut link.session, allow);
            self.log_outcome(format!("{outcome:?}"));
        }
    }

    fn log_outcome(&mut self, outcome: String) {
        if self.outcomes.len() < self.max_log {
            self.outcomes.push(outcome);
        }
    }

    /// Handles the proxy events of connection `id` as a concentrator does.
    fn process(&mut self, id: ConnId) {
        let now = self.now;
        loop {
            let Some(event) = self.links.get_mut(&id).and_then(|l| l.session.poll_event()) else {
                return;
            };
            match &event {
                ProxyEvent::Data(bytes) if self.current.is_none() || self.current == Some(id) => {
                    for client in &mut self.clients {
                        client.record(bytes);
                    }
                }
                ProxyEvent::Identified(_) if self.current.is_none() => {
                    self.current = Some(id);
                }
                ProxyEvent::VmotionBegin { .. } => match self.config.begin_answer {
                    BeginAnswer::Coordinator => self.answer_begin(id, true),
                    BeginAnswer::NotNow => self.answer_begin(id, false),
                    BeginAnswer::Delayed(by) => self.delayed_begins.push((now + by, id)),
                },
                ProxyEvent::PeerClaim { .. } if !self.config.answer_peer => {}
                ProxyEvent::PeerClaim { .. } => {
                    if let Some(link) = self.links.get_mut(&id) {
                        let outcome = self.coordinator.claim(now, &mut link.session);
                        self.log_outcome(format!("{outcome:?}"));
                    }
                }
                ProxyEvent::VmotionComplete { source, .. } => {
                    let source = ConnId(source.0);
                    if let Some(mut src) = self.links.remove(&source) {
                        let outcome = match self.links.get_mut(&id) {
                            Some(dest) => {
                                self.coordinator
                                    .complete(now, &mut dest.session, &mut src.session)
                            }
                            None => CompleteOutcome::NoRequest,
                        };
                        let keep_source = match outcome {
                            CompleteOutcome::Switched { source_closed, .. } => {
                                self.current = Some(id);
                                !source_closed
                            }
                            _ => true,
                        };
                        if keep_source {
                            self.links.insert(source, src);
                        }
                        self.log_outcome(format!("{outcome:?}"));
                    }
                }
                ProxyEvent::VmotionAbort { .. } => {
                    if let Some(link) = self.links.get(&id) {
                        let aborted = self.coordinator.abort(&link.session);
                        self.log_outcome(format!("abort {aborted}"));
                    }
                }
                _ => {}
            }
            if self.proxy_events.len() < self.max_log {
                self.proxy_events.push((id, event));
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
