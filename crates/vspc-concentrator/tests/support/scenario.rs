//! Random scenarios through the concentrator core, and the invariants they must keep.
//!
//! A scenario is a few emulated VMs and up to seven clients under a sequence of [`Op`]s:
//! VM connections, reconnects, cuts and power cycles, serial output, vMotions (both FIN
//! orders, aborted, or stalled by a partition until they expire), slow VMs, client attach
//! (at connect, or by number, name or UUID in any mode), typing, breaks, slow readers,
//! closes, time steps; and, for the fuzzer, raw bytes on VM connections and clients and raw
//! VM connections of its own.
//!
//! Checked after every operation: the core's bounds (each client's queue within twice its
//! output budget, each VM connection's held and queued bytes within their caps, connection
//! counts within their caps) and, by the harness, that nothing was left without a wakeup,
//! that no deadline stays due after `handle_timeout`, and that no call panics. Checked
//! at the end, where the scenario is well-formed (what raw bytes touched is exempt):
//! - every VM's output reaches its entries exactly (their outputs, in order, are what it
//!   sent);
//! - every client sees its entry's output byte-exact and in order from its attach point
//!   (scrollback included) to where it left, or a prefix of it if it was dropped;
//! - every VM receives each writer's input exactly once, in order: what the core took from
//!   it (`bytes_in`), unless a connection closed with input held or queued for it (the one
//!   loss the protocol allows: a host that goes away with bytes in flight), and nothing from
//!   watchers;
//! - a client's scrollback replay is whole unless it would not fit its output budget;
//! - a VM's own connections are never taken for an impostor.
//!
//! Each client types bytes of its own class (`0x20 + 32 * class + n % 32`), so the VM's
//! input splits back into each client's stream.
//!
//! Shared by `tests/interleavings.rs` (proptest), `tests/fuzz_corpus.rs` and the
//! `concentrator` fuzz target (`fuzz/fuzz_targets/concentrator.rs`, which includes this
//! harness by `#[path]`).

use std::collections::BTreeSet;
use std::time::Duration;

use vspc_concentrator::{
    ClientId, ConcentratorConfig, DropReason, Event, Mode, Transport, VmotionStep,
};
use vspc_emulator::{EmulatorConfig, Fault, FinOrder, Segmentation, VmIdentity, VmotionPlan};

use super::Harness;

/// Most emulated VMs in a scenario.
pub const MAX_VMS: usize = 3;
/// Most clients in a scenario (one input class each).
pub const MAX_CLIENTS: usize = 7;
/// The core's vMotion timeout in scenarios (the hosts wait longer: 20 s).
pub const VMOTION_TIMEOUT: Duration = Duration::from_secs(10);

/// One step of a scenario. VM and client numbers are taken modulo what exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Power a VM on (healing its partition first).
    PowerOn(u8),
    /// Power a VM off.
    PowerOff(u8),
    /// Reconfigure a VM's port connected: a reconnect (healing its partition first).
    Reconnect(u8),
    /// Reconfigure a VM's port disconnected.
    Disconnect(u8),
    /// The network drops a VM's connection.
    Cut(u8),
    /// A VM writes this many bytes of its output pattern.
    VmSend(u8, u16),
    /// A VM starts a vMotion.
    Vmotion {
        /// The VM.
        vm: u8,
        /// The source closes after COMPLETE (else before).
        fin_after: bool,
        /// The destination presents a wrong secret: the source aborts.
        abort: bool,
        /// The destination host is partitioned away until [`Op::Heal`].
        stall: bool,
    },
    /// A VM's partition heals.
    Heal(u8),
    /// A VM stops (true) or resumes reading.
    StallVm(u8, bool),
    /// A client connects and chooses a VM.
    Connect {
        /// The VM it wants.
        vm: u8,
        /// Telnet (else raw).
        telnet: bool,
        /// 0: attached at connect; 1: by number; 2: by name; 3: by UUID.
        how: u8,
        /// 0: rw; 1: ro; 2: excl.
        mode: u8,
    },
    /// A client closes.
    Close(u8),
    /// A client types this many bytes of its class.
    Type(u8, u16),
    /// A telnet client sends a serial break.
    Break(u8),
    /// A client stops (true) or resumes reading its output.
    StallClient(u8, bool),
    /// Time passes (milliseconds).
    Advance(u32),
    /// Raw bytes on a VM's current connection (fuzzing: taints that VM).
    VmGarbage(u8, Vec<u8>),
    /// Raw bytes from a client (fuzzing: taints its input).
    ClientWire(u8, Vec<u8>),
    /// A raw VM connection opens (fuzzing).
    RawConnect,
    /// Raw bytes on a raw VM connection (fuzzing).
    RawInput(u8, Vec<u8>),
    /// A raw VM connection closes (fuzzing).
    RawClose(u8),
    /// A telnet client negotiates COM-PORT (once) and sends this RFC 2217 payload
    /// (fuzzing: purges, suspends and breaks change its stream, so it is tainted).
    ComPort(u8, Vec<u8>),
}

/// How a scenario is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setup {
    /// Emulated VMs (1 to [`MAX_VMS`]).
    pub vms: usize,
    /// VMs powered on at the start (bit per VM).
    pub powered: u8,
    /// Bytes per read, both ways (0: whole writes).
    pub read_chunk: usize,
    /// The hosts cut their writes at random points.
    pub segmented: bool,
    /// The core's per-client output budget.
    pub output_budget: usize,
    /// Scrollback kept per VM.
    pub scrollback: usize,
    /// How long an entry lingers.
    pub linger: Duration,
    /// Bytes held per vMotion.
    pub max_held: usize,
    /// Bytes queued toward a VM before its writers pause.
    pub max_pending_to_vm: usize,
    /// Cap on VM connections.
    pub max_vm_connections: usize,
    /// Cap on clients.
    pub max_clients: usize,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            vms: 2,
            powered: 0xff,
            read_chunk: 0,
            segmented: false,
            output_budget: 4096,
            scrollback: 64,
            linger: Duration::from_secs(20),
            max_held: 1024,
            max_pending_to_vm: 256,
            max_vm_connections: 16,
            max_clients: 16,
        }
    }
}

impl Setup {
    /// The core's configuration.
    pub fn config(&self) -> ConcentratorConfig {
        let mut config = ConcentratorConfig::default();
        config.output_budget = self.output_budget;
        config.scrollback = self.scrollback;
        config.linger = self.linger;
        config.max_held = self.max_held;
        config.max_pending_to_vm = self.max_pending_to_vm;
        config.max_vm_connections = self.max_vm_connections;
        config.max_clients = self.max_clients;
        config.vmotion_timeout = VMOTION_TIMEOUT;
        config.max_unbound = 4096;
        config.max_pending_input = 4096;
        config.console_events = true;
        config
    }
}

/// The output pattern of VM `vm`: every byte value, 0xFF included.
pub fn vm_byte(vm: usize, offset: usize) -> u8 {
    (offset.wrapping_mul(37).wrapping_add(vm * 101) % 256) as u8
}

/// Byte `n` typed by the client of input class `class`.
pub fn class_byte(class: usize, n: u64) -> u8 {
    0x20 + 32 * class as u8 + (n % 32) as u8
}

/// The input class of `byte`.
fn class_of(byte: u8) -> Option<usize> {
    (byte >= 0x20).then(|| usize::from(byte - 0x20) / 32)
}

#[derive(Debug, Default)]
struct VmModel {
    /// Raw bytes were written on its connections: nothing about it is checked.
    garbage: bool,
    /// A connection closed with client input held or queued for it.
    input_lossy: bool,
    /// A connection closed before it identified (what the VM wrote on it went nowhere: closed
    /// by the VM, or by the core's identification timeout), or its output before
    /// identification passed `max_unbound`.
    output_lossy: bool,
    next_sequence: u32,
}

#[derive(Debug)]
struct ClientModel {
    id: ClientId,
    class: usize,
    typed: u64,
    /// Raw bytes were sent: its input is not checked.
    garbage: bool,
    /// It negotiated COM-PORT (its output can be purged or held): its output is not
    /// checked.
    com_port: bool,
}

/// A scenario in progress.
pub struct Scenario {
    /// The harness.
    pub h: Harness,
    setup: Setup,
    vms: Vec<VmModel>,
    clients: Vec<ClientModel>,
    raw: Vec<vspc_concentrator::vspc_proto::SessionId>,
    /// Operations applied.
    pub ops: usize,
}

impl Scenario {
    /// A scenario set up by `setup`, its VMs powered on as asked.
    pub fn new(setup: Setup) -> Self {
        let mut h = Harness::new(setup.config());
        h.read_chunk = if setup.read_chunk == 0 {
            usize::MAX
        } else {
            setup.read_chunk
        };
        let vms = setup.vms.clamp(1, MAX_VMS);
        for n in 0..vms {
            let mut config = EmulatorConfig::new(VmIdentity::numbered(n as u64 + 1));
            config.port.vmotion_limit = 2 * VMOTION_TIMEOUT;
            if setup.segmented {
                config.segmentation = Segmentation::Random {
                    seed: n as u64,
                    max: 7,
                };
            }
            h.add_vm(config);
        }
        let mut scenario = Scenario {
            h,
            vms: (0..vms).map(|_| VmModel::default()).collect(),
            clients: Vec::new(),
            raw: Vec::new(),
            setup,
            ops: 0,
        };
        for i in 0..vms {
            if scenario.setup.powered & (1 << i) != 0 {
                scenario.h.power_on(i);
            }
        }
        scenario
    }

    fn vm(&self, v: u8) -> usize {
        usize::from(v) % self.vms.len()
    }

    fn client(&self, c: u8) -> Option<usize> {
        (!self.clients.is_empty()).then(|| usize::from(c) % self.clients.len())
    }

    /// VM `i` is about to lose its connection: input held for it, or queued toward a VM
    /// that does not read, is lost with it, and output it wrote before it identified.
    fn closing(&mut self, i: usize) {
        if let Some(s) = self.h.session(i) {
            if !self.h.bound.contains(&s) {
                self.vms[i].output_lossy = true;
            }
            let endpoint = self.h.core.endpoint();
            let held = endpoint.session(s).is_some_and(|s| s.held_len() > 0);
            let queued = self.h.vms[i].stalled && endpoint.pending_transmit_len(s) > 0;
            // Not read (a client of it is behind), the core sees the close only later, and
            // input it sends meanwhile goes to a closed connection, as over TCP.
            let unread = !self.h.core.vm_wants_input(s);
            if held || queued || unread {
                self.vms[i].input_lossy = true;
            }
        }
    }

    /// Applies one operation, then checks the bounds.
    pub fn apply(&mut self, op: &Op) {
        self.ops += 1;
        let seen = self.h.events.len();
        let unbound_dropped = self.h.core.counters().unbound_bytes_dropped;
        let identify_timeouts = self.h.core.counters().vm_identify_timeouts;
        self.apply_op(op);
        // A connection closed for not identifying in time takes what its VM wrote on it.
        if self.h.core.counters().vm_identify_timeouts > identify_timeouts {
            for vm in &mut self.vms {
                vm.output_lossy = true;
            }
        }
        // Output past `max_unbound` before a connection identified is dropped by design.
        if self.h.core.counters().unbound_bytes_dropped > unbound_dropped {
            let targeted = match op {
                Op::PowerOn(v)
                | Op::PowerOff(v)
                | Op::Reconnect(v)
                | Op::Disconnect(v)
                | Op::Cut(v)
                | Op::VmSend(v, _)
                | Op::Heal(v)
                | Op::StallVm(v, _)
                | Op::VmGarbage(v, _)
                | Op::Vmotion { vm: v, .. } => Some(self.vm(*v)),
                _ => None,
            };
            for (i, vm) in self.vms.iter_mut().enumerate() {
                if targeted.is_none_or(|t| t == i) {
                    vm.output_lossy = true;
                }
            }
        }
        self.check_bounds(seen);
    }

    fn apply_op(&mut self, op: &Op) {
        match op {
            Op::PowerOn(v) => {
                let i = self.vm(*v);
                self.h.partition(i, false);
                self.h.power_on(i);
            }
            Op::PowerOff(v) => {
                let i = self.vm(*v);
                self.closing(i);
                self.h.power_off(i);
            }
            Op::Reconnect(v) => {
                let i = self.vm(*v);
                self.h.partition(i, false);
                self.closing(i);
                self.h.set_connected(i, true);
            }
            Op::Disconnect(v) => {
                let i = self.vm(*v);
                self.closing(i);
                self.h.set_connected(i, false);
            }
            Op::Cut(v) => {
                let i = self.vm(*v);
                self.closing(i);
                // Output the core had not read yet (a client of it was behind) is lost with
                // the connection.
                if self.h.has_unread(i) {
                    self.vms[i].output_lossy = true;
                }
                self.h.cut(i);
            }
            Op::VmSend(v, n) => {
                let i = self.vm(*v);
                let offset = self.h.vms[i].sent.len();
                let bytes: Vec<u8> = (offset..offset + usize::from(*n))
                    .map(|o| vm_byte(i, o))
                    .collect();
                self.h.vm_send(i, &bytes);
            }
            Op::Vmotion {
                vm,
                fin_after,
                abort,
                stall,
            } => {
                let i = self.vm(*vm);
                if self.h.emu(i).is_migrating() {
                    return;
                }
                self.vms[i].next_sequence += 1;
                let mut plan = VmotionPlan::new(self.vms[i].next_sequence.to_be_bytes().to_vec());
                plan.fin_order = if *fin_after {
                    FinOrder::FinAfterComplete
                } else {
                    FinOrder::FinBeforeComplete
                };
                if *abort {
                    plan.wrong_secret = Some(b"wrong-secret"[..].into());
                }
                if *stall {
                    self.h.partition(i, true);
                }
                self.h.vmotion(i, plan);
            }
            Op::Heal(v) => {
                let i = self.vm(*v);
                self.h.partition(i, false);
            }
            Op::StallVm(v, stalled) => {
                let i = self.vm(*v);
                self.h.stall(i, *stalled);
            }
            Op::Connect {
                vm,
                telnet,
                how,
                mode,
            } => self.connect(*vm, *telnet, *how, *mode),
            Op::Close(c) => {
                if let Some(k) = self.client(*c) {
                    let id = self.clients[k].id;
                    self.h.close_client(id);
                }
            }
            Op::Type(c, n) => {
                if let Some(k) = self.client(*c) {
                    let id = self.clients[k].id;
                    let client = self.h.client(id);
                    if client.attached.is_some() && !client.closed && client.dropped.is_none() {
                        let model = &mut self.clients[k];
                        let bytes: Vec<u8> = (0..u64::from(*n))
                            .map(|j| class_byte(model.class, model.typed + j))
                            .collect();
                        model.typed += u64::from(*n);
                        self.h.type_data(id, &bytes);
                    }
                }
            }
            Op::Break(c) => {
                if let Some(k) = self.client(*c) {
                    let id = self.clients[k].id;
                    let client = self.h.client(id);
                    if client.attached.is_some()
                        && !client.closed
                        && client.transport == Transport::Telnet
                    {
                        self.h.send_break(id);
                    }
                }
            }
            Op::StallClient(c, stalled) => {
                if let Some(k) = self.client(*c) {
                    let id = self.clients[k].id;
                    self.h.set_reading(id, !stalled);
                }
            }
            Op::Advance(ms) => self.h.advance(Duration::from_millis(u64::from(*ms))),
            Op::VmGarbage(v, bytes) => {
                let i = self.vm(*v);
                if self
                    .h
                    .emu(i)
                    .inject(Fault::Garbage(bytes.clone().into()))
                    .is_ok()
                {
                    self.vms[i].garbage = true;
                }
                self.h.run();
            }
            Op::ClientWire(c, bytes) => {
                if let Some(k) = self.client(*c) {
                    self.clients[k].garbage = true;
                    let id = self.clients[k].id;
                    if !self.h.client(id).closed {
                        self.h.type_wire(id, &[bytes]);
                    }
                }
            }
            Op::ComPort(c, payload) => {
                if let Some(k) = self.client(*c) {
                    let id = self.clients[k].id;
                    if !self.h.client(id).closed && self.h.client(id).transport == Transport::Telnet
                    {
                        self.clients[k].garbage = true;
                        if !self.clients[k].com_port {
                            self.clients[k].com_port = true;
                            self.h.offer_com_port(id);
                        }
                        let mut wire = vec![0xff, 0xfa, 44];
                        for &byte in payload {
                            wire.push(byte);
                            if byte == 0xff {
                                wire.push(0xff);
                            }
                        }
                        wire.extend_from_slice(&[0xff, 0xf0]);
                        self.h.type_wire(id, &[&wire]);
                    }
                }
            }
            Op::RawConnect => {
                if self.raw.len() < 8 {
                    if let Ok(s) = self.h.raw_connect() {
                        self.raw.push(s);
                    }
                }
            }
            Op::RawInput(r, bytes) => {
                if !self.raw.is_empty() {
                    let s = self.raw[usize::from(*r) % self.raw.len()];
                    self.h.raw_input(s, bytes);
                }
            }
            Op::RawClose(r) => {
                if !self.raw.is_empty() {
                    let s = self.raw[usize::from(*r) % self.raw.len()];
                    self.h.raw_close(s);
                }
            }
        }
    }

    fn connect(&mut self, vm: u8, telnet: bool, how: u8, mode: u8) {
        if self.clients.len() >= MAX_CLIENTS {
            return;
        }
        let i = self.vm(vm);
        let transport = if telnet {
            Transport::Telnet
        } else {
            Transport::Raw
        };
        let mode = match mode % 3 {
            0 => Mode::ReadWrite,
            1 => Mode::ReadOnly,
            _ => Mode::Exclusive,
        };
        let entry = self.h.entry_of(i);
        let target = match (how % 4, entry) {
            (0, Some(entry)) => Some((entry, mode)),
            _ => None,
        };
        let Ok(id) = self.h.try_connect_client(transport, target) else {
            return;
        };
        if target.is_none() {
            let identity = VmIdentity::numbered(i as u64 + 1);
            let selector = match how % 4 {
                1 => entry.map_or("99".to_owned(), |e| e.0.to_string()),
                2 => identity.name,
                _ => identity.vc_uuid.to_string(),
            };
            self.h
                .type_data(id, format!("{selector} {}\r\n", mode.short()).as_bytes());
        }
        self.h.mark_typed(id);
        self.clients.push(ClientModel {
            id,
            class: self.clients.len(),
            typed: 0,
            garbage: false,
            com_port: false,
        });
    }

    /// The core's bounds, and what the events since `seen` tell about losses.
    fn check_bounds(&mut self, seen: usize) {
        let config = self.h.core.config().clone();
        // A vMotion that expired after its source closed loses what it held.
        for event in &self.h.events[seen..] {
            if let Event::Vmotion {
                conn,
                step: VmotionStep::Expired { released },
                ..
            } = event
            {
                let gone = self.h.core.endpoint().session(*conn).is_none();
                if *released > 0 && gone {
                    if let Some(Some(i)) = self.h.conn_owner.get(conn) {
                        self.vms[*i].input_lossy = true;
                    }
                }
            }
        }
        assert!(self.h.core.endpoint().len() <= config.max_vm_connections);
        // Dropped clients whose connection is not closed yet hold no slot.
        let closing = self
            .h
            .clients
            .iter()
            .filter(|(id, c)| !c.closed && self.h.core.client_is_closing(**id))
            .count();
        assert!(self.h.core.open_clients() <= config.max_clients + closing);
        for (&id, client) in &self.h.clients {
            if client.closed {
                continue;
            }
            if let Some(snapshot) = self.h.core.client(id) {
                // Output that arrived before the writer's turn counts against twice the
                // budget.
                assert!(
                    snapshot.queued <= 2 * config.output_budget,
                    "{id}: {} bytes queued, budget {}",
                    snapshot.queued,
                    config.output_budget
                );
            }
        }
        let slack = 16 * 1024;
        for conn in self.h.core.endpoint().connections() {
            let endpoint = self.h.core.endpoint();
            let held = endpoint.session(conn).map_or(0, |s| s.held_len());
            assert!(held <= config.max_held, "{conn}: {held} bytes held");
            let pending = endpoint.pending_transmit_len(conn);
            let cap = config.max_pending_to_vm + config.max_held + config.max_pending_input + slack;
            assert!(
                pending <= cap,
                "{conn}: {pending} bytes queued toward the VM"
            );
        }
    }

    /// Lets everything settle (partitions healed, VMs and clients reading, pending vMotions
    /// resolved), then checks the delivery invariants.
    pub fn finish(&mut self) {
        for i in 0..self.vms.len() {
            self.h.partition(i, false);
            self.h.stall(i, false);
        }
        let ids: Vec<ClientId> = self.clients.iter().map(|c| c.id).collect();
        for id in ids {
            if !self.h.client(id).closed {
                self.h.set_reading(id, true);
            }
        }
        let seen = self.h.events.len();
        self.h.advance(VMOTION_TIMEOUT + Duration::from_secs(1));
        self.check_bounds(seen);
        self.check_delivery();
    }

    fn tainted(&self, vm: &vspc_concentrator::VmId) -> bool {
        let Some(owners) = self.h.entry_owners.get(vm) else {
            return true;
        };
        owners.len() != 1 || owners.iter().any(|o| o.is_none_or(|i| self.vms[i].garbage))
    }

    /// The delivery invariants (see the module notes).
    pub fn check_delivery(&self) {
        let h = &self.h;
        // A VM's own connections are never taken for an impostor.
        if self.raw.is_empty() {
            for event in &h.events {
                if let Event::VmAdded {
                    vm,
                    conn,
                    flagged: Some(reason),
                } = event
                {
                    if let Some(Some(i)) = h.conn_owner.get(conn) {
                        panic!("VM {i}'s connection {conn} flagged as {vm}: {reason}");
                    }
                }
            }
        }
        // Every VM's output reaches its entries exactly.
        for (i, model) in self.vms.iter().enumerate() {
            let entries: Vec<_> = h
                .entry_owners
                .iter()
                .filter(|(_, owners)| owners.contains(&Some(i)))
                .map(|(vm, _)| *vm)
                .collect();
            if model.garbage || model.output_lossy || entries.iter().any(|e| self.tainted(e)) {
                continue;
            }
            let mut output = Vec::new();
            for e in &entries {
                output.extend_from_slice(h.console.get(e).map_or(&[][..], Vec::as_slice));
            }
            assert!(
                output == h.vms[i].sent,
                "VM {i}: its entries {entries:?} got {} bytes, it sent {}",
                output.len(),
                h.vms[i].sent.len()
            );
        }
        // Every client sees its entry's output from its attach point.
        let scrollback = self.setup.scrollback;
        for (&id, client) in &h.clients {
            let (Some((vm, _)), Some(at)) = (client.attached, client.attach_at) else {
                continue;
            };
            if self.tainted(&vm) || self.clients.iter().any(|m| m.id == id && m.com_port) {
                continue;
            }
            let stream = h.console.get(&vm).map_or(&[][..], Vec::as_slice);
            let end = client.detach_at.unwrap_or(stream.len());
            let got = client
                .after_banner()
                .unwrap_or_else(|| panic!("{id}: attached to {vm}, no banner"));
            // The replay is the scrollback, trimmed to what fits the client's budget: whole
            // unless it came near the budget (the echo of its selection line and telnet
            // replies may share it).
            let kept = at.min(scrollback);
            let framed = |bytes: &[u8]| match client.transport {
                Transport::Telnet => bytes.len() + bytes.iter().filter(|b| **b == 0xff).count(),
                Transport::Raw => bytes.len(),
            };
            let live = end - at;
            let complete = client.dropped.is_none() && !client.closed_unread;
            if !complete {
                // Dropped, or it left without reading: a prefix of what it would have got,
                // after a replay of `kept` bytes or fewer.
                let fits = (0..=kept)
                    .rev()
                    .any(|r| stream[at - r..end].starts_with(strip(client, got)));
                assert!(
                    fits,
                    "{id} on {vm}: got {} bytes, no prefix of its stream",
                    got.len()
                );
                continue;
            }
            let replayed = got.len().saturating_sub(live);
            assert!(
                replayed <= kept,
                "{id} on {vm}: {replayed} bytes replayed of {kept}"
            );
            if framed(&stream[at - kept..at]) + 64 + 512 <= self.setup.output_budget {
                assert_eq!(replayed, kept, "{id}: the scrollback was trimmed");
            }
            let expected = &stream[at - replayed..end];
            assert!(
                got == expected,
                "{id} on {vm} (attached at {at}, left at {end}): got {} bytes, expected {}, first difference at {}",
                got.len(),
                expected.len(),
                first_difference(got, expected)
            );
        }
        // Every VM receives each writer's input exactly once, in order.
        for (i, model) in self.vms.iter().enumerate() {
            if model.garbage || model.input_lossy {
                continue;
            }
            let writers: Vec<&ClientModel> = self
                .clients
                .iter()
                .filter(|c| {
                    h.client(c.id).attached.is_some_and(|(vm, _)| {
                        h.entry_owners
                            .get(&vm)
                            .is_some_and(|o| o.contains(&Some(i)))
                    })
                })
                .collect();
            // Raw bytes from a client, or an entry shared with a raw connection, make the
            // streams unattributable.
            if writers.iter().any(|c| {
                c.garbage
                    || h.client(c.id)
                        .attached
                        .is_some_and(|(vm, _)| self.tainted(&vm))
            }) {
                continue;
            }
            let received = &h.vms[i].received;
            let mut classes: BTreeSet<usize> =
                received.iter().filter_map(|b| class_of(*b)).collect();
            let breaks: usize = self.clients.iter().map(|c| h.client(c.id).breaks).sum();
            for client in writers {
                let hc = h.client(client.id);
                let Some((_, mode)) = hc.attached else {
                    continue;
                };
                classes.remove(&client.class);
                let mine: Vec<u8> = received
                    .iter()
                    .copied()
                    .filter(|b| class_of(*b) == Some(client.class))
                    .collect();
                let bytes_in = hc
                    .bytes_in_at_close
                    .or_else(|| h.core.client(client.id).map(|s| s.bytes_in))
                    .unwrap_or(0) as usize;
                if mode == Mode::ReadOnly {
                    assert_eq!(bytes_in, 0, "{}: a watcher's input was taken", client.id);
                }
                assert!(
                    bytes_in <= hc.typed.len(),
                    "{}: took {bytes_in} of {} typed",
                    client.id,
                    hc.typed.len()
                );
                assert!(
                    mine == hc.typed[..bytes_in],
                    "VM {i} from {} ({mode:?}): got {} bytes, the core took {bytes_in}, first difference at {}",
                    client.id,
                    mine.len(),
                    first_difference(&mine, &hc.typed[..bytes_in])
                );
            }
            assert!(
                classes.is_empty(),
                "VM {i} got input of classes {classes:?} from no client of its"
            );
            assert!(h.vms[i].breaks() <= breaks, "VM {i}: more breaks than sent");
        }
    }
}

/// What a dropped client got before its goodbye.
fn strip<'a>(client: &super::HarnessClient, got: &'a [u8]) -> &'a [u8] {
    let goodbye: &[u8] = match client.dropped {
        Some(DropReason::TooSlow) => {
            b"\r\n[vspc: output buffer overflow: this client reads too slowly and was disconnected]\r\n"
        }
        Some(DropReason::VmRemoved) => b"\r\n[vspc: the VM did not come back; closing]\r\n",
        Some(DropReason::Shutdown) => b"\r\n[vspc: the concentrator is shutting down; goodbye]\r\n",
        Some(DropReason::LineTooLong) => b"\r\nvspc: selection line too long\r\n",
        Some(DropReason::SelectionTimeout) => b"\r\nvspc: no VM chosen in time; goodbye\r\n",
        Some(DropReason::Crowded) => {
            b"\r\nvspc: too many clients are choosing a VM; try again\r\n"
        }
        Some(DropReason::Detached) => b"\r\n[vspc: detached]\r\n",
        None => b"",
    };
    got.strip_suffix(goodbye).unwrap_or(got)
}

fn first_difference(a: &[u8], b: &[u8]) -> usize {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()))
}

/// Reads a scenario from fuzzer bytes: a setup of 6 bytes, then operations of an opcode
/// byte (modulo 25) and its arguments (missing bytes read as zero): `VmSend`, `Type` and
/// `Advance` take a size byte, `VmGarbage`, `ClientWire` and `RawInput` a length byte and
/// that many bytes.
pub fn decode(bytes: &[u8]) -> (Setup, Vec<Op>) {
    let mut input = Input { bytes };
    let a = input.byte();
    let b = input.byte();
    let c = input.byte();
    let d = input.byte();
    let e = input.byte();
    let f = input.byte();
    let setup = Setup {
        vms: usize::from(a % 3) + 1,
        powered: !b & 7,
        read_chunk: match c % 4 {
            0 | 1 => 0,
            2 => 1,
            _ => usize::from((c >> 2) & 0x1f) + 1,
        },
        segmented: c & 0x80 != 0,
        output_budget: 256 + usize::from(d) * 64,
        scrollback: usize::from(e % 128),
        linger: Duration::from_millis(u64::from(f) * 200 + 100),
        max_held: if e & 0x80 != 0 {
            4096
        } else {
            16 + usize::from(e % 64)
        },
        max_pending_to_vm: 32 << ((a >> 2) % 6),
        max_vm_connections: 2 + usize::from((b >> 3) & 7) * 2,
        max_clients: (usize::from(b >> 6) + 1) * 2,
    };
    let mut ops = Vec::new();
    while !input.bytes.is_empty() && ops.len() < 200 {
        let op = input.byte();
        let x = input.byte();
        ops.push(match op % 25 {
            0 => Op::PowerOn(x),
            1 => Op::PowerOff(x),
            2 => Op::Reconnect(x),
            3 => Op::Disconnect(x),
            4 => Op::Cut(x),
            5 | 6 => Op::VmSend(x, u16::from(input.byte()) * 4),
            7 => Op::Vmotion {
                vm: x & 3,
                fin_after: x & 0x10 != 0,
                abort: x & 0x20 != 0,
                stall: x & 0x40 != 0,
            },
            8 => Op::Heal(x),
            9 => Op::StallVm(x & 3, x & 0x80 != 0),
            10 | 11 => Op::Connect {
                vm: x & 3,
                telnet: x & 0x80 != 0,
                how: (x >> 2) & 3,
                mode: (x >> 4) & 3,
            },
            12 => Op::Close(x),
            13 | 14 => Op::Type(x, u16::from(input.byte()) * 2),
            15 => Op::Break(x),
            16 => Op::StallClient(x, x & 0x80 != 0),
            17 | 18 => Op::Advance(u32::from(input.byte()) * 100),
            19 => {
                let n = usize::from(input.byte() % 32);
                Op::VmGarbage(x, input.take(n))
            }
            20 => {
                let n = usize::from(input.byte() % 32);
                Op::ClientWire(x, input.take(n))
            }
            21 => Op::RawConnect,
            22 => {
                let n = usize::from(input.byte());
                Op::RawInput(x, input.take(n))
            }
            23 => Op::RawClose(x),
            _ => {
                let n = usize::from(input.byte() % 8);
                Op::ComPort(x, input.take(n))
            }
        });
    }
    (setup, ops)
}

struct Input<'a> {
    bytes: &'a [u8],
}

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.bytes.split_first() {
            Some((&b, rest)) => {
                self.bytes = rest;
                b
            }
            None => 0,
        }
    }

    fn take(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.bytes.len());
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        head.to_vec()
    }
}

/// Runs a scenario to its end and checks every invariant; panics on a violation.
pub fn run(setup: Setup, ops: &[Op]) {
    let mut scenario = Scenario::new(setup);
    for op in ops {
        scenario.apply(op);
    }
    scenario.finish();
}

/// The fuzz target's check: fuzzer bytes as a scenario.
pub fn check(bytes: &[u8]) {
    let (setup, ops) = decode(bytes);
    run(setup, &ops);
}
