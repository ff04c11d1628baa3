//! Shared test helpers: the test kit's hex, clock and ESXi captures (docs/esxi-wire.md), a
//! semantic view of telnet streams and an in-memory world (an [`Endpoint`] and VM sessions on a simulated clock).
#![allow(dead_code, clippy::unwrap_used, clippy::panic, unreachable_pub)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use vspc_proto::vspc_telnet::{Decoder, Event, Verb};
use vspc_proto::*;
pub use vspc_testkit::esxi::*;
pub use vspc_testkit::{epoch as t0, hex};

/// A semantic item of a telnet stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Neg(Verb, u8),
    Msg(Message),
    Sub(u8, Vec<u8>),
    Data(Vec<u8>),
    Other(String),
}

/// Decodes a whole stream (binary mode) into items, data runs coalesced.
pub fn items(bytes: &[u8]) -> Vec<Item> {
    let mut decoder = Decoder::new();
    decoder.set_binary(true);
    let mut out: Vec<Item> = Vec::new();
    decoder.decode(bytes, |event| match event {
        Event::Data(d) => {
            if let Some(Item::Data(prev)) = out.last_mut() {
                prev.extend_from_slice(d);
            } else {
                out.push(Item::Data(d.to_vec()));
            }
        }
        Event::Negotiation { verb, option } => out.push(Item::Neg(verb, option)),
        Event::Subnegotiation {
            option: 232,
            payload,
        } => out.push(Item::Msg(Message::parse(payload).unwrap())),
        Event::Subnegotiation { option, payload } => out.push(Item::Sub(option, payload.to_vec())),
        other => out.push(Item::Other(format!("{other:?}"))),
    });
    out
}

pub fn messages(bytes: &[u8]) -> Vec<Message> {
    items(bytes)
        .into_iter()
        .filter_map(|i| match i {
            Item::Msg(m) => Some(m),
            _ => None,
        })
        .collect()
}

/// A secret source that hands out the given secrets in turn (then repeats the last).
pub fn fixed_secrets(secrets: Vec<Vec<u8>>) -> impl SecretSource {
    let mut i = 0usize;
    move |out: &mut [u8]| {
        let s = &secrets[i.min(secrets.len() - 1)];
        i += 1;
        out.copy_from_slice(&s[..out.len()]);
        Ok(())
    }
}

/// An endpoint configuration whose sessions use `proxy`.
pub fn endpoint_config(proxy: ProxyConfig) -> EndpointConfig {
    EndpointConfig {
        proxy: Arc::new(proxy),
        ..EndpointConfig::default()
    }
}

/// Whether `event` concerns connection `id` ([`EndpointEvent::Moved`] concerns both ends).
pub fn involves(event: &EndpointEvent, id: SessionId) -> bool {
    event.conn() == id || matches!(event, EndpointEvent::Moved { from, .. } if *from == id)
}

/// Whether `event` is part of a vMotion's life (a request, an answer or an outcome).
pub fn is_vmotion(event: &EndpointEvent) -> bool {
    matches!(
        event,
        EndpointEvent::BeginRequested { .. }
            | EndpointEvent::BeginAnswered { .. }
            | EndpointEvent::PeerRequested { .. }
            | EndpointEvent::PeerAnswered { .. }
            | EndpointEvent::Moved { .. }
            | EndpointEvent::CompleteRefused { .. }
            | EndpointEvent::VmotionAborted { .. }
            | EndpointEvent::VmotionExpired { .. }
            | EndpointEvent::SourceClosed { .. }
            | EndpointEvent::Closed { .. }
    )
}

/// The application around an [`Endpoint`]: the endpoint does all the vMotion routing; the
/// application only follows the VM for its clients and records every event.
pub struct App {
    pub now: Instant,
    pub endpoint: Endpoint,
    /// The connection currently carrying the VM (client data goes there).
    pub current: Option<SessionId>,
    /// VM-to-client bytes, as the clients see them.
    pub client_rx: Vec<u8>,
    /// Every endpoint event so far.
    pub events: Vec<EndpointEvent>,
}

impl App {
    /// An application whose coordinator draws secrets from the OS.
    pub fn new(config: EndpointConfig) -> Self {
        App::with_endpoint(Endpoint::new(config))
    }

    /// An application whose coordinator hands out `secrets` (hex) in turn.
    pub fn with_secrets(config: EndpointConfig, secrets: &[&str]) -> Self {
        let secrets = fixed_secrets(secrets.iter().map(|s| hex(s)).collect());
        App::with_endpoint(Endpoint::with_secret_source(config, secrets))
    }

    fn with_endpoint(endpoint: Endpoint) -> Self {
        App {
            now: t0(),
            endpoint,
            current: None,
            client_rx: Vec::new(),
            events: Vec::new(),
        }
    }

    /// A new VM connection (its opening offers are queued).
    pub fn connect(&mut self) -> SessionId {
        self.endpoint.connect(())
    }

    /// The session of a connection the endpoint still holds.
    pub fn session(&self, id: SessionId) -> &ProxySession {
        self.endpoint.session(id).unwrap()
    }

    /// Bytes read from connection `id`; returns the events they caused.
    pub fn input(&mut self, id: SessionId, bytes: &[u8]) -> Vec<EndpointEvent> {
        let now = self.now;
        self.endpoint
            .handle_input(now, id, &Bytes::copy_from_slice(bytes));
        self.process()
    }

    /// Everything queued for connection `id`.
    pub fn transmit(&mut self, id: SessionId) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(bytes) = self.endpoint.poll_transmit(id) {
            out.extend_from_slice(&bytes);
        }
        out
    }

    /// Drains the endpoint's events, following the VM for the clients; returns them.
    pub fn process(&mut self) -> Vec<EndpointEvent> {
        let mut new = Vec::new();
        while let Some(event) = self.endpoint.poll_event() {
            match &event {
                EndpointEvent::Data { conn, bytes }
                    if self.current.is_none() || self.current == Some(*conn) =>
                {
                    self.client_rx.extend_from_slice(bytes);
                }
                EndpointEvent::Ready { conn } if self.current.is_none() => {
                    self.current = Some(*conn);
                }
                EndpointEvent::Moved { from, to, .. } if self.current == Some(*from) => {
                    self.current = Some(*to);
                }
                EndpointEvent::Closed { conn, reason, .. }
                    if self.current == Some(*conn)
                        && !matches!(reason, CloseReason::MovedAway { .. }) =>
                {
                    self.current = None;
                }
                EndpointEvent::Data { .. }
                | EndpointEvent::Ready { .. }
                | EndpointEvent::Moved { .. }
                | EndpointEvent::Closed { .. }
                | EndpointEvent::Identified { .. }
                | EndpointEvent::KnownSuboptions { .. }
                | EndpointEvent::ProxyRequested { .. }
                | EndpointEvent::BeginRequested { .. }
                | EndpointEvent::BeginAnswered { .. }
                | EndpointEvent::PeerRequested { .. }
                | EndpointEvent::PeerAnswered { .. }
                | EndpointEvent::CompleteRefused { .. }
                | EndpointEvent::VmotionAborted { .. }
                | EndpointEvent::VmotionExpired { .. }
                | EndpointEvent::SourceClosed { .. }
                | EndpointEvent::ComPort { .. }
                | EndpointEvent::UnknownSuboptionReported { .. }
                | EndpointEvent::Command { .. }
                | EndpointEvent::OptionChanged { .. }
                | EndpointEvent::ProtocolError { .. } => {}
            }
            self.events.push(event.clone());
            new.push(event);
        }
        new
    }

    /// The VM connection `id` reached EOF; returns the events it caused.
    pub fn close(&mut self, id: SessionId) -> Vec<EndpointEvent> {
        let now = self.now;
        self.endpoint.handle_close(now, id);
        self.process()
    }

    /// Client data for the VM.
    pub fn client_send(&mut self, data: &[u8]) {
        let id = self.current.unwrap();
        self.endpoint.send_data(id, data).unwrap();
    }

    /// Fires the endpoint's timers if due.
    pub fn timeouts(&mut self) {
        let now = self.now;
        if self.endpoint.poll_timeout().is_some_and(|t| t <= now) {
            self.endpoint.handle_timeout(now);
        }
        self.process();
    }

    /// The events about connection `id` so far.
    pub fn events_of(&self, id: SessionId) -> Vec<EndpointEvent> {
        self.events
            .iter()
            .filter(|e| involves(e, id))
            .cloned()
            .collect()
    }

    /// The vMotion events so far (requests, answers, outcomes, closes), in order.
    pub fn vmotion_events(&self) -> Vec<EndpointEvent> {
        self.events
            .iter()
            .filter(|e| is_vmotion(e))
            .cloned()
            .collect()
    }
}

/// A VM connection in the world: its VM side and the bytes each way.
pub struct Link {
    pub vm: VmSession,
    pub vm_events: Vec<VmEvent>,
    /// Client-to-VM data the VM received.
    pub vm_rx: Vec<u8>,
    /// Everything the VM wrote.
    pub vm_out: Vec<u8>,
    /// Everything the proxy wrote.
    pub proxy_out: Vec<u8>,
    pub open: bool,
}

impl Link {
    pub fn new(vm: VmSession) -> Self {
        Link {
            vm,
            vm_events: Vec::new(),
            vm_rx: Vec::new(),
            vm_out: Vec::new(),
            proxy_out: Vec::new(),
            open: true,
        }
    }
}

/// An endpoint, VM sessions and a simulated clock, delivering every write in chunks of
/// `chunk` bytes.
pub struct World {
    pub app: App,
    pub links: BTreeMap<SessionId, Link>,
    pub chunk: usize,
}

impl World {
    /// A world whose coordinator draws secrets from the OS.
    pub fn new(config: EndpointConfig) -> Self {
        World::with_app(App::new(config))
    }

    /// A world whose coordinator hands out `secrets` (hex) in turn.
    pub fn with_secrets(config: EndpointConfig, secrets: &[&str]) -> Self {
        World::with_app(App::with_secrets(config, secrets))
    }

    fn with_app(app: App) -> Self {
        World {
            app,
            links: BTreeMap::new(),
            chunk: usize::MAX,
        }
    }

    /// A VM connects; runs until quiet.
    pub fn connect(&mut self, vm: VmConfig) -> SessionId {
        let id = self.app.connect();
        let vm = VmSession::new(self.app.now, vm);
        self.links.insert(id, Link::new(vm));
        self.run();
        id
    }

    pub fn link(&mut self, id: SessionId) -> &mut Link {
        self.links.get_mut(&id).unwrap()
    }

    /// Moves bytes until both sides of every open link are quiet.
    pub fn run(&mut self) {
        for _ in 0..10_000 {
            let mut moved = false;
            let ids: Vec<SessionId> = self.links.keys().copied().collect();
            for id in ids {
                let now = self.app.now;
                let link = self.links.get_mut(&id).unwrap();
                if !link.open {
                    continue;
                }
                while let Some(bytes) = link.vm.poll_transmit() {
                    link.vm_out.extend_from_slice(&bytes);
                    moved = true;
                    for part in bytes.chunks(self.chunk.max(1)) {
                        self.app
                            .endpoint
                            .handle_input(now, id, &Bytes::copy_from_slice(part));
                        self.app.process();
                    }
                }
                self.app.process();
                while let Some(bytes) = self.app.endpoint.poll_transmit(id) {
                    link.proxy_out.extend_from_slice(&bytes);
                    moved = true;
                    for part in bytes.chunks(self.chunk.max(1)) {
                        link.vm.handle_input(now, &Bytes::copy_from_slice(part));
                    }
                }
                while let Some(e) = link.vm.poll_event() {
                    if let VmEvent::Data(d) = &e {
                        link.vm_rx.extend_from_slice(d);
                    }
                    link.vm_events.push(e);
                }
            }
            // Connections whose VM side closed may still have bytes queued: never read.
            if !moved {
                return;
            }
        }
        panic!("no quiescence");
    }

    /// Advances the clock, firing every due timer, and runs.
    pub fn advance(&mut self, by: Duration) {
        self.app.now += by;
        let now = self.app.now;
        for link in self.links.values_mut() {
            if link.vm.poll_timeout().is_some_and(|t| t <= now) {
                link.vm.handle_timeout(now);
            }
        }
        self.app.timeouts();
        self.run();
    }

    /// The VM side of `id` closes its connection (FIN): the proxy sees EOF. Returns the
    /// events the close caused.
    pub fn fin(&mut self, id: SessionId) -> Vec<EndpointEvent> {
        self.run();
        self.link(id).open = false;
        self.app.close(id)
    }

    pub fn vm_send(&mut self, id: SessionId, data: &[u8]) {
        self.link(id).vm.send_data(data);
        self.run();
    }

    pub fn client_send(&mut self, data: &[u8]) {
        self.app.client_send(data);
        self.run();
    }

    /// The events about connection `id` so far.
    pub fn events_of(&self, id: SessionId) -> Vec<EndpointEvent> {
        self.app.events_of(id)
    }
}
