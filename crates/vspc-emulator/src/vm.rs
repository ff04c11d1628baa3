//! An emulated VM: identity, a network serial port with its device life cycle, serial output,
//! a recorder of what clients send, and vMotion across two emulated hosts.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use vspc_backing::KeepIdle;
use vspc_proto::vspc_telnet::encode_subnegotiation;
use vspc_proto::{
    Command, Direction, Message, ProtocolError, Uuid, VmConfig, VmEvent, VmName, VmRole, VmUuid,
    VmotionKey, VMWARE_EXT,
};

use crate::connection::{ConnId, HostConnection};
use crate::error::EmulatorError;
use crate::fault::{Fault, Segmentation};
use crate::pattern::{Generator, OutputConfig, Pattern, Recorder};

/// Who the VM is, as the proxy learns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmIdentity {
    /// VM-VC-UUID (the key proxies index VMs by).
    pub vc_uuid: Uuid,
    /// VM-NAME.
    pub name: String,
    /// VM-BIOS-UUID (`None`: GET-VM-BIOS-UUID is answered UNKNOWN-SUBOPTION-RCVD-1).
    pub bios_uuid: Option<Uuid>,
    /// VM-LOCATION-UUID (`None` as for the BIOS UUID).
    pub location_uuid: Option<Uuid>,
}

impl VmIdentity {
    /// VM number `n` of a fleet: a UUID derived from `n` (distinct for distinct `n`), the name
    /// `vm-<n>` (five digits at least, as in the capture's `vm-00000`), BIOS and location UUIDs
    /// derived likewise.
    pub fn numbered(n: u64) -> Self {
        let uuid = |tag: u8| {
            let mut bytes = [0u8; 16];
            bytes[..8].copy_from_slice(&0x0123_4567_89ab_cdef_u64.to_be_bytes());
            bytes[8] = tag;
            bytes[9] = 0xdc;
            bytes[10..16].copy_from_slice(&n.to_be_bytes()[2..]);
            Uuid::from_bytes(bytes)
        };
        VmIdentity {
            vc_uuid: uuid(0xfe),
            name: format!("vm-{n:05}"),
            bios_uuid: Some(uuid(0xb1)),
            location_uuid: Some(uuid(0x10)),
        }
    }
}

/// The network serial port (a URI backing pointing at a proxy) and its advanced options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialPortConfig {
    /// DO-PROXY service URI (`serviceURI` of the backing), e.g. `vSPC.py`.
    pub service_uri: Bytes,
    /// DO-PROXY direction (`server` is `S`, `client` is `C`).
    pub direction: Direction,
    /// `connectable.startConnected`: connect at power-on. Default: true.
    pub start_connected: bool,
    /// `serialN.keepIdle` (the TCP keepalive of the connection). Default: 300 s;
    /// [`KeepIdle::detection_bound`] is how long a host takes to give a silent peer up.
    pub keep_idle: KeepIdle,
    /// `serialN.vmotionLimit`: how long the source waits for GOAHEAD, and the destination for
    /// PEER-OK. Default: 5000 ms.
    pub vmotion_limit: Duration,
    /// Delay of the source's `WILL COM-PORT` after its handshake (`None`: never offered).
    /// Default: 45 ms, as captured.
    pub com_port_delay: Option<Duration>,
    /// Cap on one subnegotiation from the proxy. Default: 16 KiB.
    pub max_subnegotiation: usize,
}

impl Default for SerialPortConfig {
    fn default() -> Self {
        SerialPortConfig {
            service_uri: Bytes::from_static(b"vSPC.py"),
            direction: Direction::Server,
            start_connected: true,
            keep_idle: KeepIdle::DEFAULT,
            vmotion_limit: Duration::from_millis(5000),
            com_port_delay: Some(Duration::from_millis(45)),
            max_subnegotiation: 16 * 1024,
        }
    }
}

/// Everything an [`EmulatedVm`] is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmulatorConfig {
    /// Identity.
    pub identity: VmIdentity,
    /// The serial port.
    pub port: SerialPortConfig,
    /// Serial output while the VM runs (`None`: only [`EmulatedVm::send_serial`]).
    pub output: Option<OutputConfig>,
    /// The pattern clients send, to verify it exactly (`None`: record without verifying).
    pub client_pattern: Option<Pattern>,
    /// How many of the most recent client bytes to keep. Default: 4096.
    pub max_recorded: usize,
    /// How writes are cut. Default: as ESXi.
    pub segmentation: Segmentation,
    /// How long `DO 232` waits for the proxy's answer to `WILL AUTHENTICATION`. Default: 1 s.
    pub auth_wait: Duration,
    /// Reconnect this long after the proxy closed the connection (`None`: stay disconnected
    /// until reconfigured). Default: `None`.
    pub reconnect_after: Option<Duration>,
}

impl EmulatorConfig {
    /// A VM with `identity`, the default port, no generated output.
    pub fn new(identity: VmIdentity) -> Self {
        EmulatorConfig {
            identity,
            port: SerialPortConfig::default(),
            output: None,
            client_pattern: None,
            max_recorded: 4096,
            segmentation: Segmentation::Esxi,
            auth_wait: Duration::from_secs(1),
            reconnect_after: None,
        }
    }
}

/// Which comes first at the end of a successful vMotion: the source's FIN or the destination's
/// VMOTION-COMPLETE (both happen in captures).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FinOrder {
    /// The source closes, then the destination sends COMPLETE (block C of the captures in
    /// `docs/esxi-wire.md`).
    #[default]
    FinBeforeComplete,
    /// COMPLETE, then the source closes.
    FinAfterComplete,
}

/// A vMotion to perform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmotionPlan {
    /// The sequence the source sends in VMOTION-BEGIN (opaque, 4 bytes on ESXi).
    pub sequence: Bytes,
    /// FIN and COMPLETE order.
    pub fin_order: FinOrder,
    /// The destination presents this secret instead of the one from GOAHEAD (a failure path:
    /// the proxy must refuse it, and the source then aborts).
    pub wrong_secret: Option<Bytes>,
}

impl VmotionPlan {
    /// A plain vMotion with `sequence`, source FIN before COMPLETE.
    pub fn new(sequence: impl Into<Bytes>) -> Self {
        VmotionPlan {
            sequence: sequence.into(),
            fin_order: FinOrder::default(),
            wrong_secret: None,
        }
    }
}

/// How a vMotion ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum VmotionOutcome {
    /// The VM runs behind the destination connection now.
    Completed {
        /// The source connection (closed).
        from: ConnId,
        /// The destination connection.
        to: ConnId,
    },
    /// The proxy answered NOTNOW; the VM carries on at the source.
    Refused,
    /// No GOAHEAD within `vmotionLimit`: cancelled without a word (no ABORT), as ESXi does.
    Cancelled,
    /// The destination was not accepted; the source sent VMOTION-ABORT and carries on.
    Aborted {
        /// Why.
        reason: AbortReason,
    },
    /// The source connection was lost while the vMotion was under way.
    SourceLost,
}

/// Why the source aborted a vMotion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AbortReason {
    /// The proxy answered UNKNOWN-SUBOPTION-RCVD-2(44) to VMOTION-PEER.
    PeerRejected,
    /// No PEER-OK within `vmotionLimit`.
    PeerTimeout,
    /// The destination's connection closed (or never opened).
    DestinationLost,
}

/// What the emulator tells its driver to do with the network. Process in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transmit {
    /// Open a connection to the proxy for `conn` (TCP, then TLS for `telnets`); report
    /// failure with [`EmulatedVm::handle_closed`]. Writes for `conn` follow: send them once
    /// connected, in order.
    Open {
        /// The new connection.
        conn: ConnId,
    },
    /// One write on `conn` (one `write` call: segment boundaries are part of the emulation).
    Write {
        /// The connection.
        conn: ConnId,
        /// The bytes.
        bytes: Bytes,
    },
    /// Close `conn` (FIN), after its earlier writes.
    Close {
        /// The connection.
        conn: ConnId,
    },
}

/// What happened, for the application (drain with [`EmulatedVm::poll_event`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EmulatorEvent {
    /// The proxy answered DO-PROXY.
    ProxyAnswered {
        /// The connection.
        conn: ConnId,
        /// WILL-PROXY (`true`) or WONT-PROXY.
        accepted: bool,
    },
    /// Client data arrived (also recorded, see [`EmulatedVm::recorder`]).
    ClientData {
        /// The connection.
        conn: ConnId,
        /// The bytes.
        bytes: Bytes,
    },
    /// The proxy sent a serial break (`IAC BRK`), which the host passes to the guest's UART.
    SerialBreak {
        /// The connection.
        conn: ConnId,
    },
    /// A vMotion ended.
    Vmotion(VmotionOutcome),
    /// The proxy closed `conn` (or it failed).
    Disconnected {
        /// The connection.
        conn: ConnId,
    },
    /// The proxy reported one of our commands unknown.
    UnknownSuboptionReported {
        /// The connection.
        conn: ConnId,
        /// The command.
        command: Command,
    },
    /// A protocol violation by the proxy (the connection carries on).
    ProtocolError {
        /// The connection.
        conn: ConnId,
        /// What.
        error: ProtocolError,
    },
}

/// Counters of one VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Connections opened.
    pub connections: u64,
    /// Writes handed to the driver.
    pub writes: u64,
    /// Bytes handed to the driver (wire bytes).
    pub bytes_written: u64,
    /// Serial output bytes sent (before telnet escaping).
    pub serial_sent: u64,
    /// Times the proxy answered WILL-PROXY.
    pub proxy_accepted: u64,
    /// vMotions completed.
    pub vmotions_completed: u64,
    /// vMotions that ended otherwise.
    pub vmotions_failed: u64,
    /// Protocol errors reported by the sessions.
    pub protocol_errors: u64,
}

#[derive(Debug)]
enum Motion {
    Idle,
    AwaitGoahead {
        plan: VmotionPlan,
        deadline: Instant,
    },
    AwaitPeer {
        plan: VmotionPlan,
        deadline: Instant,
    },
}

/// A VM with a network serial port backed by a proxy URI, as ESXi runs it: sans-IO.
///
/// # Driving order
/// 1. Commands: [`power_on`](Self::power_on), [`set_connected`](Self::set_connected),
///    [`start_vmotion`](Self::start_vmotion), [`send_serial`](Self::send_serial),
///    [`inject`](Self::inject), ...
/// 2. Network input: [`handle_input`](Self::handle_input) for each read,
///    [`handle_closed`](Self::handle_closed) on EOF, error or a failed connect.
/// 3. Time: [`handle_timeout`](Self::handle_timeout) when [`poll_timeout`](Self::poll_timeout)
///    has passed (early or late calls are harmless).
/// 4. After any of the above, drain [`poll_transmit`](Self::poll_transmit) (open, write,
///    close: in order) and [`poll_event`](Self::poll_event) until `None`.
///
/// Time is an argument; nothing reads a clock. No method panics.
#[derive(Debug)]
pub struct EmulatedVm {
    config: EmulatorConfig,
    powered: bool,
    /// The device's `connected` flag.
    connected: bool,
    /// The connection carrying the VM.
    current: Option<HostConnection>,
    /// The destination host's connection during a vMotion.
    destination: Option<HostConnection>,
    motion: Motion,
    next_conn: u64,
    generator: Option<Generator>,
    recorder: Recorder,
    transmits: VecDeque<Transmit>,
    events: VecDeque<EmulatorEvent>,
    reconnect_at: Option<Instant>,
    stats: Stats,
}

impl EmulatedVm {
    /// A powered-off VM.
    pub fn new(config: EmulatorConfig) -> Self {
        let generator = config.output.clone().map(Generator::new);
        let recorder = Recorder::new(config.max_recorded, config.client_pattern.clone());
        EmulatedVm {
            config,
            powered: false,
            connected: false,
            current: None,
            destination: None,
            motion: Motion::Idle,
            next_conn: 1,
            generator,
            recorder,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            reconnect_at: None,
            stats: Stats::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &EmulatorConfig {
        &self.config
    }

    /// Whether the VM is powered on.
    pub fn is_powered_on(&self) -> bool {
        self.powered
    }

    /// The device's `connected` flag.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// The connection currently carrying the VM.
    pub fn current_conn(&self) -> Option<ConnId> {
        self.current.as_ref().map(|c| c.id)
    }

    /// The destination connection of a vMotion under way.
    pub fn destination_conn(&self) -> Option<ConnId> {
        self.destination.as_ref().map(|c| c.id)
    }

    /// Whether a vMotion is under way.
    pub fn is_migrating(&self) -> bool {
        !matches!(self.motion, Motion::Idle)
    }

    /// What clients sent.
    pub fn recorder(&self) -> &Recorder {
        &self.recorder
    }

    /// Serial output bytes generated or sent so far (the stream's length).
    pub fn serial_sent(&self) -> u64 {
        self.stats.serial_sent
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Bytes queued in the connections and not yet polled (for backpressure and bounds).
    pub fn pending_transmit_len(&self) -> usize {
        let queued: usize = self
            .transmits
            .iter()
            .map(|t| match t {
                Transmit::Write { bytes, .. } => bytes.len(),
                _ => 0,
            })
            .sum();
        queued
            + self
                .current
                .as_ref()
                .map_or(0, HostConnection::pending_write_len)
            + self
                .destination
                .as_ref()
                .map_or(0, HostConnection::pending_write_len)
    }

    // ----- device life cycle -----

    /// Powers the VM on: `connected` becomes `startConnected`, and if set the port connects.
    pub fn power_on(&mut self, now: Instant) {
        if self.powered {
            return;
        }
        self.powered = true;
        self.connected = self.config.port.start_connected;
        if self.connected {
            self.open_source(now);
        }
    }

    /// Powers the VM off: every connection closes, output stops.
    pub fn power_off(&mut self) {
        self.powered = false;
        self.connected = false;
        self.reconnect_at = None;
        self.drop_destination();
        self.motion = Motion::Idle;
        self.close_current();
        self.pause_output();
    }

    /// `ReconfigVM_Task` with `connected`: `true` closes any existing connection and opens a
    /// new one (same identity, no vMotion); `false` closes it.
    pub fn set_connected(&mut self, now: Instant, connected: bool) -> Result<(), EmulatorError> {
        if !self.powered {
            return Err(EmulatorError::PoweredOff);
        }
        self.connected = connected;
        self.reconnect_at = None;
        if self.is_migrating() {
            self.drop_destination();
            self.motion = Motion::Idle;
        }
        self.close_current();
        self.pause_output();
        if connected {
            self.open_source(now);
        }
        Ok(())
    }

    fn open_source(&mut self, now: Instant) {
        let role = VmRole::Source {
            direction: self.config.port.direction,
            service_uri: self.config.port.service_uri.clone(),
        };
        let conn = self.open(now, role);
        self.current = Some(conn);
        self.flush();
    }

    fn open(&mut self, now: Instant, role: VmRole) -> HostConnection {
        let id = ConnId(self.next_conn);
        self.next_conn += 1;
        self.stats.connections += 1;
        self.transmits.push_back(Transmit::Open { conn: id });
        let identity = &self.config.identity;
        let config = VmConfig {
            vc_uuid: VmUuid::from_uuid(identity.vc_uuid),
            name: VmName::from(identity.name.as_str()),
            bios_uuid: identity.bios_uuid.map(VmUuid::from_uuid),
            location_uuid: identity.location_uuid.map(VmUuid::from_uuid),
            role,
            com_port_delay: self.config.port.com_port_delay,
            max_subnegotiation: self.config.port.max_subnegotiation,
        };
        HostConnection::new(
            now,
            id,
            config,
            self.config.segmentation,
            self.config.auth_wait,
        )
    }

    fn close_current(&mut self) {
        if let Some(mut conn) = self.current.take() {
            self.drain_conn(&mut conn);
            self.transmits.push_back(Transmit::Close { conn: conn.id });
        }
    }

    fn drop_destination(&mut self) {
        if let Some(mut conn) = self.destination.take() {
            self.drain_conn(&mut conn);
            self.transmits.push_back(Transmit::Close { conn: conn.id });
        }
    }

    fn pause_output(&mut self) {
        if let Some(generator) = &mut self.generator {
            generator.stop();
        }
    }

    fn resume_output(&mut self, now: Instant) {
        if self.powered && self.current.is_some() {
            if let Some(generator) = &mut self.generator {
                generator.start(now);
            }
        }
    }

    // ----- serial data -----

    /// Writes serial output now, on the current connection.
    pub fn send_serial(&mut self, data: &[u8]) -> Result<(), EmulatorError> {
        if !self.powered {
            return Err(EmulatorError::PoweredOff);
        }
        let conn = self.current.as_mut().ok_or(EmulatorError::NotConnected)?;
        conn.session_mut().send_data(data);
        conn.take_output_as_write();
        self.stats.serial_sent += data.len() as u64;
        self.flush();
        Ok(())
    }

    // ----- vMotion -----

    /// Starts a vMotion of the VM to another (emulated) host: VMOTION-BEGIN on the current
    /// connection; serial output pauses (the VM is quiesced) until the vMotion ends.
    pub fn start_vmotion(&mut self, now: Instant, plan: VmotionPlan) -> Result<(), EmulatorError> {
        if !self.powered {
            return Err(EmulatorError::PoweredOff);
        }
        if self.is_migrating() {
            return Err(EmulatorError::VmotionInProgress);
        }
        if plan.sequence.is_empty() {
            return Err(EmulatorError::EmptySequence);
        }
        let conn = self.current.as_mut().ok_or(EmulatorError::NotConnected)?;
        conn.session_mut().begin_vmotion(&plan.sequence);
        conn.take_output_as_write();
        self.pause_output();
        self.motion = Motion::AwaitGoahead {
            plan,
            deadline: now + self.config.port.vmotion_limit,
        };
        self.flush();
        Ok(())
    }

    fn on_goahead(&mut self, now: Instant, key: VmotionKey) {
        let Motion::AwaitGoahead { plan, .. } = std::mem::replace(&mut self.motion, Motion::Idle)
        else {
            return; // late GOAHEAD after a silent cancel: ESXi has moved on
        };
        let sequence = Bytes::copy_from_slice(key.sequence().unwrap_or(&plan.sequence));
        let secret = match &plan.wrong_secret {
            Some(wrong) => wrong.clone(),
            None => Bytes::copy_from_slice(key.secret().unwrap_or_default()),
        };
        let dest = self.open(now, VmRole::Destination { sequence, secret });
        self.destination = Some(dest);
        self.motion = Motion::AwaitPeer {
            plan,
            deadline: now + self.config.port.vmotion_limit,
        };
    }

    fn on_peer_accepted(&mut self, now: Instant) {
        let Motion::AwaitPeer { plan, .. } = std::mem::replace(&mut self.motion, Motion::Idle)
        else {
            return;
        };
        let Some(mut dest) = self.destination.take() else {
            return;
        };
        let from = self.current.as_ref().map(|c| c.id);
        match plan.fin_order {
            FinOrder::FinBeforeComplete => {
                self.close_current();
                self.drain_conn(&mut dest);
                dest.session_mut().complete_vmotion();
                dest.take_output_as_write();
            }
            FinOrder::FinAfterComplete => {
                dest.session_mut().complete_vmotion();
                dest.take_output_as_write();
                self.drain_conn(&mut dest);
                self.close_current();
            }
        }
        let to = dest.id;
        self.current = Some(dest);
        self.stats.vmotions_completed += 1;
        self.events
            .push_back(EmulatorEvent::Vmotion(VmotionOutcome::Completed {
                from: from.unwrap_or(to),
                to,
            }));
        self.resume_output(now);
    }

    fn abort_vmotion(&mut self, now: Instant, reason: AbortReason) {
        if !matches!(self.motion, Motion::AwaitPeer { .. }) {
            return;
        }
        self.motion = Motion::Idle;
        self.drop_destination();
        if let Some(source) = &mut self.current {
            source.session_mut().abort_vmotion();
            source.take_output_as_write();
        }
        self.finish_failed(now, VmotionOutcome::Aborted { reason });
    }

    fn finish_failed(&mut self, now: Instant, outcome: VmotionOutcome) {
        self.stats.vmotions_failed += 1;
        self.events.push_back(EmulatorEvent::Vmotion(outcome));
        self.resume_output(now);
    }

    // ----- faults -----

    /// Injects `fault` on the current connection.
    pub fn inject(&mut self, fault: Fault) -> Result<(), EmulatorError> {
        let conn = self.current.as_mut().ok_or(EmulatorError::NotConnected)?;
        match fault {
            Fault::Garbage(bytes) => conn.write_raw(bytes),
            Fault::TelnetNoise => {
                let mut noise = vec![255, 241, 255, 251, 99, 255, 253, 98];
                encode_subnegotiation(97, b"noise\xff", &mut noise);
                conn.write_raw(Bytes::from(noise));
            }
            Fault::UnknownSuboption { code, payload } => {
                let mut message = vec![code];
                message.extend_from_slice(&payload);
                let mut wire = Vec::new();
                encode_subnegotiation(VMWARE_EXT, &message, &mut wire);
                conn.write_raw(Bytes::from(wire));
            }
            Fault::OversizedSubnegotiation { len } => {
                let mut payload = vec![Command::VmName.code()];
                payload.resize(len.saturating_add(1), b'x');
                let mut wire = Vec::new();
                encode_subnegotiation(VMWARE_EXT, &payload, &mut wire);
                conn.write_raw(Bytes::from(wire));
            }
            Fault::AbruptClose => {
                let name = VmName::from(self.config.identity.name.as_str());
                let wire = Message::VmName(name).to_wire();
                conn.write_raw(Bytes::from(wire).slice(..wire_half(&self.config)));
                self.reconnect_at = None;
                self.pause_output();
                if self.is_migrating() {
                    self.drop_destination();
                    self.motion = Motion::Idle;
                    self.finish_failed_without_resume(VmotionOutcome::SourceLost);
                }
                self.close_current();
            }
            Fault::Silence => {
                conn.silent = true;
                self.pause_output();
            }
        }
        self.flush();
        Ok(())
    }

    fn finish_failed_without_resume(&mut self, outcome: VmotionOutcome) {
        self.stats.vmotions_failed += 1;
        self.events.push_back(EmulatorEvent::Vmotion(outcome));
    }

    /// Changes how writes are cut, on every connection from now on.
    pub fn set_segmentation(&mut self, segmentation: Segmentation) {
        self.config.segmentation = segmentation;
        for conn in [&mut self.current, &mut self.destination]
            .into_iter()
            .flatten()
        {
            conn.set_segmentation(segmentation);
        }
    }

    /// The whole host dies: no more reads, writes, FIN or timers on any connection, as a host
    /// that lost power (the proxy can only notice by its own keepalive).
    pub fn kill_host(&mut self) {
        for conn in [&mut self.current, &mut self.destination]
            .into_iter()
            .flatten()
        {
            conn.silent = true;
        }
        self.pause_output();
        self.motion = Motion::Idle;
        self.reconnect_at = None;
    }

    // ----- network input -----

    /// One read from the proxy on `conn`.
    pub fn handle_input(&mut self, now: Instant, conn: ConnId, bytes: &[u8]) {
        if let Some(c) = self.conn_mut(conn) {
            c.handle_input(now, bytes);
        }
        self.process(now, conn);
        self.flush();
    }

    /// `conn` reached EOF, failed, or could not be opened.
    pub fn handle_closed(&mut self, now: Instant, conn: ConnId) {
        if self.current.as_ref().is_some_and(|c| c.id == conn) {
            self.current = None;
            self.pause_output();
            self.events.push_back(EmulatorEvent::Disconnected { conn });
            if self.is_migrating() {
                self.drop_destination();
                self.motion = Motion::Idle;
                self.finish_failed_without_resume(VmotionOutcome::SourceLost);
            }
            if self.powered && self.connected {
                self.reconnect_at = self.config.reconnect_after.map(|after| now + after);
            }
        } else if self.destination.as_ref().is_some_and(|c| c.id == conn) {
            self.destination = None;
            self.events.push_back(EmulatorEvent::Disconnected { conn });
            self.abort_vmotion(now, AbortReason::DestinationLost);
        }
        self.flush();
    }

    /// Fires what is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut ids = Vec::with_capacity(2);
        for conn in [&mut self.current, &mut self.destination]
            .into_iter()
            .flatten()
        {
            conn.handle_timeout(now);
            ids.push(conn.id);
        }
        for id in ids {
            self.process(now, id);
        }
        match &self.motion {
            Motion::AwaitGoahead { deadline, .. } if *deadline <= now => {
                self.motion = Motion::Idle;
                self.finish_failed(now, VmotionOutcome::Cancelled);
            }
            Motion::AwaitPeer { deadline, .. } if *deadline <= now => {
                self.abort_vmotion(now, AbortReason::PeerTimeout);
            }
            _ => {}
        }
        if self.reconnect_at.is_some_and(|at| at <= now) {
            self.reconnect_at = None;
            if self.powered && self.connected && self.current.is_none() {
                self.open_source(now);
            }
        }
        if let (Some(generator), Some(conn)) = (&mut self.generator, &mut self.current) {
            // Only while a connection carries the VM: the stream's offsets must match what
            // was sent.
            if let Some(chunk) = generator.poll(now) {
                conn.session_mut().send_data(&chunk);
                conn.take_output_as_write();
                self.stats.serial_sent += chunk.len() as u64;
            }
        }
        self.flush();
    }

    /// The earliest deadline, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let motion = match &self.motion {
            Motion::Idle => None,
            Motion::AwaitGoahead { deadline, .. } | Motion::AwaitPeer { deadline, .. } => {
                Some(*deadline)
            }
        };
        [
            self.current.as_ref().and_then(HostConnection::poll_timeout),
            self.destination
                .as_ref()
                .and_then(HostConnection::poll_timeout),
            motion,
            self.reconnect_at,
            self.generator.as_ref().and_then(Generator::poll_timeout),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The next network action.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        let transmit = self.transmits.pop_front()?;
        if let Transmit::Write { bytes, .. } = &transmit {
            self.stats.writes += 1;
            self.stats.bytes_written += bytes.len() as u64;
        }
        Some(transmit)
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<EmulatorEvent> {
        self.events.pop_front()
    }

    fn conn_mut(&mut self, id: ConnId) -> Option<&mut HostConnection> {
        [&mut self.current, &mut self.destination]
            .into_iter()
            .flatten()
            .find(|c| c.id == id)
    }

    /// Acts on the session events of `id`.
    fn process(&mut self, now: Instant, id: ConnId) {
        while let Some(event) = self.conn_mut(id).and_then(HostConnection::poll_event) {
            let is_current = self.current.as_ref().is_some_and(|c| c.id == id);
            match event {
                VmEvent::Data(bytes) => {
                    self.recorder.record(&bytes);
                    self.events
                        .push_back(EmulatorEvent::ClientData { conn: id, bytes });
                }
                VmEvent::ProxyAnswered { accepted } => {
                    if accepted {
                        self.stats.proxy_accepted += 1;
                    }
                    self.events
                        .push_back(EmulatorEvent::ProxyAnswered { conn: id, accepted });
                    if is_current && !self.is_migrating() {
                        self.resume_output(now);
                    }
                }
                VmEvent::VmotionGoahead { key } if is_current => self.on_goahead(now, key),
                VmEvent::VmotionNotNow { .. } if is_current => {
                    if matches!(self.motion, Motion::AwaitGoahead { .. }) {
                        self.motion = Motion::Idle;
                        self.finish_failed(now, VmotionOutcome::Refused);
                    }
                }
                VmEvent::PeerAccepted { .. } if !is_current => self.on_peer_accepted(now),
                VmEvent::PeerRejected if !is_current => {
                    self.abort_vmotion(now, AbortReason::PeerRejected)
                }
                VmEvent::Command(vspc_proto::vspc_telnet::Command::Break) => {
                    self.events
                        .push_back(EmulatorEvent::SerialBreak { conn: id });
                }
                VmEvent::UnknownSuboptionReported(command) => {
                    self.events
                        .push_back(EmulatorEvent::UnknownSuboptionReported { conn: id, command });
                }
                VmEvent::Error(error) => {
                    self.stats.protocol_errors += 1;
                    self.events
                        .push_back(EmulatorEvent::ProtocolError { conn: id, error });
                }
                _ => {}
            }
        }
    }

    fn drain_conn(&mut self, conn: &mut HostConnection) {
        let id = conn.id;
        let transmits = &mut self.transmits;
        conn.drain_writes(|bytes| transmits.push_back(Transmit::Write { conn: id, bytes }));
    }

    /// Moves the connections' writes to the transmit queue.
    fn flush(&mut self) {
        for slot in [0, 1] {
            let taken = if slot == 0 {
                self.current.take()
            } else {
                self.destination.take()
            };
            if let Some(mut conn) = taken {
                self.drain_conn(&mut conn);
                if slot == 0 {
                    self.current = Some(conn);
                } else {
                    self.destination = Some(conn);
                }
            }
        }
    }
}

fn wire_half(config: &EmulatorConfig) -> usize {
    // IAC SB 232 82 + name: half of it is always inside the message.
    (4 + config.identity.name.len()) / 2 + 1
}
