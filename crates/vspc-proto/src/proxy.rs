//! The proxy side of one VM connection.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use vspc_telnet::comport::ComPortMessage;
use vspc_telnet::{option, Command as TelnetCommand, Policy, Side, Telnet, TelnetConfig};

use crate::command::Command;
use crate::identity::Identity;
use crate::message::{Direction, Message, MessageError, VmotionKey, VMWARE_EXT};
use crate::session::{classify, Inbound, ProtocolError, SendError, SessionId};

/// The KNOWN-SUBOPTIONS-2 list a [`ProxySession`] sends: every named command, in code order.
/// It is the same on every connection and every time it is sent.
pub const PROXY_KNOWN_SUBOPTIONS: [Command; 22] = Command::ALL;

/// Decides WILL-PROXY or WONT-PROXY for a DO-PROXY request, from its direction and service URI.
///
/// ```
/// use vspc_proto::{Direction, ServicePolicy};
///
/// let policy = ServicePolicy::from_fn(|direction, uri| {
///     direction == Direction::Server && uri.starts_with(b"vSPC.py")
/// });
/// assert!(policy.accepts(Direction::Server, b"vSPC.py?port=console"));
/// assert!(!policy.accepts(Direction::Client, b"tcp://10.0.0.5:2377"));
/// assert!(ServicePolicy::default().accepts(Direction::Client, b"anything"));
/// ```
#[derive(Clone, Default)]
pub struct ServicePolicy(PolicyKind);

type ServiceFn = dyn Fn(Direction, &[u8]) -> bool + Send + Sync;

#[derive(Clone, Default)]
enum PolicyKind {
    #[default]
    AcceptAll,
    RefuseAll,
    Custom(Arc<ServiceFn>),
}

impl ServicePolicy {
    /// Accept every request (the default); the request is still reported as an event.
    pub fn accept_all() -> Self {
        ServicePolicy(PolicyKind::AcceptAll)
    }

    /// Refuse every request with WONT-PROXY.
    pub fn refuse_all() -> Self {
        ServicePolicy(PolicyKind::RefuseAll)
    }

    /// Decide with a function of the direction and the raw service URI.
    pub fn from_fn(f: impl Fn(Direction, &[u8]) -> bool + Send + Sync + 'static) -> Self {
        ServicePolicy(PolicyKind::Custom(Arc::new(f)))
    }

    /// Whether a request is accepted.
    pub fn accepts(&self, direction: Direction, service_uri: &[u8]) -> bool {
        match &self.0 {
            PolicyKind::AcceptAll => true,
            PolicyKind::RefuseAll => false,
            PolicyKind::Custom(f) => f(direction, service_uri),
        }
    }
}

impl fmt::Debug for ServicePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            PolicyKind::AcceptAll => "ServicePolicy::AcceptAll",
            PolicyKind::RefuseAll => "ServicePolicy::RefuseAll",
            PolicyKind::Custom(_) => "ServicePolicy::Custom",
        })
    }
}

/// Whether a [`ProxySession`] accepts the VM's `WILL COM-PORT` (RFC 2217).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ComPortPolicy {
    /// Answer `DONT COM-PORT` (the default, as the observed proxies do).
    #[default]
    Refuse,
    /// Answer `DO COM-PORT` and report the VM's UART settings as [`ProxyEvent::ComPort`].
    Accept,
}

/// Configuration of a [`ProxySession`].
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// How DO-PROXY is answered. Default: accept any.
    pub service_policy: ServicePolicy,
    /// COM-PORT handling. Default: refuse.
    pub com_port: ComPortPolicy,
    /// Send GET-VM-BIOS-UUID when the VM lists it in KNOWN-SUBOPTIONS-1. Default: true.
    pub query_bios_uuid: bool,
    /// Send GET-VM-LOCATION-UUID when the VM lists it in KNOWN-SUBOPTIONS-1. Default: true.
    pub query_location_uuid: bool,
    /// Cap on one subnegotiation payload in bytes (telnet layer). Default: 16 KiB.
    pub max_subnegotiation: usize,
    /// Cap on client-to-VM bytes held during a vMotion. Default: 1 MiB.
    pub max_held: usize,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            service_policy: ServicePolicy::default(),
            com_port: ComPortPolicy::default(),
            query_bios_uuid: true,
            query_location_uuid: true,
            max_subnegotiation: vspc_telnet::DEFAULT_MAX_SUBNEGOTIATION,
            max_held: 1 << 20,
        }
    }
}

/// A DO-PROXY request and the answer given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyRequest {
    /// `S` or `C`.
    pub direction: Direction,
    /// The service URI as sent.
    pub service_uri: Bytes,
    /// Whether WILL-PROXY was answered.
    pub accepted: bool,
}

/// What a [`ProxySession`] reports. Drain with [`ProxySession::poll_event`] after every input.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProxyEvent {
    /// Serial data from the VM (delivered from the first byte, identified or not).
    Data(Bytes),
    /// A VM-VC-UUID, VM-NAME, VM-BIOS-UUID or VM-LOCATION-UUID arrived: the identity so far.
    Identified(Box<Identity>),
    /// The VM's KNOWN-SUBOPTIONS-1 list.
    KnownSuboptions(Vec<Command>),
    /// DO-PROXY arrived and was answered (WILL-PROXY when `accepted`, else WONT-PROXY).
    ProxyRequested(ProxyRequest),
    /// VMOTION-BEGIN: pass the session to [`Coordinator::begin`](crate::Coordinator::begin),
    /// which answers GOAHEAD or NOTNOW. The VM waits at most `vmotionLimit` (5 s by default).
    VmotionBegin {
        /// The source host's sequence.
        sequence: Bytes,
    },
    /// VMOTION-PEER: a destination host claims a VM. Pass the session to
    /// [`Coordinator::claim`](crate::Coordinator::claim), which answers PEER-OK or
    /// UNKNOWN-SUBOPTION-RCVD-2(44).
    PeerClaim {
        /// `sequence ++ secret` as received.
        key: VmotionKey,
    },
    /// VMOTION-COMPLETE on an accepted destination: pass this session and the source session
    /// to [`Coordinator::complete`](crate::Coordinator::complete), which replays the held
    /// client data here and switches the VM.
    VmotionComplete {
        /// The sequence of the accepted vMotion.
        sequence: Bytes,
        /// The source connection.
        source: SessionId,
    },
    /// VMOTION-ABORT on the source: the held client data was already queued to the VM
    /// (`released` bytes). Tell the coordinator with
    /// [`Coordinator::abort`](crate::Coordinator::abort).
    VmotionAbort {
        /// The sequence of the aborted vMotion.
        sequence: Bytes,
        /// Held client bytes queued to the VM, ahead of any later data.
        released: usize,
    },
    /// The vMotion deadline passed without COMPLETE or ABORT (the source cancelled without a
    /// word): the held client data was queued to the VM. The coordinator expires the key at the
    /// same deadline.
    VmotionExpired {
        /// The sequence of the expired vMotion.
        sequence: Bytes,
        /// Held client bytes queued to the VM.
        released: usize,
    },
    /// An RFC 2217 message (only with [`ComPortPolicy::Accept`]).
    ComPort(ComPortMessage),
    /// UNKNOWN-SUBOPTION-RCVD-1: the VM did not know a command we sent.
    UnknownSuboptionReported(Command),
    /// A telnet command (BRK, NOP, ...) from the VM.
    Command(TelnetCommand),
    /// A telnet option came into or went out of effect.
    OptionChanged {
        /// Who performs it.
        side: Side,
        /// The option code.
        option: u8,
        /// Whether it is now in effect.
        enabled: bool,
    },
    /// A protocol violation; the session carries on.
    Error(ProtocolError),
}

#[derive(Debug, Clone)]
struct Hold {
    sequence: Bytes,
    deadline: Instant,
    /// Client data held until the vMotion ends.
    held: BytesMut,
}

/// This connection as a vMotion destination. The states of a vMotion under way are boxed:
/// every idle session carries this field, and few are ever mid-vMotion.
#[derive(Debug, Clone)]
enum Peer {
    None,
    /// PEER received, not yet answered; a COMPLETE pipelined before PEER-OK is kept.
    Claimed(Box<Claimed>),
    Accepted(Box<Accepted>),
    Completed {
        source: SessionId,
    },
}

#[derive(Debug, Clone)]
struct Claimed {
    key: VmotionKey,
    early_complete: Option<Bytes>,
}

#[derive(Debug, Clone)]
struct Accepted {
    key: VmotionKey,
    sequence: Bytes,
    source: SessionId,
    complete_received: bool,
}

const Q_UUID: u8 = 1;
const Q_NAME: u8 = 2;
const Q_BIOS: u8 = 4;
const Q_LOCATION: u8 = 8;

/// The proxy side of one VM connection: telnet negotiation, the option-232 handshake,
/// identification, serial data both ways and this connection's part in a vMotion.
///
/// Sans-IO: it reads no clock, opens no socket and never blocks. The application owns the
/// socket and one [`Coordinator`](crate::Coordinator) for all sessions.
///
/// # Driving order
/// 1. [`ProxySession::new`] queues the opening offers (`WILL BINARY`, `WILL SGA`, `WILL ECHO`,
///    `DO BINARY`, `DO SGA`, `DO 232`): write [`poll_transmit`](Self::poll_transmit) at once.
/// 2. For every read: [`handle_input`](Self::handle_input) (or
///    [`handle_input_slice`](Self::handle_input_slice)), then drain
///    [`poll_event`](Self::poll_event) until `None`, handing the vMotion events to the
///    coordinator as documented on each, then drain `poll_transmit` and write it.
/// 3. Client data for the VM: [`send_data`](Self::send_data), then `poll_transmit`.
/// 4. Timers: arm [`poll_timeout`](Self::poll_timeout); when it passes call
///    [`handle_timeout`](Self::handle_timeout) and drain as in 2.
/// 5. On EOF or error: [`Coordinator::session_closed`](crate::Coordinator::session_closed),
///    whose answer says whether the session must be kept (a vMotion is in flight).
///
/// Bounds: subnegotiations are capped ([`ProxyConfig::max_subnegotiation`]); held vMotion data
/// is capped ([`ProxyConfig::max_held`]); events and transmit bytes grow only with the input
/// and the application's own calls, so drain them after each call.
///
/// ```
/// use std::time::Instant;
/// use bytes::Bytes;
/// use vspc_proto::{ProxyConfig, ProxyEvent, ProxySession, SessionId};
///
/// let now = Instant::now();
/// let mut session = ProxySession::new(SessionId(1), ProxyConfig::default());
/// assert_eq!(
///     session.poll_transmit().as_deref(),
///     Some(&b"\xff\xfb\x00\xff\xfb\x03\xff\xfb\x01\xff\xfd\x00\xff\xfd\x03\xff\xfd\xe8"[..])
/// );
/// // The VM offers AUTHENTICATION (refused) and sends a byte of serial data.
/// session.handle_input(now, &Bytes::from_static(b"\xff\xfb\x25 "));
/// assert_eq!(session.poll_event(), Some(ProxyEvent::Data(Bytes::from_static(b" "))));
/// assert_eq!(session.poll_event(), None);
/// assert_eq!(session.poll_transmit().as_deref(), Some(&b"\xff\xfe\x25"[..]));
/// ```
#[derive(Debug)]
pub struct ProxySession {
    id: SessionId,
    /// Shared when the application passes one `Arc` to every session.
    config: Arc<ProxyConfig>,
    telnet: Telnet,
    events: VecDeque<ProxyEvent>,
    identity: Identity,
    vm_known: Option<Vec<Command>>,
    ks2_sent: bool,
    queried: u8,
    proxy_request: Option<ProxyRequest>,
    /// Boxed: a BEGIN awaiting its answer is rare and brief.
    begin_request: Option<Box<Bytes>>,
    /// Boxed: only a vMotion source under way has one.
    hold: Option<Box<Hold>>,
    peer: Peer,
    claim_unanswered: bool,
    migrated_to: Option<SessionId>,
    closed: bool,
    last_input: Option<Instant>,
}

impl ProxySession {
    /// A session for a new VM connection; the opening offers are queued for transmission.
    ///
    /// `config` is a [`ProxyConfig`] or an `Arc<ProxyConfig>`: a concentrator holding many
    /// connections passes clones of one `Arc`, and each session keeps a pointer rather than
    /// a copy.
    pub fn new(id: SessionId, config: impl Into<Arc<ProxyConfig>>) -> Self {
        let config = config.into();
        let mut policy = Policy::new()
            .accept_both(option::BINARY)
            .accept_both(option::SGA)
            .accept_local(option::ECHO)
            .accept_remote(option::VMWARE_EXT);
        if config.com_port == ComPortPolicy::Accept {
            policy = policy.accept_remote(option::COM_PORT);
        }
        let mut telnet = Telnet::new(TelnetConfig {
            policy,
            max_subnegotiation: config.max_subnegotiation,
        });
        telnet.request(Side::Local, option::BINARY, true);
        telnet.request(Side::Local, option::SGA, true);
        telnet.request(Side::Local, option::ECHO, true);
        telnet.request(Side::Remote, option::BINARY, true);
        telnet.request(Side::Remote, option::SGA, true);
        telnet.request(Side::Remote, option::VMWARE_EXT, true);
        ProxySession {
            id,
            config,
            telnet,
            events: VecDeque::new(),
            identity: Identity::default(),
            vm_known: None,
            ks2_sent: false,
            queried: 0,
            proxy_request: None,
            begin_request: None,
            hold: None,
            peer: Peer::None,
            claim_unanswered: false,
            migrated_to: None,
            closed: false,
            last_input: None,
        }
    }

    /// The application's identifier of this connection.
    pub fn id(&self) -> SessionId {
        self.id
    }

    /// Feeds bytes read from the VM. Data events share `input`'s buffer (no copy).
    /// Ignored after the session was closed.
    pub fn handle_input(&mut self, now: Instant, input: &Bytes) {
        self.feed(now, input, Some(input));
    }

    /// Feeds bytes read from the VM from a borrowed buffer (data events copy).
    pub fn handle_input_slice(&mut self, now: Instant, input: &[u8]) {
        self.feed(now, input, None);
    }

    fn feed(&mut self, now: Instant, input: &[u8], shared: Option<&Bytes>) {
        if self.closed {
            return;
        }
        self.last_input = Some(now);
        let mut rest = input;
        while let Some(event) = self.telnet.next_event(&mut rest) {
            let Some(inbound) =
                classify(event, shared, self.config.com_port == ComPortPolicy::Accept)
            else {
                continue;
            };
            match inbound {
                Inbound::Data(data) => self.events.push_back(ProxyEvent::Data(data)),
                Inbound::Command(command) => self.events.push_back(ProxyEvent::Command(command)),
                Inbound::Message(message) => self.on_message(message),
                Inbound::ComPort(message) => self.events.push_back(ProxyEvent::ComPort(message)),
                Inbound::Error(error) => self.events.push_back(ProxyEvent::Error(error)),
                Inbound::OptionChanged(side, option, enabled) => {
                    if side == Side::Remote && option == VMWARE_EXT {
                        if enabled {
                            self.send_known_suboptions();
                        } else {
                            self.ks2_sent = false;
                        }
                    }
                    self.events.push_back(ProxyEvent::OptionChanged {
                        side,
                        option,
                        enabled,
                    });
                }
            }
        }
    }

    fn send_message(&mut self, message: &Message) {
        let payload = message.to_vec();
        self.telnet.send_subnegotiation(VMWARE_EXT, &payload);
    }

    fn send_known_suboptions(&mut self) {
        if !self.ks2_sent {
            self.ks2_sent = true;
            self.send_message(&Message::KnownSuboptions2(PROXY_KNOWN_SUBOPTIONS.to_vec()));
        }
    }

    fn send_unknown(&mut self, command: Command) {
        self.send_message(&Message::UnknownSuboptionRcvd2(command));
    }

    fn vm_lists(&self, command: Command) -> bool {
        self.vm_known
            .as_ref()
            .is_some_and(|list| list.contains(&command))
    }

    fn send_queries(&mut self) {
        let wanted = [
            (Q_UUID, Message::GetVmVcUuid, true),
            (Q_NAME, Message::GetVmName, true),
            (
                Q_BIOS,
                Message::GetVmBiosUuid,
                self.config.query_bios_uuid && self.vm_lists(Command::GetVmBiosUuid),
            ),
            (
                Q_LOCATION,
                Message::GetVmLocationUuid,
                self.config.query_location_uuid && self.vm_lists(Command::GetVmLocationUuid),
            ),
        ];
        for (flag, message, want) in wanted {
            if want && self.queried & flag == 0 {
                self.queried |= flag;
                self.send_message(&message);
            }
        }
    }

    fn identified(&mut self) {
        self.events
            .push_back(ProxyEvent::Identified(Box::new(self.identity.clone())));
    }

    fn error(&mut self, error: ProtocolError) {
        self.events.push_back(ProxyEvent::Error(error));
    }

    fn on_message(&mut self, message: Result<Message, MessageError>) {
        let message = match message {
            Ok(message) => message,
            Err(error) => {
                match error.command() {
                    Some(Command::DoProxy) => self.send_message(&Message::WontProxy),
                    Some(Command::VmotionPeer) => self.send_unknown(Command::VmotionPeer),
                    _ => {}
                }
                return self.error(ProtocolError::Message(error));
            }
        };
        match message {
            Message::KnownSuboptions1(list) => {
                self.vm_known = Some(list.clone());
                self.events.push_back(ProxyEvent::KnownSuboptions(list));
                self.send_known_suboptions();
                self.send_queries();
            }
            Message::UnknownSuboptionRcvd1(command) => {
                self.events
                    .push_back(ProxyEvent::UnknownSuboptionReported(command));
            }
            Message::VmotionBegin { sequence } => {
                self.begin_request = Some(Box::new(sequence.clone()));
                self.events.push_back(ProxyEvent::VmotionBegin { sequence });
            }
            Message::VmotionPeer(key) => {
                self.send_queries();
                match &self.peer {
                    Peer::Completed { .. } => {}
                    Peer::Accepted(accepted) if accepted.key == key => {
                        self.claim_unanswered = true;
                    }
                    _ => {
                        self.peer = Peer::Claimed(Box::new(Claimed {
                            key: key.clone(),
                            early_complete: None,
                        }));
                        self.claim_unanswered = true;
                    }
                }
                self.events.push_back(ProxyEvent::PeerClaim { key });
            }
            Message::VmotionComplete { sequence } => match &mut self.peer {
                Peer::Accepted(accepted) if sequence.starts_with(&accepted.sequence) => {
                    accepted.complete_received = true;
                    let event = ProxyEvent::VmotionComplete {
                        sequence: accepted.sequence.clone(),
                        source: accepted.source,
                    };
                    self.events.push_back(event);
                }
                Peer::Claimed(claimed) if claimed.early_complete.is_none() => {
                    // Sent before our PEER-OK (ESXi waits for it): decided once the claim is.
                    claimed.early_complete = Some(sequence);
                }
                _ => self.error(ProtocolError::OutOfSequence(Command::VmotionComplete)),
            },
            Message::VmotionAbort => {
                if let Some(mut hold) = self.hold.take() {
                    self.begin_request = None;
                    let released = self.release(&mut hold.held);
                    self.events.push_back(ProxyEvent::VmotionAbort {
                        sequence: hold.sequence,
                        released,
                    });
                } else if let Some(sequence) = self.begin_request.take() {
                    self.events.push_back(ProxyEvent::VmotionAbort {
                        sequence: *sequence,
                        released: 0,
                    });
                } else {
                    self.error(ProtocolError::OutOfSequence(Command::VmotionAbort));
                }
            }
            Message::DoProxy {
                direction,
                service_uri,
            } => {
                self.send_queries();
                let accepted = self.config.service_policy.accepts(direction, &service_uri);
                self.send_message(if accepted {
                    &Message::WillProxy
                } else {
                    &Message::WontProxy
                });
                // The session keeps a copy of its own rather than a clone: a clone of a
                // `Bytes` made from a `Vec` allocates a shared header, kept as long as the
                // connection lives.
                self.proxy_request = Some(ProxyRequest {
                    direction,
                    service_uri: Bytes::copy_from_slice(&service_uri),
                    accepted,
                });
                self.events
                    .push_back(ProxyEvent::ProxyRequested(ProxyRequest {
                        direction,
                        service_uri,
                        accepted,
                    }));
            }
            Message::VmVcUuid(uuid) => {
                self.identity.vc_uuid = Some(uuid);
                self.identified();
            }
            Message::VmName(name) => {
                self.identity.name = Some(name);
                self.identified();
            }
            Message::VmBiosUuid(uuid) => {
                self.identity.bios_uuid = Some(uuid);
                self.identified();
            }
            Message::VmLocationUuid(uuid) => {
                self.identity.location_uuid = Some(uuid);
                self.identified();
            }
            Message::UnknownSuboptionRcvd2(_) => {
                // Never answer an "unknown" report: two peers doing so would loop.
                self.error(ProtocolError::UnexpectedMessage(message.command()));
            }
            Message::KnownSuboptions2(_)
            | Message::VmotionGoahead(_)
            | Message::VmotionNotNow { .. }
            | Message::VmotionPeerOk { .. }
            | Message::WillProxy
            | Message::WontProxy
            | Message::GetVmVcUuid
            | Message::GetVmName
            | Message::GetVmBiosUuid
            | Message::GetVmLocationUuid
            | Message::Unknown { .. } => {
                let command = message.command();
                self.send_unknown(command);
                self.error(ProtocolError::UnexpectedMessage(command));
            }
        }
    }

    /// Queues held client data to the VM; returns how many bytes.
    fn release(&mut self, held: &mut BytesMut) -> usize {
        if !held.is_empty() {
            self.telnet.send_data(held);
        }
        held.len()
    }

    /// Fires the vMotion deadline if it has passed (see [`ProxyEvent::VmotionExpired`]).
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(mut hold) = self.hold.take_if(|hold| hold.deadline <= now) {
            let released = self.release(&mut hold.held);
            self.events.push_back(ProxyEvent::VmotionExpired {
                sequence: hold.sequence,
                released,
            });
        }
    }

    /// The next deadline for [`handle_timeout`](Self::handle_timeout), if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.hold.as_ref().map(|hold| hold.deadline)
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<ProxyEvent> {
        self.events.pop_front()
    }

    /// Everything queued for the VM since the last call, as one write.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.telnet.poll_transmit()
    }

    /// Bytes queued for the VM and not yet polled (for backpressure).
    pub fn pending_transmit_len(&self) -> usize {
        self.telnet.pending_transmit_len()
    }

    /// Frees what the session holds and does not use: drained event and transmit queues, the
    /// telnet decoder's subnegotiation buffer between subnegotiations. A concentrator holding
    /// thousands of idle VMs calls it when a connection goes quiet (events and transmits
    /// drained); after a handshake it takes the session's heap from about 750 bytes to about
    /// 250 (`tests/footprint.rs`). Nothing observable changes.
    pub fn shrink_to_fit(&mut self) {
        if self.events.is_empty() {
            self.events = VecDeque::new();
        }
        self.telnet.shrink_to_fit();
    }

    /// Client data for the VM. Sent at once, except during a vMotion (from GOAHEAD to
    /// COMPLETE, ABORT or expiry) when it is held, up to [`ProxyConfig::max_held`] bytes, and
    /// delivered to whichever host ends up running the VM, before any later data.
    pub fn send_data(&mut self, data: &[u8]) -> Result<(), SendError> {
        if let Some(dest) = self.migrated_to {
            return Err(SendError::MigratedTo(dest));
        }
        if let Some(hold) = &mut self.hold {
            let held = hold.held.len();
            if held.saturating_add(data.len()) > self.config.max_held {
                return Err(SendError::HoldFull {
                    held,
                    limit: self.config.max_held,
                });
            }
            hold.held.extend_from_slice(data);
            return Ok(());
        }
        if self.closed {
            return Err(SendError::Closed);
        }
        self.telnet.send_data(data);
        Ok(())
    }

    /// Sends a telnet command (e.g. BRK for a serial break) to the VM.
    pub fn send_command(&mut self, command: TelnetCommand) {
        self.telnet.send_command(command);
    }

    /// Sends an RFC 2217 message (for a COM-PORT session the application accepted).
    pub fn send_com_port(&mut self, message: &ComPortMessage) {
        let mut payload = Vec::new();
        message.encode(&mut payload);
        self.telnet.send_subnegotiation(option::COM_PORT, &payload);
    }

    /// What the VM has told about itself so far.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The VM's KNOWN-SUBOPTIONS-1 list, once received.
    pub fn vm_known_suboptions(&self) -> Option<&[Command]> {
        self.vm_known.as_deref()
    }

    /// The last DO-PROXY request and its answer.
    pub fn proxy_request(&self) -> Option<&ProxyRequest> {
        self.proxy_request.as_ref()
    }

    /// Whether client data is being held for a vMotion.
    pub fn is_holding(&self) -> bool {
        self.hold.is_some()
    }

    /// Client bytes currently held.
    pub fn held_len(&self) -> usize {
        self.hold.as_ref().map_or(0, |hold| hold.held.len())
    }

    /// The sequence of the vMotion this connection is the source of (GOAHEAD sent).
    pub fn vmotion_sequence(&self) -> Option<&Bytes> {
        self.hold.as_ref().map(|hold| &hold.sequence)
    }

    /// The connection the VM moved to, once a vMotion from this one completed.
    pub fn migrated_to(&self) -> Option<SessionId> {
        self.migrated_to
    }

    /// The source connection, once this one completed a vMotion as the destination.
    pub fn migrated_from(&self) -> Option<SessionId> {
        match self.peer {
            Peer::Completed { source } => Some(source),
            _ => None,
        }
    }

    /// Whether [`Coordinator::session_closed`](crate::Coordinator::session_closed) was called.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// When input last arrived (for idle and keepalive policies).
    pub fn last_input(&self) -> Option<Instant> {
        self.last_input
    }

    /// The telnet endpoint, for inspection of option states.
    pub fn telnet(&self) -> &Telnet {
        &self.telnet
    }

    // ---- used by the coordinator ----

    pub(crate) fn pending_begin(&self) -> Option<&Bytes> {
        self.begin_request.as_deref()
    }

    pub(crate) fn has_hold(&self) -> bool {
        self.hold.is_some()
    }

    pub(crate) fn go_ahead(&mut self, key: &VmotionKey, sequence: Bytes, deadline: Instant) {
        self.begin_request = None;
        self.send_message(&Message::VmotionGoahead(key.clone()));
        // A hold being replaced (a new BEGIN after a claimed one) keeps its data, in order.
        let held = self.hold.take().map(|hold| hold.held).unwrap_or_default();
        self.hold = Some(Box::new(Hold {
            sequence,
            deadline,
            held,
        }));
    }

    /// NOTNOW for the pending BEGIN; `keep_hold` keeps an earlier vMotion that a peer already
    /// claimed, otherwise any earlier hold is released.
    pub(crate) fn not_now(&mut self, keep_hold: bool) {
        if let Some(sequence) = self.begin_request.take() {
            self.send_message(&Message::VmotionNotNow {
                sequence: *sequence,
            });
        }
        if !keep_hold {
            if let Some(mut hold) = self.hold.take() {
                self.release(&mut hold.held);
            }
        }
    }

    pub(crate) fn pending_claim(&self) -> Option<&VmotionKey> {
        if !self.claim_unanswered {
            return None;
        }
        match &self.peer {
            Peer::Claimed(claimed) => Some(&claimed.key),
            Peer::Accepted(accepted) => Some(&accepted.key),
            _ => None,
        }
    }

    pub(crate) fn accept_peer(&mut self, key: VmotionKey, sequence: Bytes, source: SessionId) {
        self.claim_unanswered = false;
        self.send_message(&Message::VmotionPeerOk {
            sequence: sequence.clone(),
        });
        let early = match &mut self.peer {
            Peer::Claimed(claimed) => claimed.early_complete.take(),
            _ => None,
        };
        let complete_received = early.as_ref().is_some_and(|s| s.starts_with(&sequence));
        if complete_received {
            self.events.push_back(ProxyEvent::VmotionComplete {
                sequence: sequence.clone(),
                source,
            });
        } else if early.is_some() {
            self.error(ProtocolError::OutOfSequence(Command::VmotionComplete));
        }
        self.peer = Peer::Accepted(Box::new(Accepted {
            key,
            sequence,
            source,
            complete_received,
        }));
    }

    pub(crate) fn reject_peer(&mut self) {
        self.claim_unanswered = false;
        if let Peer::Claimed(claimed) = &self.peer {
            if claimed.early_complete.is_some() {
                self.error(ProtocolError::OutOfSequence(Command::VmotionComplete));
            }
            self.peer = Peer::None;
        }
        self.send_unknown(Command::VmotionPeer);
    }

    /// The accepted key and source, when COMPLETE has been received.
    pub(crate) fn completion(&self) -> Option<(&VmotionKey, SessionId)> {
        match &self.peer {
            Peer::Accepted(accepted) if accepted.complete_received => {
                Some((&accepted.key, accepted.source))
            }
            _ => None,
        }
    }

    pub(crate) fn accepted_key(&self) -> Option<&VmotionKey> {
        match &self.peer {
            Peer::Accepted(accepted) => Some(&accepted.key),
            _ => None,
        }
    }

    pub(crate) fn drop_claim(&mut self) {
        self.claim_unanswered = false;
        if matches!(self.peer, Peer::Claimed(_) | Peer::Accepted(_)) {
            self.peer = Peer::None;
        }
    }

    /// Source side of a completed vMotion: hands the held data over.
    pub(crate) fn hand_over(&mut self, dest: SessionId) -> BytesMut {
        self.begin_request = None;
        self.migrated_to = Some(dest);
        self.hold.take().map(|hold| hold.held).unwrap_or_default()
    }

    /// Destination side of a completed vMotion: the held data goes out first.
    pub(crate) fn take_over(&mut self, source: SessionId, held: &[u8]) {
        self.peer = Peer::Completed { source };
        if !held.is_empty() {
            self.telnet.send_data(held);
        }
    }

    pub(crate) fn mark_closed(&mut self) {
        self.closed = true;
    }
}
