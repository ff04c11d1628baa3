//! [`Endpoint`]: every VM connection of one concentrator and its vMotion coordinator, in one
//! owner, so that no application routes a vMotion event by hand.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use vspc_telnet::comport::ComPortMessage;
use vspc_telnet::{Command as TelnetCommand, Side};

use crate::command::Command;
use crate::coordinator::{
    BeginOutcome, ClaimOutcome, CloseOutcome, CompleteOutcome, Coordinator, CoordinatorConfig,
    CoordinatorEvent, SecretSource,
};
use crate::identity::Identity;
use crate::message::VmotionKey;
use crate::proxy::{ProxyConfig, ProxyEvent, ProxyRequest, ProxySession};
use crate::session::{ProtocolError, SendError, SessionId};

/// Who answers a VMOTION-BEGIN or a VMOTION-PEER.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Answer {
    /// The endpoint answers at once (BEGIN: GOAHEAD unless vMotion is disallowed; PEER: by
    /// the key).
    #[default]
    Automatic,
    /// The endpoint reports the request ([`EndpointEvent::BeginRequested`],
    /// [`EndpointEvent::PeerRequested`]) and the application answers with
    /// [`Endpoint::answer_begin`] or [`Endpoint::answer_peer`], or never (a proxy that stays
    /// silent: ESXi gives up after its `vmotionLimit`).
    Manual,
}

/// Configuration of an [`Endpoint`].
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// Shared by every session.
    pub proxy: Arc<ProxyConfig>,
    /// The vMotion coordinator.
    pub coordinator: CoordinatorConfig,
    /// Answer BEGIN with GOAHEAD (`false`: always NOTNOW). Default: true.
    pub allow_vmotion: bool,
    /// Who answers VMOTION-BEGIN. Default: [`Answer::Automatic`].
    pub begin: Answer,
    /// Who answers VMOTION-PEER. Default: [`Answer::Automatic`].
    pub peer: Answer,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            proxy: Arc::new(ProxyConfig::default()),
            coordinator: CoordinatorConfig::default(),
            allow_vmotion: true,
            begin: Answer::Automatic,
            peer: Answer::Automatic,
        }
    }
}

/// Why a connection left the endpoint ([`EndpointEvent::Closed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The connection closed while it carried its VM (or before it carried one): the VM is
    /// gone from this concentrator until it connects again.
    Disconnected,
    /// The VM had already moved to `to` by a completed vMotion: nothing is lost.
    MovedAway {
        /// The connection carrying the VM now.
        to: SessionId,
    },
    /// The connection had closed during a vMotion that then expired without COMPLETE: the
    /// VM is gone (its held client data went nowhere).
    VmotionExpired,
}

/// What an [`Endpoint`] reports. Drain with [`Endpoint::poll_event`] after every call.
///
/// Exhaustive on purpose: a new variant is a compile error in every `match`, so no
/// application silently ignores a new kind of event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointEvent<T = ()> {
    /// Serial data from the VM on `conn` (from the first byte, identified or not).
    Data {
        /// The connection.
        conn: SessionId,
        /// The bytes (a slice of the read buffer: no copy).
        bytes: Bytes,
    },
    /// The VM told more about itself (VC UUID, name, BIOS or location UUID).
    Identified {
        /// The connection.
        conn: SessionId,
        /// The identity so far.
        identity: Box<Identity>,
    },
    /// The VM's KNOWN-SUBOPTIONS-1 list.
    KnownSuboptions {
        /// The connection.
        conn: SessionId,
        /// The commands the VM knows.
        commands: Vec<Command>,
    },
    /// DO-PROXY arrived and was answered.
    ProxyRequested {
        /// The connection.
        conn: SessionId,
        /// The request and the answer.
        request: ProxyRequest,
    },
    /// The connection has a VC UUID and an accepted DO-PROXY: it carries a VM port of its
    /// own (a vMotion destination never does; it takes over its source's instead). Once per
    /// connection.
    Ready {
        /// The connection.
        conn: SessionId,
    },
    /// VMOTION-BEGIN with [`Answer::Manual`]: call [`Endpoint::answer_begin`].
    BeginRequested {
        /// The source connection.
        conn: SessionId,
        /// The source host's sequence.
        sequence: Bytes,
    },
    /// A VMOTION-BEGIN was answered (GOAHEAD or NOTNOW).
    BeginAnswered {
        /// The source connection.
        conn: SessionId,
        /// The source host's sequence.
        sequence: Bytes,
        /// The answer.
        outcome: BeginOutcome,
    },
    /// VMOTION-PEER with [`Answer::Manual`]: call [`Endpoint::answer_peer`].
    PeerRequested {
        /// The destination connection.
        conn: SessionId,
        /// `sequence ++ secret` as received.
        key: VmotionKey,
    },
    /// A VMOTION-PEER was answered (PEER-OK or refused).
    PeerAnswered {
        /// The destination connection.
        conn: SessionId,
        /// `sequence ++ secret` as received.
        key: VmotionKey,
        /// The answer.
        outcome: ClaimOutcome,
    },
    /// A vMotion completed: the VM that `from` carried now runs behind `to`, which already
    /// has the held client data queued ahead of anything else. Send client data to `to` from
    /// now on ([`Endpoint::send_data`] on `from` follows the move while `from` is still open).
    Moved {
        /// The source connection.
        from: SessionId,
        /// The destination connection.
        to: SessionId,
        /// The vMotion's sequence.
        sequence: Bytes,
        /// Held client bytes queued to `to`.
        replayed: usize,
    },
    /// A VMOTION-COMPLETE that changed nothing (expired, aborted or unknown vMotion).
    CompleteRefused {
        /// The destination connection.
        conn: SessionId,
        /// Why.
        outcome: CompleteOutcome,
    },
    /// VMOTION-ABORT on the source: held client data went to the VM, which stays here.
    VmotionAborted {
        /// The source connection.
        conn: SessionId,
        /// The vMotion's sequence.
        sequence: Bytes,
        /// Held client bytes queued to the VM.
        released: usize,
    },
    /// A vMotion passed its deadline with neither COMPLETE nor ABORT. When the source is
    /// still open, its held client data went to the VM, which stays here; when it had closed,
    /// [`EndpointEvent::Closed`] follows with [`CloseReason::VmotionExpired`].
    VmotionExpired {
        /// The source connection.
        conn: SessionId,
        /// The vMotion's sequence.
        sequence: Bytes,
        /// Held client bytes queued to the VM (lost when the source had closed).
        released: usize,
    },
    /// The source of a pending vMotion closed: the VM is in transit. The connection's state
    /// is kept (it holds client data) until [`EndpointEvent::Moved`] or the vMotion expires.
    SourceClosed {
        /// The source connection.
        conn: SessionId,
        /// The destination that claimed the vMotion, if one did yet.
        peer: Option<SessionId>,
    },
    /// The connection left the endpoint; its data is handed back.
    Closed {
        /// The connection.
        conn: SessionId,
        /// Why, and what became of its VM.
        reason: CloseReason,
        /// The application's data given to [`Endpoint::connect`].
        data: T,
    },
    /// An RFC 2217 message (only with [`ComPortPolicy::Accept`](crate::ComPortPolicy)).
    ComPort {
        /// The connection.
        conn: SessionId,
        /// The message.
        message: ComPortMessage,
    },
    /// UNKNOWN-SUBOPTION-RCVD-1: the VM did not know a command we sent.
    UnknownSuboptionReported {
        /// The connection.
        conn: SessionId,
        /// The command.
        command: Command,
    },
    /// A telnet command (BRK, NOP, ...) from the VM.
    Command {
        /// The connection.
        conn: SessionId,
        /// The command.
        command: TelnetCommand,
    },
    /// A telnet option came into or went out of effect.
    OptionChanged {
        /// The connection.
        conn: SessionId,
        /// Who performs it.
        side: Side,
        /// The option code.
        option: u8,
        /// Whether it is now in effect.
        enabled: bool,
    },
    /// A protocol violation by the VM; the connection carries on.
    ProtocolError {
        /// The connection.
        conn: SessionId,
        /// What was wrong.
        error: ProtocolError,
    },
}

impl<T> EndpointEvent<T> {
    /// The connection the event is about: for [`EndpointEvent::Moved`], the destination
    /// (where VMOTION-COMPLETE arrived; the source is `from`).
    pub fn conn(&self) -> SessionId {
        match self {
            EndpointEvent::Data { conn, .. }
            | EndpointEvent::Identified { conn, .. }
            | EndpointEvent::KnownSuboptions { conn, .. }
            | EndpointEvent::ProxyRequested { conn, .. }
            | EndpointEvent::Ready { conn }
            | EndpointEvent::BeginRequested { conn, .. }
            | EndpointEvent::BeginAnswered { conn, .. }
            | EndpointEvent::PeerRequested { conn, .. }
            | EndpointEvent::PeerAnswered { conn, .. }
            | EndpointEvent::CompleteRefused { conn, .. }
            | EndpointEvent::VmotionAborted { conn, .. }
            | EndpointEvent::VmotionExpired { conn, .. }
            | EndpointEvent::SourceClosed { conn, .. }
            | EndpointEvent::Closed { conn, .. }
            | EndpointEvent::ComPort { conn, .. }
            | EndpointEvent::UnknownSuboptionReported { conn, .. }
            | EndpointEvent::Command { conn, .. }
            | EndpointEvent::OptionChanged { conn, .. }
            | EndpointEvent::ProtocolError { conn, .. } => *conn,
            EndpointEvent::Moved { to, .. } => *to,
        }
    }
}

/// Why [`Endpoint::send_data`] did not take client data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointSendError {
    /// No such connection (closed and gone, or never connected).
    #[error("no connection {0}")]
    UnknownConnection(SessionId),
    /// The session refused it (the vMotion hold is full, or the connection closed): retry
    /// the same bytes later for `HoldFull`.
    #[error(transparent)]
    Session(#[from] SendError),
}

#[derive(Debug)]
struct Conn<T> {
    session: ProxySession,
    data: T,
    /// `Ready` was reported.
    ready: bool,
    /// The application asked to close once the queued bytes are written.
    closing: bool,
    /// The session's hold deadline as indexed in `holds`.
    hold_deadline: Option<Instant>,
}

/// Every VM connection of a concentrator, and the vMotion coordinator between them.
///
/// It owns the [`ProxySession`]s and the [`Coordinator`]: vMotion events never reach the
/// application as something it must forward; they come out as outcomes
/// ([`EndpointEvent::BeginAnswered`], [`EndpointEvent::Moved`], ...). `T` is the
/// application's per-connection data (a socket handle, a registry key), kept beside the
/// session and handed back when the connection leaves ([`EndpointEvent::Closed`]).
///
/// # Driving contract
/// One mutation, then poll until empty:
/// 1. [`connect`](Self::connect) a new VM connection, then write its
///    [`poll_transmit`](Self::poll_transmit) (the opening offers);
/// 2. every read: [`handle_input`](Self::handle_input); EOF or error:
///    [`handle_close`](Self::handle_close);
/// 3. client data for a VM: [`send_data`](Self::send_data) (it follows a completed vMotion);
/// 4. after each of these, drain [`poll_event`](Self::poll_event), then write every
///    connection's [`poll_transmit`](Self::poll_transmit) (a vMotion's COMPLETE queues bytes
///    on another connection than the one read);
/// 5. arm a timer at [`poll_timeout`](Self::poll_timeout) and call
///    [`handle_timeout`](Self::handle_timeout) when it passes.
///
/// Close a connection from the application's side with [`close`](Self::close): once its
/// queued bytes are written ([`wants_close`](Self::wants_close)), shut the socket down and
/// report [`handle_close`](Self::handle_close).
///
/// # Time model
/// `now` is an argument; the endpoint reads no clock. Early or late timeouts are harmless.
///
/// # Panics and bounds
/// Never panics on any input or call order; calls naming an unknown connection do nothing.
/// Its bounds are the sessions' and the coordinator's (see [`ProxyConfig`] and
/// [`CoordinatorConfig`]); events grow only with input: drain them.
///
/// ```
/// use std::time::Instant;
/// use vspc_proto::*;
///
/// let now = Instant::now();
/// let mut endpoint: Endpoint = Endpoint::new(EndpointConfig::default());
/// let uuid: Uuid = "01 23 45 67 89 ab cd ef-fe dc ba 98 00 00 00 00".parse().unwrap();
/// let role = VmRole::Source { direction: Direction::Server, service_uri: "vSPC.py".into() };
/// let mut vm = VmSession::new(now, VmConfig::new(uuid, "vm-1", role));
/// let conn = endpoint.connect(());
/// let mut ready = false;
/// loop {
///     let mut moved = false;
///     while let Some(bytes) = vm.poll_transmit() {
///         endpoint.handle_input(now, conn, &bytes);
///         moved = true;
///     }
///     while let Some(event) = endpoint.poll_event() {
///         ready |= matches!(event, EndpointEvent::Ready { .. });
///     }
///     while let Some(bytes) = endpoint.poll_transmit(conn) {
///         vm.handle_input(now, &bytes);
///         moved = true;
///     }
///     while vm.poll_event().is_some() {}
///     if !moved {
///         break;
///     }
/// }
/// assert!(ready);
/// ```
///
/// A complete vMotion: the source host asks (BEGIN), the endpoint answers GOAHEAD with a
/// fresh secret, the destination host presents it (PEER), completes, and the source
/// closes; a client's bytes sent meanwhile reach the destination, and nobody routed an event
/// to the coordinator by hand.
///
/// ```
/// use std::time::Instant;
/// use vspc_proto::*;
///
/// fn pump(now: Instant, endpoint: &mut Endpoint, conn: SessionId, vm: &mut VmSession) -> Vec<EndpointEvent> {
///     let mut events = Vec::new();
///     loop {
///         let mut moved = false;
///         while let Some(bytes) = vm.poll_transmit() {
///             endpoint.handle_input(now, conn, &bytes);
///             moved = true;
///         }
///         events.extend(std::iter::from_fn(|| endpoint.poll_event()));
///         while let Some(bytes) = endpoint.poll_transmit(conn) {
///             vm.handle_input(now, &bytes);
///             moved = true;
///         }
///         if !moved {
///             return events;
///         }
///     }
/// }
///
/// let now = Instant::now();
/// let mut endpoint: Endpoint = Endpoint::new(EndpointConfig::default());
/// let uuid: Uuid = "01 23 45 67 89 ab cd ef-fe dc ba 98 00 00 00 00".parse().unwrap();
/// let role = VmRole::Source { direction: Direction::Server, service_uri: "vSPC.py".into() };
/// let mut source = VmSession::new(now, VmConfig::new(uuid, "vm-1", role));
/// let from = endpoint.connect(());
/// pump(now, &mut endpoint, from, &mut source);
///
/// // BEGIN on the source: the endpoint answers GOAHEAD with a secret of its own.
/// source.begin_vmotion(b"\x44\xda");
/// pump(now, &mut endpoint, from, &mut source);
/// let key = std::iter::from_fn(|| source.poll_event())
///     .find_map(|event| match event {
///         VmEvent::VmotionGoahead { key } => Some(key),
///         _ => None,
///     })
///     .expect("GOAHEAD");
///
/// // A client types during the vMotion: held, not lost.
/// endpoint.send_data(from, b"typed during the move").unwrap();
///
/// // The destination host presents the key, then completes; the source closes.
/// let role = VmRole::Destination {
///     sequence: key.sequence().unwrap().to_vec().into(),
///     secret: key.secret().unwrap().to_vec().into(),
/// };
/// let mut destination = VmSession::new(now, VmConfig::new(uuid, "vm-1", role));
/// let to = endpoint.connect(());
/// pump(now, &mut endpoint, to, &mut destination);
/// assert!(destination.complete_vmotion());
/// let events = pump(now, &mut endpoint, to, &mut destination);
/// assert!(events.iter().any(|e| matches!(e, EndpointEvent::Moved { from: f, to: t, .. } if (*f, *t) == (from, to))));
/// endpoint.handle_close(now, from);
/// assert_eq!(
///     endpoint.poll_event(),
///     Some(EndpointEvent::Closed { conn: from, reason: CloseReason::MovedAway { to }, data: () })
/// );
///
/// // The held bytes reached the destination; later ones go there too.
/// endpoint.send_data(to, b" and after").unwrap();
/// pump(now, &mut endpoint, to, &mut destination);
/// let received: Vec<u8> = std::iter::from_fn(|| destination.poll_event())
///     .filter_map(|event| match event {
///         VmEvent::Data(bytes) => Some(bytes.to_vec()),
///         _ => None,
///     })
///     .flatten()
///     .collect();
/// assert_eq!(received, b"typed during the move and after");
/// ```
#[derive(Debug)]
pub struct Endpoint<T = ()> {
    config: EndpointConfig,
    coordinator: Coordinator,
    /// Boxed: a session is several hundred bytes and a hash table keeps slots empty.
    conns: HashMap<SessionId, Box<Conn<T>>>,
    /// Sessions holding client data for a vMotion, by deadline.
    holds: BTreeSet<(Instant, SessionId)>,
    events: VecDeque<EndpointEvent<T>>,
    next_id: u64,
}

impl<T> Endpoint<T> {
    /// An endpoint whose coordinator draws secrets from the OS CSPRNG.
    pub fn new(config: EndpointConfig) -> Self {
        let coordinator = Coordinator::new(config.coordinator.clone());
        Endpoint::with_coordinator(config, coordinator)
    }

    /// An endpoint whose coordinator draws secrets from `secrets` (tests, fuzzing).
    pub fn with_secret_source(
        config: EndpointConfig,
        secrets: impl SecretSource + 'static,
    ) -> Self {
        let coordinator = Coordinator::with_secret_source(config.coordinator.clone(), secrets);
        Endpoint::with_coordinator(config, coordinator)
    }

    fn with_coordinator(config: EndpointConfig, coordinator: Coordinator) -> Self {
        Endpoint {
            config,
            coordinator,
            conns: HashMap::new(),
            holds: BTreeSet::new(),
            events: VecDeque::new(),
            next_id: 1,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &EndpointConfig {
        &self.config
    }

    /// Allows or refuses (NOTNOW) vMotions from now on.
    pub fn set_allow_vmotion(&mut self, allow: bool) {
        self.config.allow_vmotion = allow;
    }

    /// The coordinator (for inspection).
    pub fn coordinator(&self) -> &Coordinator {
        &self.coordinator
    }

    /// A new VM connection; its session queues the opening offers at once.
    pub fn connect(&mut self, data: T) -> SessionId {
        let id = SessionId(self.next_id);
        self.next_id += 1;
        let session = ProxySession::new(id, self.config.proxy.clone());
        self.conns.insert(
            id,
            Box::new(Conn {
                session,
                data,
                ready: false,
                closing: false,
                hold_deadline: None,
            }),
        );
        id
    }

    /// How many connections the endpoint holds (including sources in transit).
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// The ids of every connection, in no particular order.
    pub fn connections(&self) -> impl Iterator<Item = SessionId> + '_ {
        self.conns.keys().copied()
    }

    /// The session of `conn`.
    pub fn session(&self, conn: SessionId) -> Option<&ProxySession> {
        self.conns.get(&conn).map(|c| &c.session)
    }

    /// The application's data of `conn`.
    pub fn data(&self, conn: SessionId) -> Option<&T> {
        self.conns.get(&conn).map(|c| &c.data)
    }

    /// The application's data of `conn`, mutably.
    pub fn data_mut(&mut self, conn: SessionId) -> Option<&mut T> {
        self.conns.get_mut(&conn).map(|c| &mut c.data)
    }

    /// Bytes read from `conn`.
    pub fn handle_input(&mut self, now: Instant, conn: SessionId, bytes: &Bytes) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.session.handle_input(now, bytes);
            self.process(now, conn);
        }
    }

    /// The transport of `conn` reached EOF or failed (or the application shut it down after
    /// [`wants_close`](Self::wants_close)).
    pub fn handle_close(&mut self, now: Instant, conn: SessionId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.session.is_closed() {
            return;
        }
        match self.coordinator.session_closed(now, &mut c.session) {
            CloseOutcome::Migrating { peer } => {
                self.events
                    .push_back(EndpointEvent::SourceClosed { conn, peer });
            }
            CloseOutcome::MigratedAway { to } => self.remove(conn, CloseReason::MovedAway { to }),
            CloseOutcome::Closed => self.remove(conn, CloseReason::Disconnected),
        }
    }

    /// Asks to close `conn` once what is queued for it is written: from then on
    /// [`wants_close`](Self::wants_close) is true when [`poll_transmit`](Self::poll_transmit)
    /// is empty.
    pub fn close(&mut self, conn: SessionId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.closing = true;
        }
    }

    /// Whether the transport of `conn` should be shut down now: the application asked with
    /// [`close`](Self::close) and everything queued was taken, or the connection is gone or
    /// closed.
    pub fn wants_close(&self, conn: SessionId) -> bool {
        self.conns.get(&conn).is_none_or(|c| {
            c.session.is_closed() || (c.closing && c.session.pending_transmit_len() == 0)
        })
    }

    /// Client data for the VM that `conn` carries (or carried: after a completed vMotion
    /// the data follows the VM to its new connection). Held during a vMotion, in order.
    pub fn send_data(
        &mut self,
        conn: SessionId,
        data: &[u8],
    ) -> Result<SessionId, EndpointSendError> {
        let mut target = conn;
        // A chain of completed vMotions is followed hop by hop; each hop is a live session.
        for _ in 0..8 {
            let c = self
                .conns
                .get_mut(&target)
                .ok_or(EndpointSendError::UnknownConnection(target))?;
            match c.session.send_data(data) {
                Ok(()) => return Ok(target),
                Err(SendError::MigratedTo(to)) => target = to,
                Err(error) => return Err(error.into()),
            }
        }
        Err(EndpointSendError::UnknownConnection(target))
    }

    /// Sends a telnet command (e.g. BRK for a serial break) to the VM on `conn`.
    pub fn send_command(&mut self, conn: SessionId, command: TelnetCommand) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.session.send_command(command);
        }
    }

    /// Sends an RFC 2217 message to the VM on `conn`.
    pub fn send_com_port(&mut self, conn: SessionId, message: &ComPortMessage) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.session.send_com_port(message);
        }
    }

    /// Answers the pending VMOTION-BEGIN of `conn` ([`Answer::Manual`]): GOAHEAD when
    /// `allow` (and the coordinator agrees), else NOTNOW.
    ///
    /// Does nothing when `conn` has no unanswered BEGIN, is unknown, or has closed (the
    /// answer could not reach the VM).
    pub fn answer_begin(&mut self, now: Instant, conn: SessionId, allow: bool) {
        self.begin(now, conn, allow);
        self.sync_hold(conn);
        self.process(now, conn);
    }

    /// Answers the pending VMOTION-PEER of `conn` ([`Answer::Manual`]). A VMOTION-COMPLETE
    /// the destination sent before this answer is acted on at once ([`EndpointEvent::Moved`]).
    ///
    /// Does nothing when `conn` has no unanswered PEER, is unknown, or has closed.
    pub fn answer_peer(&mut self, now: Instant, conn: SessionId) {
        self.claim(now, conn);
        self.process(now, conn);
    }

    /// Everything queued for the VM on `conn` since the last call, as one write.
    pub fn poll_transmit(&mut self, conn: SessionId) -> Option<Bytes> {
        self.conns.get_mut(&conn)?.session.poll_transmit()
    }

    /// Bytes queued for `conn` and not yet polled (for backpressure).
    pub fn pending_transmit_len(&self, conn: SessionId) -> usize {
        self.conns
            .get(&conn)
            .map_or(0, |c| c.session.pending_transmit_len())
    }

    /// Gives back the memory an idle connection does not use (see
    /// [`ProxySession::shrink_to_fit`]).
    pub fn shrink_to_fit(&mut self, conn: SessionId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.session.shrink_to_fit();
        }
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<EndpointEvent<T>> {
        self.events.pop_front()
    }

    /// The earliest deadline: a vMotion's expiry.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let hold = self.holds.first().map(|(at, _)| *at);
        match (hold, self.coordinator.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Fires what is due: held client data released at a vMotion's deadline, expired keys,
    /// sources that closed for a vMotion that never completed.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(at, conn)) = self.holds.first() {
            if at > now {
                break;
            }
            self.holds.pop_first();
            if let Some(c) = self.conns.get_mut(&conn) {
                c.hold_deadline = None;
                c.session.handle_timeout(now);
            }
            // Re-indexes a hold that was not due after all, rather than lose its timer.
            self.sync_hold(conn);
            self.process(now, conn);
        }
        self.coordinator.handle_timeout(now);
        while let Some(event) = self.coordinator.poll_event() {
            let CoordinatorEvent::Expired {
                source,
                sequence,
                source_closed,
                ..
            } = event;
            // The source session reported its own expiry (its hold deadline is the
            // coordinator's, and holds fire first); a closed one now leaves.
            let _ = sequence;
            if source_closed {
                self.remove(source, CloseReason::VmotionExpired);
            }
        }
    }

    fn remove(&mut self, conn: SessionId, reason: CloseReason) {
        if let Some(c) = self.conns.remove(&conn) {
            if let Some(at) = c.hold_deadline {
                self.holds.remove(&(at, conn));
            }
            self.events.push_back(EndpointEvent::Closed {
                conn,
                reason,
                data: c.data,
            });
        }
    }

    /// Keeps `holds` in step with the session's hold deadline.
    fn sync_hold(&mut self, conn: SessionId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let now_at = c.session.poll_timeout();
        if now_at != c.hold_deadline {
            if let Some(at) = c.hold_deadline {
                self.holds.remove(&(at, conn));
            }
            if let Some(at) = now_at {
                self.holds.insert((at, conn));
            }
            c.hold_deadline = now_at;
        }
    }

    fn begin(&mut self, now: Instant, conn: SessionId, allow: bool) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        // A closed source (kept while its vMotion is in transit) must not start another one:
        // the coordinator would take it for open and never report it gone.
        if c.session.is_closed() {
            return;
        }
        let Some(sequence) = c.session.pending_begin().cloned() else {
            return;
        };
        let outcome = self.coordinator.begin(now, &mut c.session, allow);
        if outcome != BeginOutcome::NoRequest {
            self.events.push_back(EndpointEvent::BeginAnswered {
                conn,
                sequence,
                outcome,
            });
        }
    }

    fn claim(&mut self, now: Instant, conn: SessionId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        // A closed connection claiming a vMotion would block the real destination.
        if c.session.is_closed() {
            return;
        }
        let Some(key) = c.session.pending_claim().cloned() else {
            return;
        };
        let outcome = self.coordinator.claim(now, &mut c.session);
        if outcome != ClaimOutcome::NoRequest {
            self.events
                .push_back(EndpointEvent::PeerAnswered { conn, key, outcome });
        }
    }

    fn complete(&mut self, now: Instant, dest: SessionId, source: SessionId, sequence: Bytes) {
        let Some(mut src) = self.conns.remove(&source) else {
            // The source left, so its vMotion is no longer pending (a pending vMotion keeps
            // its source): refuse as the coordinator would, dropping the stale claim.
            if let Some(d) = self.conns.get_mut(&dest) {
                d.session.drop_claim();
            }
            self.events.push_back(EndpointEvent::CompleteRefused {
                conn: dest,
                outcome: CompleteOutcome::NotPending,
            });
            return;
        };
        let outcome = match self.conns.get_mut(&dest) {
            Some(d) => self
                .coordinator
                .complete(now, &mut d.session, &mut src.session),
            None => CompleteOutcome::NoRequest,
        };
        self.conns.insert(source, src);
        match outcome {
            CompleteOutcome::Switched {
                replayed,
                source_closed,
                ..
            } => {
                self.sync_hold(source);
                self.events.push_back(EndpointEvent::Moved {
                    from: source,
                    to: dest,
                    sequence,
                    replayed,
                });
                if source_closed {
                    self.remove(source, CloseReason::MovedAway { to: dest });
                }
            }
            outcome => self.events.push_back(EndpointEvent::CompleteRefused {
                conn: dest,
                outcome,
            }),
        }
    }

    /// Drains a session's events, answering the vMotion ones through the coordinator.
    fn process(&mut self, now: Instant, conn: SessionId) {
        loop {
            let Some(c) = self.conns.get_mut(&conn) else {
                return;
            };
            let Some(event) = c.session.poll_event() else {
                break;
            };
            let out = match event {
                ProxyEvent::Data(bytes) => EndpointEvent::Data { conn, bytes },
                ProxyEvent::Identified(identity) => {
                    let ready = Self::became_ready(c);
                    self.events
                        .push_back(EndpointEvent::Identified { conn, identity });
                    if !ready {
                        continue;
                    }
                    EndpointEvent::Ready { conn }
                }
                ProxyEvent::ProxyRequested(request) => {
                    let ready = Self::became_ready(c);
                    self.events
                        .push_back(EndpointEvent::ProxyRequested { conn, request });
                    if !ready {
                        continue;
                    }
                    EndpointEvent::Ready { conn }
                }
                ProxyEvent::KnownSuboptions(commands) => {
                    EndpointEvent::KnownSuboptions { conn, commands }
                }
                ProxyEvent::VmotionBegin { sequence } => match self.config.begin {
                    Answer::Automatic => {
                        let allow = self.config.allow_vmotion;
                        self.begin(now, conn, allow);
                        self.sync_hold(conn);
                        continue;
                    }
                    Answer::Manual => EndpointEvent::BeginRequested { conn, sequence },
                },
                ProxyEvent::PeerClaim { key } => match self.config.peer {
                    Answer::Automatic => {
                        self.claim(now, conn);
                        continue;
                    }
                    Answer::Manual => EndpointEvent::PeerRequested { conn, key },
                },
                ProxyEvent::VmotionComplete { sequence, source } => {
                    self.complete(now, conn, source, sequence);
                    continue;
                }
                ProxyEvent::VmotionAbort { sequence, released } => {
                    self.coordinator.abort(&c.session);
                    self.sync_hold(conn);
                    EndpointEvent::VmotionAborted {
                        conn,
                        sequence,
                        released,
                    }
                }
                ProxyEvent::VmotionExpired { sequence, released } => {
                    self.sync_hold(conn);
                    EndpointEvent::VmotionExpired {
                        conn,
                        sequence,
                        released,
                    }
                }
                ProxyEvent::ComPort(message) => EndpointEvent::ComPort { conn, message },
                ProxyEvent::UnknownSuboptionReported(command) => {
                    EndpointEvent::UnknownSuboptionReported { conn, command }
                }
                ProxyEvent::Command(command) => EndpointEvent::Command { conn, command },
                ProxyEvent::OptionChanged {
                    side,
                    option,
                    enabled,
                } => EndpointEvent::OptionChanged {
                    conn,
                    side,
                    option,
                    enabled,
                },
                ProxyEvent::Error(error) => EndpointEvent::ProtocolError { conn, error },
            };
            self.events.push_back(out);
        }
    }

    /// Whether the connection just became able to carry a VM port of its own.
    fn became_ready(c: &mut Conn<T>) -> bool {
        if c.ready {
            return false;
        }
        let identified = c.session.identity().vc_uuid.is_some();
        let accepted = c.session.proxy_request().is_some_and(|r| r.accepted);
        c.ready = identified && accepted;
        c.ready
    }
}
