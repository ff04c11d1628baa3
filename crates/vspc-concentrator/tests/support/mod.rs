//! An in-memory harness for the concentrator core, on a simulated clock (in the manner of
//! quinn's test `Pair`): one [`Concentrator`], emulated ESXi VMs ([`EmulatedVm`], which can
//! be the source and the destination host of a vMotion over several connections), raw VM
//! connections driven byte by byte, and clients (raw or telnet) whose output is collected
//! and decoded.
//!
//! The harness is a strict driver: it writes a VM connection or a client only when the core
//! woke it ([`Wakeup`]), feeds a client's input only while
//! [`Concentrator::client_wants_input`] (what it could not feed waits in the harness and is
//! retried on the client's next wakeup), and once quiet it checks that nothing was left
//! stranded without a wakeup. Every event is kept for assertions; with
//! [`ConcentratorConfig::console_events`] the output of each VM entry is kept too, and each
//! client's attach point in it.
//!
//! The network between the VMs and the core is the harness's: writes are delivered at once,
//! in order, cut into reads of `read_chunk` bytes; a connection's writes (and FIN) can be held
//! and delivered step by step (`hold`, `step`, `release`), a VM's new connections held
//! unconnected (`partition`, e.g. a vMotion destination that cannot reach the concentrator
//! yet), a connection cut (`cut`), and a VM can stop reading (`stall`).
//!
//! Shared by the integration tests and (through `#[path]`) the `concentrator` fuzz target.
#![allow(dead_code, unreachable_pub, clippy::new_without_default)]

pub mod scenario;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use vspc_concentrator::vspc_proto::vspc_telnet::{
    encode_data, option, Command, Policy, Side, Telnet, TelnetConfig, TelnetEvent,
};
use vspc_concentrator::vspc_proto::{SecretError, SessionId};
use vspc_concentrator::{
    ClientId, ClientSetup, ClientTransmit, Concentrator, ConcentratorConfig, DropReason, Event,
    Mode, Refused, Transport, VmId, VmTransmit, Wakeup,
};
use vspc_emulator::{
    ConnId, EmulatedVm, EmulatorConfig, EmulatorEvent, Transmit, VmIdentity, VmotionPlan,
};

/// A deterministic secret source (an LCG), so runs are reproducible.
pub fn secrets(seed: u64) -> impl FnMut(&mut [u8]) -> Result<(), SecretError> + Send {
    let mut state = seed;
    move |out: &mut [u8]| {
        for byte in out.iter_mut() {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            *byte = (state >> 33) as u8;
        }
        Ok(())
    }
}

/// The start of simulated time (any instant will do: the harness is the driver).
pub fn epoch() -> Instant {
    #[allow(clippy::disallowed_methods)]
    Instant::now()
}

/// What one emulated VM received from the concentrator, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmInput {
    /// Client data (consecutive reads merged).
    Data(Vec<u8>),
    /// A serial break.
    Break,
}

/// A VM connection as the harness's network carries it.
#[derive(Debug, Default)]
struct Link {
    /// The core's session, once connected.
    session: Option<SessionId>,
    /// The core refused the connection.
    refused: bool,
    /// While held: the VM's writes and close, not delivered yet.
    held: Option<VecDeque<Held>>,
    /// Delivered to the core's socket but not read: the core did not want the VM's input
    /// (a client of it fell a budget behind). Fed on the connection's next wakeup.
    unread: VecDeque<Held>,
}

#[derive(Debug)]
enum Held {
    Write(Bytes),
    Close,
}

/// One emulated VM and what it saw.
#[derive(Debug)]
pub struct HarnessVm {
    /// The emulator (issue commands through the harness, or directly then [`Harness::run`]).
    pub emu: EmulatedVm,
    links: BTreeMap<ConnId, Link>,
    /// Client data received, all connections together.
    pub received: Vec<u8>,
    /// Client data and serial breaks, in order.
    pub inputs: Vec<VmInput>,
    /// The emulator's events.
    pub events: Vec<EmulatorEvent>,
    /// Serial output it sent (through [`Harness::vm_send`]).
    pub sent: Vec<u8>,
    /// New connections are held (not even connected) until the partition heals.
    pub partitioned: bool,
    /// The VM does not read what the concentrator writes (a slow VM).
    pub stalled: bool,
}

impl HarnessVm {
    /// Whether the harness's network still carries `conn` (open, or held).
    pub fn has_link(&self, conn: ConnId) -> bool {
        self.links.contains_key(&conn)
    }

    /// Serial breaks received.
    pub fn breaks(&self) -> usize {
        self.inputs
            .iter()
            .filter(|i| matches!(i, VmInput::Break))
            .count()
    }
}

/// A VM connection driven with raw bytes (no emulator behind it).
#[derive(Debug, Default)]
pub struct RawConn {
    /// What the core wrote to it (the first 64 KiB).
    pub received: Vec<u8>,
    /// Closed (by either side).
    pub closed: bool,
}

#[derive(Debug, Clone, Copy)]
enum Owner {
    Vm(usize, ConnId),
    Raw,
}

/// One client connection.
#[derive(Debug)]
pub struct HarnessClient {
    /// Its id.
    pub id: ClientId,
    /// Raw or telnet.
    pub transport: Transport,
    /// Telnet clients: the client's own telnet endpoint (decodes, answers negotiation).
    telnet: Option<Telnet>,
    /// Every byte written to it.
    pub wire: Vec<u8>,
    /// The data it got (telnet-decoded for telnet clients).
    pub data: Vec<u8>,
    /// Bytes handed to the harness and not yet taken by the core (one read each).
    pending: VecDeque<Bytes>,
    /// The core did not want the pending input: it waits for the client's wakeup.
    blocked: bool,
    /// Whether it reads its output. A stalled client's writer takes one more write when
    /// woken and never comes back (its peer stopped reading: the write blocks).
    pub reading: bool,
    /// Stalled, its writer took its last write.
    stuck: bool,
    /// Its connection is closed.
    pub closed: bool,
    /// Why the core dropped it.
    pub dropped: Option<DropReason>,
    /// The VM and mode it attached to last.
    pub attached: Option<(VmId, Mode)>,
    /// With console events: the entry's output length when it attached.
    pub attach_at: Option<usize>,
    /// With console events: the entry's output length when it left (closed or dropped).
    pub detach_at: Option<usize>,
    /// Data it typed (decoded), after the point set by [`Harness::mark_typed`].
    pub typed: Vec<u8>,
    /// Serial breaks it sent.
    pub breaks: usize,
    /// Bytes the core took toward its VM, read when it closed.
    pub bytes_in_at_close: Option<u64>,
    /// It closed its connection while not reading (what was queued for it was never read).
    pub closed_unread: bool,
}

impl HarnessClient {
    /// Whether input is waiting in the harness for the core to want it.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The data after the attach banner (the scrollback and live output), if attached.
    pub fn after_banner(&self) -> Option<&[u8]> {
        let start = find(&self.data, b"[vspc: attached to ")?;
        let end = start + find(&self.data[start..], b"]\r\n")? + 3;
        Some(&self.data[end..])
    }
}

/// Where `needle` first occurs in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The concentrator, its VMs and its clients, in memory.
pub struct Harness {
    /// The core under test.
    pub core: Concentrator,
    /// The simulated clock.
    pub now: Instant,
    /// Where the clock started.
    pub start: Instant,
    /// The emulated VMs, by index.
    pub vms: Vec<HarnessVm>,
    /// Raw VM connections.
    pub raw: BTreeMap<SessionId, RawConn>,
    /// Every client ever connected.
    pub clients: BTreeMap<ClientId, HarnessClient>,
    /// Every event (but `Console`, kept in `console`), in order.
    pub events: Vec<Event>,
    /// With console events: each entry's output.
    pub console: BTreeMap<VmId, Vec<u8>>,
    /// Deliver VM writes and core writes in reads of at most this many bytes.
    pub read_chunk: usize,
    /// Check, once quiet, that no output or input was left without a wakeup.
    pub strict: bool,
    /// Every VM connection ever: the index of its emulated VM, or `None` for a raw one.
    pub conn_owner: HashMap<SessionId, Option<usize>>,
    /// Every VM entry: who carried it (emulated VM indexes, `None` for raw connections).
    pub entry_owners: BTreeMap<VmId, BTreeSet<Option<usize>>>,
    /// VM connections that carried an entry.
    pub bound: BTreeSet<SessionId>,
    owners: HashMap<SessionId, Owner>,
    wakeups: VecDeque<Wakeup>,
    next_port: u16,
}

impl Harness {
    /// A concentrator with `config` and deterministic secrets.
    pub fn new(config: ConcentratorConfig) -> Self {
        let start = epoch();
        Harness {
            core: Concentrator::with_secret_source(config, secrets(7)),
            now: start,
            start,
            vms: Vec::new(),
            raw: BTreeMap::new(),
            clients: BTreeMap::new(),
            events: Vec::new(),
            console: BTreeMap::new(),
            read_chunk: usize::MAX,
            strict: true,
            conn_owner: HashMap::new(),
            entry_owners: BTreeMap::new(),
            bound: BTreeSet::new(),
            owners: HashMap::new(),
            wakeups: VecDeque::new(),
            next_port: 40_000,
        }
    }

    fn next_peer(&mut self) -> SocketAddr {
        self.next_port = self.next_port.wrapping_add(1);
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.next_port))
    }

    /// Drains what the core has to say after a call: wakeups (acted on by [`run`](Self::run))
    /// and events (kept).
    fn after_call(&mut self) {
        while let Some(wakeup) = self.core.poll_wakeup() {
            self.wakeups.push_back(wakeup);
        }
        while let Some(event) = self.core.poll_event() {
            self.observe(event);
        }
    }

    fn observe(&mut self, event: Event) {
        match &event {
            Event::Console { vm, bytes } => {
                self.console
                    .entry(*vm)
                    .or_default()
                    .extend_from_slice(bytes);
                return;
            }
            Event::VmAdded { vm, conn, .. }
            | Event::VmReconnected { vm, conn }
            | Event::VmMoved { vm, to: conn, .. } => {
                let owner = self.conn_owner.get(conn).copied().flatten();
                self.entry_owners.entry(*vm).or_default().insert(owner);
                self.bound.insert(*conn);
            }
            Event::ClientAttached { client, vm, mode } => {
                let at = self.console.get(vm).map_or(0, Vec::len);
                if let Some(c) = self.clients.get_mut(client) {
                    c.attached = Some((*vm, *mode));
                    c.attach_at = Some(at);
                }
            }
            Event::ClientDropped { client, reason } => {
                let at = self.leave_point(*client);
                if let Some(c) = self.clients.get_mut(client) {
                    c.dropped = Some(*reason);
                    c.detach_at = c.detach_at.or(at);
                }
            }
            _ => {}
        }
        self.events.push(event);
    }

    fn leave_point(&self, client: ClientId) -> Option<usize> {
        let (vm, _) = self.clients.get(&client)?.attached?;
        Some(self.console.get(&vm).map_or(0, Vec::len))
    }

    /// The events so far, taken.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    // ----- VMs -----

    /// Adds a powered-off VM; returns its index.
    pub fn add_vm(&mut self, config: EmulatorConfig) -> usize {
        self.vms.push(HarnessVm {
            emu: EmulatedVm::new(config),
            links: BTreeMap::new(),
            received: Vec::new(),
            inputs: Vec::new(),
            events: Vec::new(),
            sent: Vec::new(),
            partitioned: false,
            stalled: false,
        });
        self.vms.len() - 1
    }

    /// Adds VM `n` of a fleet (`vm-0000n`, default port), powers it on and runs.
    pub fn add_numbered_vm(&mut self, n: u64) -> usize {
        let i = self.add_vm(EmulatorConfig::new(VmIdentity::numbered(n)));
        self.power_on(i);
        i
    }

    /// The emulator of VM `i`, for commands; call [`run`](Self::run) afterwards.
    pub fn emu(&mut self, i: usize) -> &mut EmulatedVm {
        &mut self.vms[i].emu
    }

    /// Powers VM `i` on and runs.
    pub fn power_on(&mut self, i: usize) {
        let now = self.now;
        self.vms[i].emu.power_on(now);
        self.run();
    }

    /// Powers VM `i` off and runs.
    pub fn power_off(&mut self, i: usize) {
        self.vms[i].emu.power_off();
        self.run();
    }

    /// Reconfigures VM `i`'s port `connected` (true: a reconnect) and runs.
    pub fn set_connected(&mut self, i: usize, connected: bool) -> bool {
        let now = self.now;
        let ok = self.vms[i].emu.set_connected(now, connected).is_ok();
        self.run();
        ok
    }

    /// VM `i` writes serial output; runs. False when it could not (not connected).
    pub fn vm_send(&mut self, i: usize, data: &[u8]) -> bool {
        let ok = self.vms[i].emu.send_serial(data).is_ok();
        if ok {
            self.vms[i].sent.extend_from_slice(data);
        }
        self.run();
        ok
    }

    /// VM `i` starts a vMotion; runs. False when it could not.
    pub fn vmotion(&mut self, i: usize, plan: VmotionPlan) -> bool {
        let now = self.now;
        let ok = self.vms[i].emu.start_vmotion(now, plan).is_ok();
        self.run();
        ok
    }

    /// The core session carrying VM `i`'s current connection, if connected.
    pub fn session(&self, i: usize) -> Option<SessionId> {
        let conn = self.vms[i].emu.current_conn()?;
        self.vms[i].links.get(&conn)?.session
    }

    /// The core session of VM `i`'s vMotion destination connection, if it reached the core.
    pub fn destination_session(&self, i: usize) -> Option<SessionId> {
        let conn = self.vms[i].emu.destination_conn()?;
        self.vms[i].links.get(&conn)?.session
    }

    /// Whether VM `i`'s current connection has writes the core has not read.
    pub fn has_unread(&self, i: usize) -> bool {
        self.vms[i]
            .emu
            .current_conn()
            .and_then(|conn| self.vms[i].links.get(&conn))
            .is_some_and(|l| l.unread.iter().any(|h| matches!(h, Held::Write(_))))
    }

    /// The network drops VM `i`'s current connection: both ends see it closed (no FIN
    /// exchange, nothing in flight). False when it had none.
    pub fn cut(&mut self, i: usize) -> bool {
        let Some(conn) = self.vms[i].emu.current_conn() else {
            return false;
        };
        self.close_link(i, conn);
        let now = self.now;
        self.vms[i].emu.handle_closed(now, conn);
        self.run();
        true
    }

    /// New connections of VM `i` are held, unconnected, while partitioned; healed, they
    /// connect and deliver what they wrote meanwhile.
    pub fn partition(&mut self, i: usize, partitioned: bool) {
        self.vms[i].partitioned = partitioned;
        if !partitioned {
            let waiting: Vec<ConnId> = self.vms[i]
                .links
                .iter()
                .filter(|(_, l)| l.session.is_none() && !l.refused && l.held.is_some())
                .map(|(conn, _)| *conn)
                .collect();
            for conn in waiting {
                self.release(i, conn);
            }
        }
        self.run();
    }

    /// Holds back what VM `i` writes (and its close) on `conn`, from now on.
    pub fn hold(&mut self, i: usize, conn: ConnId) {
        if let Some(link) = self.vms[i].links.get_mut(&conn) {
            link.held.get_or_insert_with(VecDeque::new);
        }
    }

    /// Delivers what was held on `conn` (connecting it first if partitioned) and stops
    /// holding; runs.
    pub fn release(&mut self, i: usize, conn: ConnId) {
        let held = self.vms[i].links.get_mut(&conn).and_then(|l| l.held.take());
        self.connect_if_waiting(i, conn);
        for item in held.into_iter().flatten() {
            self.deliver_held(i, conn, item);
        }
        self.run();
    }

    /// Delivers the next held write (or close) of `conn`, connecting it first if
    /// partitioned; runs. False when nothing was held.
    pub fn step(&mut self, i: usize, conn: ConnId) -> bool {
        self.connect_if_waiting(i, conn);
        let item = self.vms[i]
            .links
            .get_mut(&conn)
            .and_then(|l| l.held.as_mut())
            .and_then(VecDeque::pop_front);
        let Some(item) = item else {
            return false;
        };
        self.deliver_held(i, conn, item);
        self.run();
        true
    }

    fn deliver_held(&mut self, i: usize, conn: ConnId, item: Held) {
        match item {
            Held::Write(bytes) => self.deliver_to_core(i, conn, bytes, true),
            Held::Close => self.fin_link(i, conn),
        }
    }

    fn connect_if_waiting(&mut self, i: usize, conn: ConnId) {
        let waiting = self.vms[i]
            .links
            .get(&conn)
            .is_some_and(|l| l.session.is_none() && !l.refused);
        if waiting {
            self.open_link(i, conn);
        }
    }

    /// VM `i` stops (or resumes) reading what the concentrator writes to it.
    pub fn stall(&mut self, i: usize, stalled: bool) {
        self.vms[i].stalled = stalled;
        if !stalled {
            let sessions: Vec<SessionId> = self.vms[i]
                .links
                .values()
                .filter_map(|l| l.session)
                .collect();
            for s in sessions {
                self.write_vm(s);
            }
        }
        self.run();
    }

    fn open_link(&mut self, i: usize, conn: ConnId) {
        let peer = self.next_peer();
        let now = self.now;
        let result = self.core.handle_vm_connect(now, peer, false);
        self.after_call();
        let link = self.vms[i].links.entry(conn).or_default();
        match result {
            Ok(s) => {
                link.session = Some(s);
                self.owners.insert(s, Owner::Vm(i, conn));
                self.conn_owner.insert(s, Some(i));
                // The opening offers are queued at once, without a wakeup.
                self.write_vm(s);
            }
            Err(_) => {
                link.refused = true;
                link.held = None;
                let now = self.now;
                self.vms[i].emu.handle_closed(now, conn);
            }
        }
    }

    /// The VM side closed `conn` after its writes: the core reads the FIN after what it has
    /// not read yet.
    fn fin_link(&mut self, i: usize, conn: ConnId) {
        let not_read = |link: &Link, core: &Concentrator| {
            !link.unread.is_empty() || link.session.is_some_and(|s| !core.vm_wants_input(s))
        };
        match self.vms[i].links.get_mut(&conn) {
            Some(link) if not_read(link, &self.core) => link.unread.push_back(Held::Close),
            _ => self.close_link(i, conn),
        }
    }

    /// Feeds what the core did not read from VM connection `s`, while it wants to.
    fn feed_unread(&mut self, s: SessionId) {
        let Some(Owner::Vm(i, conn)) = self.owners.get(&s).copied() else {
            return;
        };
        while self.core.vm_wants_input(s) {
            let item = self.vms[i]
                .links
                .get_mut(&conn)
                .and_then(|l| l.unread.pop_front());
            match item {
                Some(Held::Write(bytes)) => self.read_into_core(i, conn, s, bytes),
                Some(Held::Close) => return self.close_link(i, conn),
                None => return,
            }
        }
    }

    /// The core reads `bytes` from `s` in `read_chunk` reads, as long as it wants them; the
    /// rest waits, unread, in front of anything later.
    fn read_into_core(&mut self, i: usize, conn: ConnId, s: SessionId, mut bytes: Bytes) {
        let now = self.now;
        let chunk = self.read_chunk.max(1);
        while !bytes.is_empty() {
            if !self.core.vm_wants_input(s) {
                if let Some(link) = self.vms[i].links.get_mut(&conn) {
                    link.unread.push_front(Held::Write(bytes));
                }
                return;
            }
            let part = bytes.split_to(chunk.min(bytes.len()));
            self.core.handle_vm_input(now, s, &part);
            self.after_call();
        }
    }

    /// The VM side closed `conn` (or the network dropped it, losing what was unread): the
    /// core is told.
    fn close_link(&mut self, i: usize, conn: ConnId) {
        if let Some(s) = self.vms[i].links.remove(&conn).and_then(|l| l.session) {
            self.owners.remove(&s);
            let now = self.now;
            self.core.handle_vm_closed(now, s);
            self.after_call();
        }
    }

    /// A write of VM `i` on `conn` reaches the core (or is held, unless it comes out
    /// of the hold).
    fn deliver_to_core(&mut self, i: usize, conn: ConnId, bytes: Bytes, from_hold: bool) {
        let Some(link) = self.vms[i].links.get_mut(&conn) else {
            return;
        };
        if let (Some(held), false) = (&mut link.held, from_hold) {
            held.push_back(Held::Write(bytes));
            return;
        }
        let Some(s) = link.session else {
            return;
        };
        if !link.unread.is_empty() {
            link.unread.push_back(Held::Write(bytes));
            return;
        }
        self.read_into_core(i, conn, s, bytes);
    }

    /// Moves VM `i`'s transmits to the core.
    fn pump_vm(&mut self, i: usize) -> bool {
        let mut moved = false;
        while let Some(transmit) = self.vms[i].emu.poll_transmit() {
            moved = true;
            match transmit {
                Transmit::Open { conn } => {
                    if self.vms[i].partitioned {
                        let link = self.vms[i].links.entry(conn).or_default();
                        link.held = Some(VecDeque::new());
                    } else {
                        self.open_link(i, conn);
                    }
                }
                Transmit::Write { conn, bytes } => self.deliver_to_core(i, conn, bytes, false),
                Transmit::Close { conn } => {
                    let link = self.vms[i].links.get_mut(&conn);
                    match link {
                        // Never connected: the connection attempt is abandoned.
                        Some(l) if l.session.is_none() => {
                            self.vms[i].links.remove(&conn);
                        }
                        Some(Link {
                            held: Some(held), ..
                        }) => held.push_back(Held::Close),
                        _ => self.fin_link(i, conn),
                    }
                }
            }
        }
        let vm = &mut self.vms[i];
        while let Some(event) = vm.emu.poll_event() {
            match &event {
                EmulatorEvent::ClientData { bytes, .. } => {
                    vm.received.extend_from_slice(bytes);
                    match vm.inputs.last_mut() {
                        Some(VmInput::Data(data)) => data.extend_from_slice(bytes),
                        _ => vm.inputs.push(VmInput::Data(bytes.to_vec())),
                    }
                }
                EmulatorEvent::SerialBreak { .. } => vm.inputs.push(VmInput::Break),
                _ => {}
            }
            vm.events.push(event);
        }
        moved
    }

    /// Writes what the core has for VM connection `s`.
    fn write_vm(&mut self, s: SessionId) {
        self.feed_unread(s);
        let now = self.now;
        let owner = self.owners.get(&s).copied();
        if let Some(Owner::Vm(i, _)) = owner {
            if self.vms[i].stalled {
                return;
            }
        }
        loop {
            let transmit = self.core.poll_vm_transmit(s);
            self.after_call();
            match (transmit, owner) {
                (VmTransmit::Write(mut bytes), Some(Owner::Vm(i, conn))) => {
                    let chunk = self.read_chunk.max(1);
                    while !bytes.is_empty() {
                        let part = bytes.split_to(chunk.min(bytes.len()));
                        self.vms[i].emu.handle_input(now, conn, &part);
                    }
                }
                (VmTransmit::Write(bytes), Some(Owner::Raw)) => {
                    if let Some(raw) = self.raw.get_mut(&s) {
                        let room = (64 * 1024usize).saturating_sub(raw.received.len());
                        raw.received
                            .extend_from_slice(&bytes[..room.min(bytes.len())]);
                    }
                }
                // A connection the harness already closed: its late bytes go nowhere.
                (VmTransmit::Write(_), None) => {}
                (VmTransmit::Close, Some(owner)) => {
                    self.owners.remove(&s);
                    match owner {
                        Owner::Vm(i, conn) => {
                            self.vms[i].links.remove(&conn);
                            self.vms[i].emu.handle_closed(now, conn);
                        }
                        Owner::Raw => {
                            if let Some(raw) = self.raw.get_mut(&s) {
                                raw.closed = true;
                            }
                        }
                    }
                    self.core.handle_vm_closed(now, s);
                    self.after_call();
                    return;
                }
                (VmTransmit::Close, None) | (VmTransmit::Idle, _) => return,
            }
        }
    }

    // ----- raw VM connections -----

    /// A VM connection driven with raw bytes.
    pub fn raw_connect(&mut self) -> Result<SessionId, Refused> {
        let peer = self.next_peer();
        let now = self.now;
        let result = self.core.handle_vm_connect(now, peer, false);
        self.after_call();
        let s = result?;
        self.owners.insert(s, Owner::Raw);
        self.conn_owner.insert(s, None);
        self.raw.insert(s, RawConn::default());
        self.write_vm(s);
        self.run();
        Ok(s)
    }

    /// Raw bytes from a raw VM connection.
    pub fn raw_input(&mut self, s: SessionId, bytes: &[u8]) {
        if self.raw.get(&s).is_some_and(|r| !r.closed) {
            let now = self.now;
            self.core
                .handle_vm_input(now, s, &Bytes::copy_from_slice(bytes));
            self.after_call();
        }
        self.run();
    }

    /// A raw VM connection closes.
    pub fn raw_close(&mut self, s: SessionId) {
        if let Some(raw) = self.raw.get_mut(&s) {
            if !raw.closed {
                raw.closed = true;
                self.owners.remove(&s);
                let now = self.now;
                self.core.handle_vm_closed(now, s);
                self.after_call();
            }
        }
        self.run();
    }

    // ----- clients -----

    /// Connects a client (attached at once with `target`); runs.
    pub fn try_connect_client(
        &mut self,
        transport: Transport,
        target: Option<(VmId, Mode)>,
    ) -> Result<ClientId, Refused> {
        let peer = self.next_peer();
        let now = self.now;
        let result = self
            .core
            .handle_client_connect(now, peer, transport, target);
        self.register_client(result, transport)
    }

    /// Connects a client set up by `setup` (a user, the escape, a request); runs.
    pub fn connect_with(&mut self, setup: ClientSetup) -> ClientId {
        let peer = self.next_peer();
        let now = self.now;
        let transport = setup.transport;
        let result = self.core.handle_client_connect_with(now, peer, setup);
        self.register_client(result, transport)
            .expect("client refused")
    }

    fn register_client(
        &mut self,
        result: Result<ClientId, Refused>,
        transport: Transport,
    ) -> Result<ClientId, Refused> {
        let id = match result {
            Ok(id) => id,
            Err(refused) => {
                self.after_call();
                return Err(refused);
            }
        };
        let telnet = (transport == Transport::Telnet).then(|| {
            let policy = Policy::new()
                .accept_remote(option::ECHO)
                .accept_both(option::SGA)
                .accept_both(option::BINARY)
                .accept_local(option::COM_PORT);
            Telnet::new(TelnetConfig {
                policy,
                ..TelnetConfig::default()
            })
        });
        self.clients.insert(
            id,
            HarnessClient {
                id,
                transport,
                telnet,
                wire: Vec::new(),
                data: Vec::new(),
                pending: VecDeque::new(),
                blocked: false,
                reading: true,
                stuck: false,
                closed: false,
                dropped: None,
                attached: None,
                attach_at: None,
                detach_at: None,
                typed: Vec::new(),
                breaks: 0,
                bytes_in_at_close: None,
                closed_unread: false,
            },
        );
        self.after_call();
        self.run();
        Ok(id)
    }

    /// Connects a client; panics if refused.
    pub fn connect_client(
        &mut self,
        transport: Transport,
        target: Option<(VmId, Mode)>,
    ) -> ClientId {
        self.try_connect_client(transport, target)
            .expect("client refused")
    }

    /// The client.
    pub fn client(&self, c: ClientId) -> &HarnessClient {
        &self.clients[&c]
    }

    /// The client's data so far, taken.
    pub fn take_data(&mut self, c: ClientId) -> Vec<u8> {
        std::mem::take(&mut self.clients.get_mut(&c).expect("client").data)
    }

    /// The client types `data` as one read (0xFF escaped for telnet clients); runs.
    pub fn type_data(&mut self, c: ClientId, data: &[u8]) {
        self.queue_data(c, data);
        self.run();
    }

    /// Queues `data` as one read without running.
    pub fn queue_data(&mut self, c: ClientId, data: &[u8]) {
        let client = self.clients.get_mut(&c).expect("client");
        client.typed.extend_from_slice(data);
        let wire = match client.transport {
            Transport::Telnet => {
                let mut out = Vec::new();
                encode_data(data, true, &mut out);
                out
            }
            Transport::Raw => data.to_vec(),
        };
        client.pending.push_back(Bytes::from(wire));
    }

    /// The client writes these exact bytes, one read per segment; runs.
    pub fn type_wire(&mut self, c: ClientId, segments: &[&[u8]]) {
        let client = self.clients.get_mut(&c).expect("client");
        for segment in segments {
            client.pending.push_back(Bytes::copy_from_slice(segment));
        }
        self.run();
    }

    /// Forgets what the client typed so far (e.g. its selection line): `typed` then holds
    /// what it sends to its VM.
    pub fn mark_typed(&mut self, c: ClientId) {
        self.clients.get_mut(&c).expect("client").typed.clear();
    }

    /// A telnet client offers `WILL COM-PORT` (RFC 2217, as a serial tool does); runs.
    pub fn offer_com_port(&mut self, c: ClientId) {
        let client = self.clients.get_mut(&c).expect("client");
        let telnet = client.telnet.as_mut().expect("a telnet client");
        telnet.request(Side::Local, option::COM_PORT, true);
        if let Some(wire) = telnet.poll_transmit() {
            client.pending.push_back(wire);
        }
        self.run();
    }

    /// A telnet client sends a serial break (`IAC BRK`) as one read; runs.
    pub fn send_break(&mut self, c: ClientId) {
        self.queue_break(c);
        self.run();
    }

    /// Queues a serial break without running.
    pub fn queue_break(&mut self, c: ClientId) {
        let client = self.clients.get_mut(&c).expect("client");
        client.breaks += 1;
        client
            .pending
            .push_back(Bytes::from(vec![0xff, Command::Break.code()]));
    }

    /// The client closes its connection.
    pub fn close_client(&mut self, c: ClientId) {
        let at = self.leave_point(c);
        let bytes_in = self.core.client(c).map(|s| s.bytes_in);
        let Some(client) = self.clients.get_mut(&c) else {
            return;
        };
        if client.closed {
            return;
        }
        client.closed = true;
        client.closed_unread = !client.reading;
        client.detach_at = client.detach_at.or(at);
        client.bytes_in_at_close = bytes_in;
        client.pending.clear();
        self.core.handle_client_closed(c);
        self.after_call();
        self.run();
    }

    /// Whether the client reads its output (stalled, its writer blocks in the next write it
    /// takes); resuming reads what is queued.
    pub fn set_reading(&mut self, c: ClientId, reading: bool) {
        let client = self.clients.get_mut(&c).expect("client");
        if client.reading != reading {
            client.reading = reading;
            client.stuck = false;
        }
        if reading {
            self.wakeups.push_back(Wakeup::Client(c));
        }
        self.run();
    }

    fn receive(&mut self, c: ClientId, chunk: &[u8]) {
        let Some(client) = self.clients.get_mut(&c) else {
            return;
        };
        client.wire.extend_from_slice(chunk);
        match &mut client.telnet {
            None => client.data.extend_from_slice(chunk),
            Some(telnet) => {
                let mut input = chunk;
                while let Some(event) = telnet.next_event(&mut input) {
                    if let TelnetEvent::Data(data) = event {
                        client.data.extend_from_slice(data);
                    }
                }
                if let Some(reply) = telnet.poll_transmit() {
                    client.pending.push_back(reply);
                }
            }
        }
    }

    /// Writes the client's output and feeds its waiting input.
    fn service_client(&mut self, c: ClientId) {
        let Some(client) = self.clients.get(&c) else {
            return;
        };
        if client.closed {
            return;
        }
        if !client.reading && client.stuck && self.core.client_is_closing(c) {
            // The driver abandons a write stuck on a client that is being dropped.
            self.abandon(c);
            return;
        }
        if client.reading || !client.stuck {
            let mut out = Vec::new();
            let transmit = self.core.poll_client_transmit(c, &mut out);
            self.after_call();
            if !out.is_empty() {
                let client = self.clients.get_mut(&c).expect("client");
                client.stuck = !client.reading;
            }
            for chunk in out {
                self.receive(c, &chunk);
            }
            if transmit == ClientTransmit::Close {
                let at = self.leave_point(c);
                let bytes_in = self.core.client(c).map(|s| s.bytes_in);
                let client = self.clients.get_mut(&c).expect("client");
                client.closed = true;
                client.pending.clear();
                client.detach_at = client.detach_at.or(at);
                client.bytes_in_at_close = bytes_in;
                self.core.handle_client_closed(c);
                self.after_call();
                return;
            }
        }
        self.feed_client(c);
    }

    /// The driver closes a dropped client's connection without writing its goodbye.
    fn abandon(&mut self, c: ClientId) {
        let at = self.leave_point(c);
        let bytes_in = self.core.client(c).map(|s| s.bytes_in);
        let client = self.clients.get_mut(&c).expect("client");
        client.closed = true;
        client.closed_unread = true;
        client.pending.clear();
        client.detach_at = client.detach_at.or(at);
        client.bytes_in_at_close = bytes_in;
        self.core.handle_client_closed(c);
        self.after_call();
    }

    fn feed_client(&mut self, c: ClientId) {
        let now = self.now;
        loop {
            let wanted = self.core.client_wants_input(c);
            let Some(client) = self.clients.get_mut(&c) else {
                return;
            };
            client.blocked = !wanted && !client.pending.is_empty();
            if !wanted {
                return;
            }
            let Some(chunk) = client.pending.pop_front() else {
                return;
            };
            self.core.handle_client_input(now, c, &chunk);
            self.after_call();
        }
    }

    // ----- driving -----

    /// Moves bytes until nothing moves; strict, it then checks nothing was left stranded.
    pub fn run(&mut self) {
        for round in 0.. {
            assert!(round < 1_000_000, "the harness does not settle");
            // A test may have called the core directly.
            self.after_call();
            let mut moved = false;
            for i in 0..self.vms.len() {
                moved |= self.pump_vm(i);
            }
            // Input handed to the harness by a test goes in on the client's own turn: new
            // input needs no wakeup, only input the core refused to take does.
            let fresh: Vec<ClientId> = self
                .clients
                .iter()
                .filter(|(_, c)| !c.closed && !c.blocked && !c.pending.is_empty())
                .map(|(id, _)| *id)
                .collect();
            for c in fresh {
                moved = true;
                self.feed_client(c);
            }
            while let Some(wakeup) = self.wakeups.pop_front() {
                moved = true;
                match wakeup {
                    Wakeup::Vm(s) => self.write_vm(s),
                    Wakeup::Client(c) => self.service_client(c),
                }
            }
            if !moved {
                break;
            }
        }
        if self.strict {
            self.assert_quiet();
        }
    }

    /// Nothing was left without a wakeup: no VM connection has bytes queued, no reading
    /// client has output queued, no client whose input waits is wanted.
    fn assert_quiet(&mut self) {
        let owned: Vec<SessionId> = self
            .owners
            .iter()
            .filter(|(_, owner)| !matches!(owner, Owner::Vm(i, _) if self.vms[*i].stalled))
            .map(|(s, _)| *s)
            .collect();
        for s in owned {
            let pending = self.core.endpoint().pending_transmit_len(s);
            assert_eq!(pending, 0, "{pending} bytes queued for {s} with no wakeup");
        }
        for (s, owner) in &self.owners {
            if let Owner::Vm(i, conn) = owner {
                let unread = self.vms[*i].links.get(conn).map_or(0, |l| l.unread.len());
                assert!(
                    unread == 0 || !self.core.vm_wants_input(*s),
                    "{s}: the core wants its input again, with no wakeup"
                );
            }
        }
        let ids: Vec<ClientId> = self.clients.keys().copied().collect();
        for c in ids {
            let client = &self.clients[&c];
            if client.closed {
                continue;
            }
            assert!(
                !(client.blocked && self.core.client_wants_input(c)),
                "{c}: its input is wanted again, with no wakeup"
            );
            if !client.reading && client.stuck {
                continue;
            }
            let mut out = Vec::new();
            let transmit = self.core.poll_client_transmit(c, &mut out);
            assert!(
                transmit == ClientTransmit::Idle && out.is_empty(),
                "{c}: {transmit:?} ({} chunks) with no wakeup",
                out.len()
            );
        }
    }

    /// Fires every timer due at `now` (core and VMs) and runs.
    fn fire(&mut self) {
        let now = self.now;
        if self.core.poll_timeout().is_some_and(|at| at <= now) {
            self.core.handle_timeout(now);
            self.after_call();
            if let Some(at) = self.core.poll_timeout() {
                assert!(
                    at > now,
                    "a deadline at {at:?} stays due after handle_timeout"
                );
            }
        }
        for vm in &mut self.vms {
            if vm.emu.poll_timeout().is_some_and(|at| at <= now) {
                vm.emu.handle_timeout(now);
            }
        }
        self.run();
    }

    /// The earliest deadline of the core and the VMs.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.vms
            .iter()
            .filter_map(|vm| vm.emu.poll_timeout())
            .chain(self.core.poll_timeout())
            .min()
    }

    /// Advances the clock by `by`, firing every timer at its own deadline.
    pub fn advance(&mut self, by: Duration) {
        let target = self.now + by;
        self.run();
        for _ in 0..1_000_000 {
            match self.next_deadline() {
                Some(at) if at <= target => {
                    self.now = self.now.max(at);
                    self.fire();
                }
                _ => break,
            }
        }
        self.now = target;
        self.fire();
    }

    /// Shuts the core down and runs.
    pub fn shutdown(&mut self) {
        self.core.shutdown();
        self.after_call();
        self.run();
    }

    /// The newest entry carried by VM `i` alone that still exists.
    pub fn entry_of(&self, i: usize) -> Option<VmId> {
        self.entry_owners
            .iter()
            .rev()
            .find(|(vm, owners)| {
                owners.len() == 1 && owners.contains(&Some(i)) && self.core.vm(**vm).is_some()
            })
            .map(|(vm, _)| *vm)
    }

    /// The single entry whose name is `name`.
    pub fn vm_id(&self, name: &str) -> VmId {
        self.core.resolve(name).expect("a VM of that name")
    }
}
