//! The client side of the [`Concentrator`]: selection, attach modes, output budgets,
//! scrollback, and input that waits for its VM (backpressure, never loss).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use vspc_proto::vspc_telnet::comport::Purge;
use vspc_proto::vspc_telnet::{
    encode_data, option, Command, Policy, Side, Telnet, TelnetConfig, TelnetEvent,
};
use vspc_proto::{EndpointSendError, SendError, SessionId};

use crate::access::User;
use crate::concentrator::Concentrator;
use crate::registry::printable;
use crate::selection::{parse_request, parse_selection, Picked, Selection};
use crate::serial::{SerialAction, SerialClient};
use crate::types::{
    AttachError, ClientId, ClientTransmit, DropReason, Event, Mode, Refused, Transport, VmId,
    Wakeup, WriteError,
};
use crate::users::{check_grant, unescape, ClientSetup, Escape};

/// Client input in the order typed: data, and serial breaks between it.
#[derive(Debug)]
pub(crate) enum Input {
    Data(Bytes),
    Break,
    /// The in-band escape's detach: the client leaves.
    Detach,
}

/// What one read of a telnet client held, in order.
#[derive(Debug)]
enum Step {
    Input(Input),
    /// A COM-PORT subnegotiation's payload.
    ComPort(Vec<u8>),
    /// The client's WILL COM-PORT took effect.
    ComPortEnabled,
}

/// One client connection.
#[derive(Debug)]
pub(crate) struct Client {
    pub(crate) peer: SocketAddr,
    /// Telnet clients only: negotiation and decoding.
    pub(crate) telnet: Option<Box<Telnet>>,
    /// An authenticated client's identity and grants (none: unrestricted).
    pub(crate) user: Option<Arc<User>>,
    escape: Escape,
    /// While the client chooses its VM.
    pub(crate) selection: Option<Selection>,
    pub(crate) vm: Option<VmId>,
    pub(crate) mode: Mode,
    /// Skip one LF or NUL: the selection line ended with CR, and its LF may come in the
    /// next segment.
    skip_lf: bool,
    queue: VecDeque<Bytes>,
    pub(crate) queued: usize,
    /// Since when the client has been a whole output budget behind its VM's output (the VM
    /// is not read meanwhile; past the grace the client is dropped).
    behind_since: Option<Instant>,
    /// Input waiting for its VM (bounded by `max_pending_input`).
    input: VecDeque<Input>,
    input_len: usize,
    closing: bool,
    pub(crate) bytes_out: u64,
    pub(crate) bytes_in: u64,
    /// Telnet clients that negotiated COM-PORT (RFC 2217).
    pub(crate) serial: Option<Box<SerialClient>>,
}

impl Client {
    pub(crate) fn is_telnet(&self) -> bool {
        self.telnet.is_some()
    }
}

/// The client side of telnet, negotiated for interactive use: we WILL ECHO and WILL SGA (the
/// client goes character-at-a-time and lets the VM's console echo), and BINARY both ways so
/// bytes, CR and LF included, pass unmangled. A serial tool's WILL COM-PORT is accepted
/// (RFC 2217: the client asks, we are the access server).
fn client_telnet() -> Telnet {
    let policy = Policy::new()
        .accept_both(option::BINARY)
        .accept_both(option::SGA)
        .accept_local(option::ECHO)
        .accept_remote(option::COM_PORT);
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

/// The goodbye a dropped client reads before the connection closes.
fn goodbye(reason: DropReason) -> &'static str {
    match reason {
        DropReason::TooSlow => {
            "\r\n[vspc: output buffer overflow: this client reads too slowly and was disconnected]\r\n"
        }
        DropReason::VmRemoved => "\r\n[vspc: the VM did not come back; closing]\r\n",
        DropReason::Shutdown => "\r\n[vspc: the concentrator is shutting down; goodbye]\r\n",
        DropReason::LineTooLong => "\r\nvspc: selection line too long\r\n",
        DropReason::SelectionTimeout => "\r\nvspc: no VM chosen in time; goodbye\r\n",
        DropReason::Crowded => "\r\nvspc: too many clients are choosing a VM; try again\r\n",
        DropReason::Detached => "\r\n[vspc: detached]\r\n",
    }
}

impl Concentrator {
    /// A new client from `peer`, at `now` (its selection deadline runs from here). With
    /// `target` it is attached at once (a sticky port, an
    /// SSH user who named the VM); otherwise it gets the menu and chooses by typing a line.
    pub fn handle_client_connect(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        transport: Transport,
        target: Option<(VmId, Mode)>,
    ) -> Result<ClientId, Refused> {
        self.connect_client(now, peer, ClientSetup::new(transport), target)
    }

    /// A new client from `peer` set up by `setup`: an authenticated user (its grants
    /// enforced), the in-band escape, and what it asked for at connect time (attached at
    /// once when allowed; otherwise it reads why, then the menu).
    pub fn handle_client_connect_with(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        setup: ClientSetup,
    ) -> Result<ClientId, Refused> {
        self.connect_client(now, peer, setup, None)
    }

    fn connect_client(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        setup: ClientSetup,
        target: Option<(VmId, Mode)>,
    ) -> Result<ClientId, Refused> {
        let transport = setup.transport;
        if self.shutting_down {
            return Err(Refused::ShuttingDown);
        }
        // Dropped clients whose connection is not closed yet hold no slot; a client still
        // choosing gives its slot up to a new one rather than lock it out.
        if self.clients.len() - self.closing_clients >= self.config.max_clients
            && !self.evict_selecting()
        {
            self.counters.client_connections_refused += 1;
            return Err(Refused::Capacity(self.config.max_clients));
        }
        let id = ClientId(self.next_client);
        self.next_client += 1;
        self.counters.client_connections_total += 1;
        let mut telnet = match transport {
            Transport::Telnet => Some(Box::new(client_telnet())),
            Transport::Raw => None,
        };
        let negotiation = telnet.as_mut().and_then(|t| t.poll_transmit());
        self.clients.insert(
            id,
            Client {
                peer,
                telnet,
                user: setup.user,
                escape: if setup.escape {
                    Escape::Idle
                } else {
                    Escape::Off
                },
                selection: Some(Selection::default()),
                vm: None,
                mode: Mode::ReadWrite,
                skip_lf: false,
                queue: VecDeque::new(),
                queued: 0,
                behind_since: None,
                input: VecDeque::new(),
                input_len: 0,
                closing: false,
                bytes_out: 0,
                bytes_in: 0,
                serial: None,
            },
        );
        self.selecting_count += 1;
        self.selecting
            .push_back((now + self.config.select_timeout, id));
        if self.selecting_count > self.config.max_selecting {
            self.evict_selecting();
        }
        if let Some(bytes) = negotiation {
            self.queue_client(id, bytes);
        }
        let result = match (target, setup.request) {
            (Some((vm, mode)), _) => Some(self.attach(id, vm, mode)),
            (None, Some(request)) => Some(self.attach_request(id, parse_request(&request))),
            (None, None) => None,
        };
        let text = match result {
            Some(Ok(())) => return Ok(id),
            Some(Err(error)) => format!("vspc: {error}\r\n{}", self.client_menu(id)),
            None => self.client_menu(id),
        };
        self.queue_client(id, Bytes::from(text));
        Ok(id)
    }

    /// Bytes read from a client. Read only while
    /// [`client_wants_input`](Self::client_wants_input): input that waits for its VM is
    /// kept, in order, and reaches the VM when it has room or comes back.
    pub fn handle_client_input(&mut self, now: Instant, client: ClientId, bytes: &[u8]) {
        let _ = now;
        let Some(c) = self.clients.get_mut(&client) else {
            return;
        };
        if c.closing {
            return;
        }
        let mut steps: Vec<Step> = Vec::new();
        let mut reply = None;
        match &mut c.telnet {
            Some(telnet) => {
                let mut data = BytesMut::new();
                let mut input = bytes;
                while let Some(event) = telnet.next_event(&mut input) {
                    let step = match event {
                        TelnetEvent::Data(d) => {
                            data.extend_from_slice(d);
                            continue;
                        }
                        TelnetEvent::Command(Command::Break) => Step::Input(Input::Break),
                        TelnetEvent::Subnegotiation {
                            option: option::COM_PORT,
                            payload,
                        } => Step::ComPort(payload.to_vec()),
                        TelnetEvent::OptionChanged {
                            side: Side::Remote,
                            option: option::COM_PORT,
                            enabled: true,
                        } => Step::ComPortEnabled,
                        _ => continue,
                    };
                    if !data.is_empty() {
                        steps.push(Step::Input(Input::Data(data.split().freeze())));
                    }
                    steps.push(step);
                }
                if !data.is_empty() {
                    steps.push(Step::Input(Input::Data(data.freeze())));
                }
                reply = telnet.poll_transmit();
            }
            None if c.escape == Escape::Off => {
                steps.push(Step::Input(Input::Data(Bytes::copy_from_slice(bytes))))
            }
            None => {
                let mut items = Vec::new();
                unescape(&mut c.escape, bytes, &mut items);
                steps.extend(items.into_iter().map(Step::Input));
            }
        }
        if let Some(reply) = reply {
            self.queue_client(client, reply);
        }
        for step in steps {
            match step {
                Step::Input(item) => self.typed(client, item),
                Step::ComPort(payload) => {
                    if self.serial_client_request(client, &payload) == SerialAction::Break {
                        self.typed(client, Input::Break);
                    }
                }
                Step::ComPortEnabled => self.serial_client_enabled(client),
            }
        }
        self.flush_input(client);
    }

    /// RFC 2217 PURGE-DATA: the receive buffer is the VM output not yet written to the
    /// client, the transmit buffer the client's input not yet taken by the VM.
    pub(crate) fn purge_client(&mut self, client: ClientId, purge: Purge) {
        let Some(c) = self.clients.get_mut(&client) else {
            return;
        };
        if matches!(purge, Purge::Receive | Purge::Both) {
            c.queue.clear();
            c.queued = 0;
        }
        if matches!(purge, Purge::Transmit | Purge::Both) {
            c.input.clear();
            c.input_len = 0;
            self.wakeups.push_back(Wakeup::Client(client));
        }
    }

    /// One piece of typed input: to the selection line while choosing, else toward the VM.
    fn typed(&mut self, client: ClientId, item: Input) {
        let Some(c) = self.clients.get_mut(&client) else {
            return;
        };
        let mut data = match item {
            Input::Break => {
                // A break typed before a VM is chosen has nowhere to go.
                if c.selection.is_none() {
                    c.skip_lf = false;
                    self.push_input(client, Input::Break);
                }
                return;
            }
            Input::Detach => {
                // What was typed before the escape is delivered as far as the VM takes it.
                self.flush_input(client);
                self.drop_client(client, DropReason::Detached);
                return;
            }
            Input::Data(data) => data,
        };
        while !data.is_empty() {
            let Some(c) = self.clients.get_mut(&client) else {
                return;
            };
            let Some(selection) = c.selection.as_mut() else {
                if std::mem::take(&mut c.skip_lf) && matches!(data.first(), Some(b'\n' | 0)) {
                    data = data.slice(1..);
                }
                if !data.is_empty() {
                    self.push_input(client, Input::Data(data));
                }
                return;
            };
            let mut echo = Vec::new();
            let picked = selection.feed(&data, &mut echo);
            if !echo.is_empty() {
                self.queue_client(client, Bytes::from(echo));
            }
            match picked {
                Picked::More => return,
                Picked::Overflow => {
                    self.drop_client(client, DropReason::LineTooLong);
                    return;
                }
                Picked::Line(line, used) => {
                    data = data.slice(used..);
                    if let Err(error) = self.attach_request(client, parse_selection(&line)) {
                        let text = format!("vspc: {error}\r\n{}", self.client_menu(client));
                        self.queue_client(client, Bytes::from(text));
                    }
                }
            }
        }
    }

    fn push_input(&mut self, client: ClientId, item: Input) {
        let max = self.config.max_pending_input;
        let Some(c) = self.clients.get_mut(&client) else {
            return;
        };
        let len = match &item {
            Input::Data(d) => d.len(),
            Input::Break | Input::Detach => 0,
        };
        if c.input_len + len > max {
            self.counters.client_bytes_discarded += len as u64;
            return;
        }
        c.input_len += len;
        c.input.push_back(item);
    }

    /// Whether the driver should read from `client`: false while its earlier input still
    /// waits for the VM (backpressure reaches the client through its socket), or when the
    /// client is gone or closing. A [`Wakeup::Client`] comes when it turns true again.
    pub fn client_wants_input(&self, client: ClientId) -> bool {
        self.clients
            .get(&client)
            .is_some_and(|c| !c.closing && c.input.is_empty())
    }

    /// Whether the client is being dropped (its goodbye queued): a driver abandons a write
    /// in progress to a client that may have stopped reading.
    pub fn client_is_closing(&self, client: ClientId) -> bool {
        self.clients.get(&client).is_none_or(|c| c.closing)
    }

    /// The client's connection closed.
    pub fn handle_client_closed(&mut self, client: ClientId) {
        if let Some(c) = self.clients.remove(&client) {
            if c.selection.is_some() {
                self.selecting_count -= 1;
            }
            if c.closing {
                self.closing_clients -= 1;
            }
            self.detach(client, c.vm);
        }
    }

    /// Drops the client that has been choosing a VM longest. Whether there was one.
    fn evict_selecting(&mut self) -> bool {
        while let Some((_, client)) = self.selecting.pop_front() {
            if self.drop_if_choosing(client, DropReason::Crowded) {
                return true;
            }
        }
        false
    }

    /// Drops the clients whose selection deadline passed.
    pub(crate) fn expire_selections(&mut self, now: Instant) {
        while let Some(&(at, client)) = self.selecting.front() {
            if at > now {
                break;
            }
            self.selecting.pop_front();
            self.drop_if_choosing(client, DropReason::SelectionTimeout);
        }
    }

    /// Drops `client` if it is still choosing a VM (a queue entry may be stale: attached,
    /// dropped or gone since). Whether it was.
    fn drop_if_choosing(&mut self, client: ClientId, reason: DropReason) -> bool {
        let choosing = self
            .clients
            .get(&client)
            .is_some_and(|c| c.selection.is_some() && !c.closing);
        if choosing {
            self.counters.clients_dropped_selecting += 1;
            self.drop_client(client, reason);
        }
        choosing
    }

    /// The client's output: chunks are appended to `out` (write them with one vectored
    /// write). The budget counts what is queued and not yet taken.
    pub fn poll_client_transmit(
        &mut self,
        client: ClientId,
        out: &mut Vec<Bytes>,
    ) -> ClientTransmit {
        let Some(c) = self.clients.get_mut(&client) else {
            return ClientTransmit::Close;
        };
        // RFC 2217 FLOWCONTROL-SUSPEND: output waits (and counts against the budget).
        if c.serial.as_ref().is_some_and(|s| s.suspended) && !c.closing {
            return ClientTransmit::Idle;
        }
        // Coming back for more means the previous write is done: the client caught up, and
        // its VM may be read again.
        if c.behind_since.take().is_some() {
            let vm = c.vm;
            self.wake_reader(vm);
        }
        let Some(c) = self.clients.get_mut(&client) else {
            return ClientTransmit::Close;
        };
        if c.queue.is_empty() {
            return if c.closing {
                ClientTransmit::Close
            } else {
                ClientTransmit::Idle
            };
        }
        c.queued = 0;
        for chunk in c.queue.drain(..) {
            c.bytes_out += chunk.len() as u64;
            out.push(chunk);
        }
        if c.closing {
            ClientTransmit::Close
        } else {
            ClientTransmit::Write
        }
    }

    /// Open clients.
    pub fn open_clients(&self) -> usize {
        self.clients.len()
    }

    /// The selection menu (what a client sees before choosing).
    pub fn menu(&self) -> String {
        self.registry.menu(self.config.menu_rows, |_| true)
    }

    /// Resolves a selector: an entry number, a UUID (canonical, compact or vmx form), or a
    /// name, each optionally followed by `/label`.
    pub fn resolve(&self, selector: &str) -> Result<VmId, AttachError> {
        self.registry.resolve(selector)
    }

    /// Attaches a client to a VM in `mode` (enforced here, with an authenticated user's
    /// grants), then queues the banner and the scrollback ahead of live output.
    pub fn attach(&mut self, client: ClientId, vm: VmId, mode: Mode) -> Result<(), AttachError> {
        self.attach_as(client, vm, mode, false)
    }

    pub(crate) fn attach_as(
        &mut self,
        client: ClientId,
        vm: VmId,
        mode: Mode,
        kick: bool,
    ) -> Result<(), AttachError> {
        let budget = self.config.output_budget;
        let Some(entry) = self.registry.get(vm) else {
            return Err(AttachError::NoSuchNumber(vm.0));
        };
        let c = match self.clients.get(&client) {
            Some(c) if !c.closing => c,
            _ => return Err(AttachError::ClientGone),
        };
        if let Some(user) = &c.user {
            check_grant(user, entry, mode, kick)?;
        }
        if kick {
            self.kick_writers(client, vm);
        }
        let Some(entry) = self.registry.get(vm) else {
            return Err(AttachError::NoSuchNumber(vm.0));
        };
        let Some(c) = self.clients.get(&client) else {
            return Err(AttachError::ClientGone);
        };
        let previous = c.vm;
        let writers = entry
            .clients
            .iter()
            .filter(|id| **id != client)
            .filter(|id| self.clients.get(id).is_some_and(|r| r.mode.writes()))
            .count();
        if let Some(holder) = entry.exclusive {
            if mode.writes() && holder != client {
                return Err(AttachError::HeldExclusively(printable(&entry.name).into()));
            }
        }
        if mode == Mode::Exclusive && writers > 0 {
            return Err(AttachError::WritersAttached {
                name: printable(&entry.name).into(),
                writers,
            });
        }
        if previous.is_some() {
            self.detach(client, previous);
        }
        let Some(entry) = self.registry.get_mut(vm) else {
            return Err(AttachError::NoSuchNumber(vm.0));
        };
        let Some(c) = self.clients.get_mut(&client) else {
            return Err(AttachError::ClientGone);
        };
        if let Some(selection) = c.selection.take() {
            c.skip_lf = selection.after_cr;
            self.selecting_count -= 1;
        }
        c.vm = Some(vm);
        c.mode = mode;
        entry.clients.push(client);
        if mode == Mode::Exclusive {
            entry.exclusive = Some(client);
        }
        let mut out = BytesMut::new();
        out.extend_from_slice(
            format!(
                "\r\n[vspc: attached to {} ({}){}]\r\n",
                printable(&entry.name),
                mode.short(),
                if entry.flagged.is_some() {
                    ", FLAGGED duplicate identity"
                } else {
                    ""
                }
            )
            .as_bytes(),
        );
        // Replay the newest scrollback that fits the client's budget with the banner: a
        // scrollback larger than the budget must not drop a client that has not read a byte.
        let room = budget.saturating_sub(c.queued + out.len());
        let telnet = c.telnet.is_some();
        let mut skip = entry.scrollback.len();
        let mut cost = 0;
        for &byte in entry.scrollback.iter().rev() {
            cost += if telnet && byte == 0xff { 2 } else { 1 };
            if cost > room {
                break;
            }
            skip -= 1;
        }
        let (a, b) = entry.scrollback.as_slices();
        let (a, b) = match a.get(skip..) {
            Some(a) => (a, b),
            None => (&[][..], b.get(skip - a.len()..).unwrap_or_default()),
        };
        if telnet {
            encode_data(a, true, &mut out);
            encode_data(b, true, &mut out);
        } else {
            out.extend_from_slice(a);
            out.extend_from_slice(b);
        }
        self.events
            .push_back(Event::ClientAttached { client, vm, mode });
        self.queue_client(client, out.freeze());
        // An RFC 2217 client learns its new port's lines.
        self.notify_client(client);
        Ok(())
    }

    fn detach(&mut self, client: ClientId, vm: Option<VmId>) {
        if let Some(entry) = vm.and_then(|vm| self.registry.get_mut(vm)) {
            entry.clients.retain(|c| *c != client);
            if entry.exclusive == Some(client) {
                entry.exclusive = None;
            }
        }
        // It may have been the client its VM waited for.
        self.wake_reader(vm);
    }

    /// Wakes the connection of `vm`, whose reading may have been paused for a client.
    fn wake_reader(&mut self, vm: Option<VmId>) {
        if let Some(conn) = vm
            .and_then(|vm| self.registry.get(vm))
            .and_then(|e| e.active)
        {
            self.wakeups.push_back(Wakeup::Vm(conn));
        }
    }

    /// Whether the driver should read from VM connection `conn`: false while a client of its
    /// VM is a whole output budget behind (flow control, as a serial line has: the client
    /// gets [`ConcentratorConfig::slow_client_grace`] to catch up, then it is dropped and
    /// the VM read again). A [`Wakeup::Vm`] comes when it turns true again.
    ///
    /// [`ConcentratorConfig::slow_client_grace`]: crate::ConcentratorConfig::slow_client_grace
    pub fn vm_wants_input(&self, conn: SessionId) -> bool {
        let Some(entry) = self
            .endpoint
            .data(conn)
            .and_then(|c| c.vm)
            .and_then(|vm| self.registry.get(vm))
        else {
            return true;
        };
        entry.clients.iter().all(|id| {
            self.clients
                .get(id)
                .is_none_or(|c| c.behind_since.is_none())
        })
    }

    /// Drops the clients that stayed a whole budget behind for the grace.
    pub(crate) fn expire_behind(&mut self, now: Instant) {
        let grace = self.config.slow_client_grace;
        while let Some(&(at, client)) = self.behind.front() {
            if at > now {
                break;
            }
            self.behind.pop_front();
            let still = self
                .clients
                .get(&client)
                .is_some_and(|c| !c.closing && c.behind_since.is_some_and(|s| s + grace <= now));
            if still {
                self.counters.clients_dropped_slow += 1;
                self.drop_client(client, DropReason::TooSlow);
            }
        }
    }

    /// Writes to a VM on behalf of the application (not a client): sent at once, held in
    /// order during a vMotion.
    pub fn write_to_vm(&mut self, vm: VmId, data: &[u8]) -> Result<(), WriteError> {
        let entry = self.registry.get(vm).ok_or(WriteError::NoSuchVm(vm))?;
        let conn = entry.active.ok_or(WriteError::NotConnected(vm))?;
        if self.endpoint.pending_transmit_len(conn) > self.config.max_pending_to_vm {
            return Err(WriteError::Full(vm));
        }
        match self.endpoint.send_data(conn, data) {
            Ok(target) => {
                self.count_to_vm(vm, data.len());
                self.wakeups.push_back(Wakeup::Vm(target));
                Ok(())
            }
            Err(EndpointSendError::Session(SendError::HoldFull { .. })) => {
                Err(WriteError::Full(vm))
            }
            Err(_) => Err(WriteError::NotConnected(vm)),
        }
    }

    /// Queues VM output for a client (already framed for its transport). A client with a
    /// whole budget waiting is behind: its VM is not read until it catches up
    /// ([`vm_wants_input`](Self::vm_wants_input)), and if it has not within the grace it is
    /// dropped with a message, so a stuck client delays its VM's other clients by at most
    /// the grace and never loses them a byte. Scheduling alone never drops a client that
    /// reads: only time spent behind counts.
    pub(crate) fn queue_output(&mut self, now: Instant, client: ClientId, bytes: Bytes) {
        let budget = self.config.output_budget;
        let grace = self.config.slow_client_grace;
        self.queue_client(client, bytes);
        let Some(c) = self.clients.get_mut(&client) else {
            return;
        };
        if c.queued > budget && c.behind_since.is_none() && !c.closing {
            c.behind_since = Some(now);
            self.behind.push_back((now + grace, client));
        }
    }

    /// Queues bytes (already framed for the client's transport). Past twice the budget (the
    /// memory bound per client, which only a single VM read larger than the budget can
    /// reach: a client behind stops its VM's reading) the client is dropped with a message.
    pub(crate) fn queue_client(&mut self, client: ClientId, bytes: Bytes) {
        let budget = self.config.output_budget;
        let Some(c) = self.clients.get_mut(&client) else {
            return;
        };
        if c.closing || bytes.is_empty() {
            return;
        }
        if c.queued + bytes.len() > budget.saturating_mul(2) {
            self.counters.clients_dropped_slow += 1;
            self.drop_client(client, DropReason::TooSlow);
            return;
        }
        c.queued += bytes.len();
        c.queue.push_back(bytes);
        self.wakeups.push_back(Wakeup::Client(client));
    }

    /// Detaches a client and queues its goodbye; its transmit then ends in
    /// [`ClientTransmit::Close`].
    pub fn drop_client(&mut self, client: ClientId, reason: DropReason) {
        let Some(c) = self.clients.get_mut(&client) else {
            return;
        };
        if c.closing {
            return;
        }
        c.queue.clear();
        c.queued = 0;
        c.input.clear();
        c.input_len = 0;
        c.queue
            .push_back(Bytes::from_static(goodbye(reason).as_bytes()));
        c.closing = true;
        self.closing_clients += 1;
        if c.selection.take().is_some() {
            self.selecting_count -= 1;
        }
        let vm = c.vm.take();
        self.detach(client, vm);
        self.events
            .push_back(Event::ClientDropped { client, reason });
        self.wakeups.push_back(Wakeup::Client(client));
    }

    /// Retries the waiting input of every client of `vm`.
    pub(crate) fn flush_writers(&mut self, vm: VmId) {
        let Some(entry) = self.registry.get(vm) else {
            return;
        };
        if entry.clients.is_empty() {
            return;
        }
        let waiting: Vec<ClientId> = entry
            .clients
            .iter()
            .copied()
            .filter(|c| self.clients.get(c).is_some_and(|c| !c.input.is_empty()))
            .collect();
        for client in waiting {
            self.flush_input(client);
        }
    }

    fn count_to_vm(&mut self, vm: VmId, len: usize) {
        self.counters.bytes_to_vm += len as u64;
        if let Some(entry) = self.registry.get_mut(vm) {
            entry.bytes_to_vm += len as u64;
        }
    }

    /// Sends the client's waiting input to its VM as far as the VM takes it.
    fn flush_input(&mut self, client: ClientId) {
        let max_pending = self.config.max_pending_to_vm;
        loop {
            let Some(c) = self.clients.get_mut(&client) else {
                return;
            };
            let Some(item) = c.input.front() else {
                return;
            };
            let writable = c.mode.writes() && !c.closing;
            let target =
                c.vm.filter(|_| writable)
                    .and_then(|vm| self.registry.get(vm).map(|e| (vm, e.active)));
            let (vm, conn) = match target {
                // Read-only, detached, or the VM entry is gone: discarded.
                None => {
                    let dropped = c.input_len;
                    c.input.clear();
                    c.input_len = 0;
                    self.counters.client_bytes_discarded += dropped as u64;
                    self.wakeups.push_back(Wakeup::Client(client));
                    return;
                }
                // The VM is away (reconnecting, in transit): the input waits.
                Some((_, None)) => return,
                Some((vm, Some(conn))) => (vm, conn),
            };
            let sent = match item {
                Input::Data(data) => {
                    if self.endpoint.pending_transmit_len(conn) > max_pending {
                        return;
                    }
                    match self.endpoint.send_data(conn, data) {
                        Ok(target) => Some((target, data.len())),
                        Err(EndpointSendError::Session(SendError::HoldFull { .. })) => return,
                        Err(_) => None,
                    }
                }
                Input::Break => {
                    // Held client data (a vMotion under way) goes first: the break waits.
                    if self.endpoint.session(conn).is_some_and(|s| s.is_holding()) {
                        return;
                    }
                    self.endpoint.send_command(conn, Command::Break);
                    self.events.push_back(Event::ClientBreak { client, vm });
                    Some((conn, 0))
                }
                // Handled as typed; never queued.
                Input::Detach => None,
            };
            let Some(c) = self.clients.get_mut(&client) else {
                return;
            };
            let len = match c.input.pop_front() {
                Some(Input::Data(d)) => d.len(),
                _ => 0,
            };
            c.input_len -= len;
            match sent {
                Some((target, len)) => {
                    c.bytes_in += len as u64;
                    self.count_to_vm(vm, len);
                    self.wakeups.push_back(Wakeup::Vm(target));
                }
                None => self.counters.client_bytes_discarded += len as u64,
            }
            if self
                .clients
                .get(&client)
                .is_some_and(|c| c.input.is_empty())
            {
                self.wakeups.push_back(Wakeup::Client(client));
            }
        }
    }

    /// The connection a client's input goes to, for tests and inspection.
    pub fn client_vm(&self, client: ClientId) -> Option<VmId> {
        self.clients.get(&client).and_then(|c| c.vm)
    }

    /// The connection carrying `vm` now, if any.
    pub fn vm_connection(&self, vm: VmId) -> Option<SessionId> {
        self.registry.get(vm).and_then(|e| e.active)
    }
}
