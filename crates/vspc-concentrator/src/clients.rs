//! The client side of the [`Concentrator`]: connecting, decoding input (telnet, the in-band
//! escape, RFC 2217), the selection line, and the selection deadlines. Attaching is
//! `attach.rs`, output budgets and input delivery `flow.rs`, a VM held by another instance
//! `remote.rs`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use vspc_proto::vspc_telnet::comport::Purge;
use vspc_proto::vspc_telnet::{option, Command, Policy, Side, Telnet, TelnetConfig, TelnetEvent};

use crate::access::User;
use crate::concentrator::Concentrator;
use crate::remote::RemoteVm;
use crate::selection::{parse_request, parse_selection, Picked, Request, Selection};
use crate::serial::{SerialAction, SerialClient};
use crate::types::{AttachError, ClientId, DropReason, Mode, Refused, Transport, VmId, Wakeup};
use crate::users::{unescape, ClientSetup, Escape};

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
    pub(crate) escape: Escape,
    /// While the client chooses its VM.
    pub(crate) selection: Option<Selection>,
    pub(crate) vm: Option<VmId>,
    pub(crate) mode: Mode,
    /// Skip one LF or NUL: the selection line ended with CR, and its LF may come in the
    /// next segment.
    pub(crate) skip_lf: bool,
    pub(crate) queue: VecDeque<Bytes>,
    pub(crate) queued: usize,
    /// Since when the client has been a whole output budget behind its VM's output (the VM
    /// is not read meanwhile; past the grace the client is dropped).
    pub(crate) behind_since: Option<Instant>,
    /// Input waiting for its VM (bounded by `max_pending_input`).
    pub(crate) input: VecDeque<Input>,
    pub(crate) input_len: usize,
    pub(crate) closing: bool,
    pub(crate) bytes_out: u64,
    pub(crate) bytes_in: u64,
    /// A selection that matched nothing here, while the site's directory is asked.
    pub(crate) elsewhere: Option<Box<Request>>,
    /// The VM it is attached to on another instance (`remote.rs`).
    pub(crate) remote: Option<Box<RemoteVm>>,
    /// When its current selection times out (a client back from a remote VM chooses
    /// again, and an earlier deadline still queued must not cut that short).
    pub(crate) select_by: Instant,
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
                elsewhere: None,
                remote: None,
                select_by: now + self.config.select_timeout,
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
    pub(crate) fn typed(&mut self, client: ClientId, item: Input) {
        let Some(c) = self.clients.get_mut(&client) else {
            return;
        };
        // While the site's directory is asked, input waits (and is read again as selection
        // input if no instance has the VM).
        if c.elsewhere.is_some() && !matches!(item, Input::Detach) {
            self.push_input(client, item);
            return;
        }
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
                        self.refuse_selection(client, &error);
                    }
                    let waits = self
                        .clients
                        .get(&client)
                        .is_some_and(|c| c.elsewhere.is_some());
                    if waits && !data.is_empty() {
                        self.push_input(client, Input::Data(data));
                        return;
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
            .is_some_and(|c| !c.closing && c.input.is_empty() && c.elsewhere.is_none())
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
            // A client that chose again since (back from a remote VM) has a later deadline.
            if self
                .clients
                .get(&client)
                .is_some_and(|c| c.select_by <= now)
            {
                self.drop_if_choosing(client, DropReason::SelectionTimeout);
            }
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

    /// Open clients.
    pub fn open_clients(&self) -> usize {
        self.clients.len()
    }

    /// The selection menu (what a client sees before choosing).
    pub fn menu(&self) -> String {
        self.registry.menu(self.config.menu_rows, |_| true)
    }

    /// The entry of the VM port with VC UUID `uuid` (as [`VmSnapshot::vc_uuid`] shows it)
    /// and service URI `service_uri`, if one is here (flagged duplicates are not found).
    ///
    /// [`VmSnapshot::vc_uuid`]: crate::VmSnapshot::vc_uuid
    pub fn find_port(&self, uuid: &str, service_uri: &str) -> Option<VmId> {
        self.registry
            .find(&crate::registry::VmKey::new(uuid, service_uri))
    }

    /// Resolves a selector: an entry number, a UUID (canonical, compact or vmx form), or a
    /// name, each optionally followed by `/label`.
    pub fn resolve(&self, selector: &str) -> Result<VmId, AttachError> {
        self.registry.resolve(selector)
    }
}
