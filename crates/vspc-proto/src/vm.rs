//! The VM side of a connection: what ESXi does on the wire, for emulators and tests.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use vspc_telnet::comport::ComPortMessage;
use vspc_telnet::{option, Command as TelnetCommand, Policy, Side, Telnet, TelnetConfig};

use crate::command::Command;
use crate::identity::{Uuid, VmName, VmUuid};
use crate::message::{Direction, Message, MessageError, VmotionKey, VMWARE_EXT};
use crate::session::{classify, deadline_after, Inbound, ProtocolError};

/// ESXi's KNOWN-SUBOPTIONS-1 list, in ESXi's (unsorted) order, as captured.
pub const ESXI_KNOWN_SUBOPTIONS: [Command; 22] = [
    Command::KnownSuboptions1,
    Command::KnownSuboptions2,
    Command::UnknownSuboptionRcvd1,
    Command::UnknownSuboptionRcvd2,
    Command::VmotionBegin,
    Command::VmotionGoahead,
    Command::VmotionNotNow,
    Command::VmotionPeer,
    Command::VmotionPeerOk,
    Command::VmotionComplete,
    Command::VmotionAbort,
    Command::DoProxy,
    Command::WillProxy,
    Command::WontProxy,
    Command::VmVcUuid,
    Command::GetVmVcUuid,
    Command::VmBiosUuid,
    Command::GetVmBiosUuid,
    Command::VmLocationUuid,
    Command::GetVmLocationUuid,
    Command::VmName,
    Command::GetVmName,
];

/// What the connection is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmRole {
    /// An ordinary connection (and the source of a later vMotion): sends DO-PROXY.
    Source {
        /// DO-PROXY direction.
        direction: Direction,
        /// DO-PROXY service URI.
        service_uri: Bytes,
    },
    /// The destination host of a vMotion: sends VMOTION-PEER with the key the source got in
    /// GOAHEAD, and no DO-PROXY.
    Destination {
        /// The sequence the source sent in BEGIN.
        sequence: Bytes,
        /// The secret the proxy sent in GOAHEAD.
        secret: Bytes,
    },
}

/// Configuration of a [`VmSession`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmConfig {
    /// Sent in VM-VC-UUID (ESXi sends the vmx form).
    pub vc_uuid: VmUuid,
    /// Sent in VM-NAME.
    pub name: VmName,
    /// Sent in VM-BIOS-UUID; `None` answers GET-VM-BIOS-UUID with UNKNOWN-SUBOPTION-RCVD-1.
    pub bios_uuid: Option<VmUuid>,
    /// Sent in VM-LOCATION-UUID; `None` answers with UNKNOWN-SUBOPTION-RCVD-1.
    pub location_uuid: Option<VmUuid>,
    /// Source or destination.
    pub role: VmRole,
    /// When to offer `WILL COM-PORT`: a source offers it this long after its handshake
    /// messages (ESXi: tens of milliseconds), a destination in the same write as VMOTION-PEER;
    /// `None` never offers it. Default: 45 ms.
    pub com_port_delay: Option<Duration>,
    /// Cap on one subnegotiation payload (telnet layer). Default: 16 KiB.
    pub max_subnegotiation: usize,
}

impl VmConfig {
    /// A VM as in ESXi's capture (`docs/esxi-wire.md`), with the given identity and role; the
    /// BIOS and location UUIDs default to the VC UUID.
    pub fn new(vc_uuid: Uuid, name: &str, role: VmRole) -> Self {
        VmConfig {
            vc_uuid: VmUuid::from_uuid(vc_uuid),
            name: VmName::from(name),
            bios_uuid: Some(VmUuid::from_uuid(vc_uuid)),
            location_uuid: Some(VmUuid::from_uuid(vc_uuid)),
            role,
            com_port_delay: Some(Duration::from_millis(45)),
            max_subnegotiation: vspc_telnet::DEFAULT_MAX_SUBNEGOTIATION,
        }
    }
}

/// What a [`VmSession`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum VmEvent {
    /// Data from the proxy (client to VM).
    Data(Bytes),
    /// The proxy's KNOWN-SUBOPTIONS-2 list.
    KnownSuboptions(Vec<Command>),
    /// WILL-PROXY (`true`) or WONT-PROXY (`false`).
    ProxyAnswered {
        /// Whether the proxy agreed.
        accepted: bool,
    },
    /// GOAHEAD for our BEGIN: hand `key` to the destination host.
    VmotionGoahead {
        /// `sequence ++ secret`, split known.
        key: VmotionKey,
    },
    /// NOTNOW for our BEGIN: carry on.
    VmotionNotNow {
        /// The sequence.
        sequence: Bytes,
    },
    /// PEER-OK for our PEER: send COMPLETE when the VM runs here.
    PeerAccepted {
        /// The sequence.
        sequence: Bytes,
    },
    /// UNKNOWN-SUBOPTION-RCVD-2(44) for our PEER: the proxy does not know the key.
    PeerRejected,
    /// UNKNOWN-SUBOPTION-RCVD-2 for another command.
    UnknownSuboptionReported(Command),
    /// An RFC 2217 message from the proxy.
    ComPort(ComPortMessage),
    /// A telnet command from the proxy.
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
    /// A protocol violation by the proxy; the session carries on.
    Error(ProtocolError),
}

/// The VM (ESXi) side of one connection to a proxy.
///
/// It behaves as ESXi does in the captures of `docs/esxi-wire.md`: `WILL AUTHENTICATION` first,
/// positive answers to BINARY, SGA, ECHO and 232, KNOWN-SUBOPTIONS-1 in ESXi's order with
/// DO-PROXY (or VMOTION-PEER and `WILL COM-PORT` for a destination) in one write once 232 is in
/// effect, answers to GET-* queries, `WILL COM-PORT` a little later, and BEGIN / PEER /
/// COMPLETE / ABORT on command.
///
/// # Driving order
/// As for [`ProxySession`](crate::ProxySession): [`new`](Self::new) then
/// [`poll_transmit`](Self::poll_transmit); per read [`handle_input`](Self::handle_input), then
/// drain [`poll_event`](Self::poll_event) and `poll_transmit`; arm
/// [`poll_timeout`](Self::poll_timeout) and call [`handle_timeout`](Self::handle_timeout).
///
/// ```
/// use std::time::Instant;
/// use vspc_proto::{Direction, VmConfig, VmRole, VmSession};
///
/// let uuid = "01 23 45 67 89 ab cd ef-fe dc ba 98 00 00 00 00".parse().unwrap();
/// let role = VmRole::Source { direction: Direction::Server, service_uri: "vSPC.py".into() };
/// let mut vm = VmSession::new(Instant::now(), VmConfig::new(uuid, "vm-00000", role));
/// assert_eq!(vm.poll_transmit().as_deref(), Some(&b"\xff\xfb\x25"[..]));
/// ```
#[derive(Debug)]
pub struct VmSession {
    config: VmConfig,
    telnet: Telnet,
    events: VecDeque<VmEvent>,
    handshake_sent: bool,
    com_port_at: Option<Instant>,
    begin: Option<Bytes>,
    last_input: Instant,
}

impl VmSession {
    /// A new connection: `WILL AUTHENTICATION` is queued, as ESXi sends it on connect.
    pub fn new(now: Instant, config: VmConfig) -> Self {
        let policy = Policy::new()
            .accept_both(option::BINARY)
            .accept_both(option::SGA)
            .accept_remote(option::ECHO)
            .accept_local(option::VMWARE_EXT)
            .accept_local(option::COM_PORT);
        let mut telnet = Telnet::new(TelnetConfig {
            policy,
            max_subnegotiation: config.max_subnegotiation,
        });
        telnet.request(Side::Local, option::AUTHENTICATION, true);
        VmSession {
            config,
            telnet,
            events: VecDeque::new(),
            handshake_sent: false,
            com_port_at: None,
            begin: None,
            last_input: now,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &VmConfig {
        &self.config
    }

    /// Feeds bytes read from the proxy; data events share `input`.
    pub fn handle_input(&mut self, now: Instant, input: &Bytes) {
        self.feed(now, input, Some(input));
    }

    /// Feeds bytes read from the proxy from a borrowed buffer.
    pub fn handle_input_slice(&mut self, now: Instant, input: &[u8]) {
        self.feed(now, input, None);
    }

    fn feed(&mut self, now: Instant, input: &[u8], shared: Option<&Bytes>) {
        self.last_input = now;
        let mut rest = input;
        while let Some(event) = self.telnet.next_event(&mut rest) {
            let Some(inbound) = classify(event, shared, true) else {
                continue;
            };
            match inbound {
                Inbound::Data(data) => self.events.push_back(VmEvent::Data(data)),
                Inbound::Command(command) => self.events.push_back(VmEvent::Command(command)),
                Inbound::Message(message) => self.on_message(message),
                Inbound::ComPort(message) => self.events.push_back(VmEvent::ComPort(message)),
                Inbound::Error(error) => self.events.push_back(VmEvent::Error(error)),
                Inbound::OptionChanged(side, option, enabled) => {
                    self.events.push_back(VmEvent::OptionChanged {
                        side,
                        option,
                        enabled,
                    });
                    if side == Side::Local && option == VMWARE_EXT && enabled {
                        self.send_handshake(now);
                    }
                }
            }
        }
    }

    fn send_message(&mut self, message: &Message) {
        let payload = message.to_vec();
        self.telnet.send_subnegotiation(VMWARE_EXT, &payload);
    }

    fn send_handshake(&mut self, now: Instant) {
        if self.handshake_sent {
            return;
        }
        self.handshake_sent = true;
        self.send_message(&Message::KnownSuboptions1(ESXI_KNOWN_SUBOPTIONS.to_vec()));
        match self.config.role.clone() {
            VmRole::Source {
                direction,
                service_uri,
            } => {
                self.send_message(&Message::DoProxy {
                    direction,
                    service_uri,
                });
                self.com_port_at = self
                    .config
                    .com_port_delay
                    .map(|delay| deadline_after(now, delay));
            }
            VmRole::Destination { sequence, secret } => {
                self.send_message(&Message::VmotionPeer(VmotionKey::new(&sequence, &secret)));
                if self.config.com_port_delay.is_some() {
                    self.telnet.request(Side::Local, option::COM_PORT, true);
                }
            }
        }
    }

    fn on_message(&mut self, message: Result<Message, MessageError>) {
        let message = match message {
            Ok(message) => message,
            Err(error) => {
                self.events
                    .push_back(VmEvent::Error(ProtocolError::Message(error)));
                return;
            }
        };
        let event = match message {
            Message::KnownSuboptions2(list) => VmEvent::KnownSuboptions(list),
            Message::UnknownSuboptionRcvd2(Command::VmotionPeer)
                if matches!(self.config.role, VmRole::Destination { .. }) =>
            {
                VmEvent::PeerRejected
            }
            Message::UnknownSuboptionRcvd2(command) => VmEvent::UnknownSuboptionReported(command),
            Message::VmotionGoahead(key) => {
                match self.begin.as_ref().and_then(|s| key.with_sequence(s)) {
                    Some(key) => {
                        self.begin = None;
                        VmEvent::VmotionGoahead { key }
                    }
                    None => VmEvent::Error(ProtocolError::OutOfSequence(Command::VmotionGoahead)),
                }
            }
            Message::VmotionNotNow { sequence } => match self.begin.take() {
                Some(begin) if sequence.starts_with(&begin) => {
                    VmEvent::VmotionNotNow { sequence: begin }
                }
                other => {
                    self.begin = other;
                    VmEvent::Error(ProtocolError::OutOfSequence(Command::VmotionNotNow))
                }
            },
            Message::VmotionPeerOk { sequence } => match &self.config.role {
                VmRole::Destination { sequence: ours, .. } if sequence.starts_with(ours) => {
                    VmEvent::PeerAccepted {
                        sequence: ours.clone(),
                    }
                }
                _ => VmEvent::Error(ProtocolError::OutOfSequence(Command::VmotionPeerOk)),
            },
            Message::WillProxy => VmEvent::ProxyAnswered { accepted: true },
            Message::WontProxy => VmEvent::ProxyAnswered { accepted: false },
            Message::GetVmVcUuid => {
                let uuid = self.config.vc_uuid.clone();
                self.send_message(&Message::VmVcUuid(uuid));
                return;
            }
            Message::GetVmName => {
                let name = self.config.name.clone();
                self.send_message(&Message::VmName(name));
                return;
            }
            Message::GetVmBiosUuid => {
                match self.config.bios_uuid.clone() {
                    Some(uuid) => self.send_message(&Message::VmBiosUuid(uuid)),
                    None => {
                        self.send_message(&Message::UnknownSuboptionRcvd1(Command::GetVmBiosUuid))
                    }
                }
                return;
            }
            Message::GetVmLocationUuid => {
                match self.config.location_uuid.clone() {
                    Some(uuid) => self.send_message(&Message::VmLocationUuid(uuid)),
                    None => self
                        .send_message(&Message::UnknownSuboptionRcvd1(Command::GetVmLocationUuid)),
                }
                return;
            }
            Message::UnknownSuboptionRcvd1(_) => VmEvent::Error(ProtocolError::UnexpectedMessage(
                Command::UnknownSuboptionRcvd1,
            )),
            other => {
                let command = other.command();
                self.send_message(&Message::UnknownSuboptionRcvd1(command));
                VmEvent::Error(ProtocolError::UnexpectedMessage(command))
            }
        };
        self.events.push_back(event);
    }

    /// Offers `WILL COM-PORT` when its delay has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.com_port_at.is_some_and(|at| at <= now) {
            self.com_port_at = None;
            self.telnet.request(Side::Local, option::COM_PORT, true);
        }
    }

    /// The next deadline, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.com_port_at
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<VmEvent> {
        self.events.pop_front()
    }

    /// Everything queued for the proxy since the last call, as one write.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.telnet.poll_transmit()
    }

    /// Serial output of the VM.
    pub fn send_data(&mut self, data: &[u8]) {
        self.telnet.send_data(data);
    }

    /// Sends VMOTION-BEGIN (as the source host).
    pub fn begin_vmotion(&mut self, sequence: &[u8]) {
        self.begin = Some(Bytes::copy_from_slice(sequence));
        self.send_message(&Message::VmotionBegin {
            sequence: Bytes::copy_from_slice(sequence),
        });
    }

    /// Sends VMOTION-ABORT (as the source host, after GOAHEAD).
    pub fn abort_vmotion(&mut self) {
        self.begin = None;
        self.send_message(&Message::VmotionAbort);
    }

    /// Sends VMOTION-COMPLETE (as the destination host); `false` if this is no destination.
    pub fn complete_vmotion(&mut self) -> bool {
        match self.config.role.clone() {
            VmRole::Destination { sequence, .. } => {
                self.send_message(&Message::VmotionComplete { sequence });
                true
            }
            VmRole::Source { .. } => false,
        }
    }

    /// Sends any message (for fault injection).
    pub fn send_raw_message(&mut self, message: &Message) {
        self.send_message(message);
    }

    /// Sends bytes unencoded (for fault injection: garbage, partial commands).
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.telnet.send_raw(bytes);
    }

    /// Sends a telnet command.
    pub fn send_command(&mut self, command: TelnetCommand) {
        self.telnet.send_command(command);
    }

    /// When input last arrived.
    pub fn last_input(&self) -> Instant {
        self.last_input
    }

    /// The telnet endpoint, for inspection of option states.
    pub fn telnet(&self) -> &Telnet {
        &self.telnet
    }
}
