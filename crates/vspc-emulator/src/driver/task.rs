//! One VM's task: the IO loop around the sans-IO [`EmulatedVm`].
//!
//! Each turn: under the VM's lock, fire due timers, take the transmits and events (and a stop
//! request); outside it, carry the transmits out in order (connect, write, FIN) and deliver
//! the events; then wait for a command (the handle's kick), a readable connection or the next
//! deadline. Nothing is awaited while the lock is held.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

use super::link::{Link, Ready, READ_BUFFER};
use super::{now, Event, EventKind, Report, Shared, Target};
use crate::connection::ConnId;
use crate::vm::{EmulatorEvent, Transmit};

pub(super) struct Driver {
    n: u64,
    shared: Arc<Shared>,
    target: Target,
    events: Option<mpsc::Sender<Event>>,
    client_data: bool,
    /// Open connections (the current one and, during a vMotion, the destination).
    links: Vec<(ConnId, Link)>,
    transmits: VecDeque<Transmit>,
    pending: VecDeque<Event>,
    migrating: bool,
}

enum Wake {
    Kick,
    Timer,
    Ready(ConnId, Ready),
}

impl Driver {
    pub(super) fn new(
        n: u64,
        shared: Arc<Shared>,
        target: Target,
        events: Option<mpsc::Sender<Event>>,
        client_data: bool,
    ) -> Self {
        Driver {
            n,
            shared,
            target,
            events,
            client_data,
            links: Vec::with_capacity(2),
            transmits: VecDeque::new(),
            pending: VecDeque::new(),
            migrating: false,
        }
    }

    pub(super) async fn run(mut self) -> Report {
        self.shared.lock().vm.power_on(now());
        loop {
            let (deadline, stop) = self.take_work();
            self.carry_out().await;
            self.deliver().await;
            if stop {
                break;
            }
            let wake = self.wait(deadline).await;
            match wake {
                Wake::Kick | Wake::Timer => {}
                Wake::Ready(conn, ready) => self.read(conn, ready),
            }
        }
        for (_, mut link) in self.links.drain(..) {
            link.shutdown().await;
        }
        self.shared.lock().report()
    }

    /// Under the lock: timers, transmits, events, the stop request. Returns the next deadline
    /// and whether to stop.
    fn take_work(&mut self) -> (Option<Instant>, bool) {
        let mut state = self.shared.lock();
        let now = now();
        let stop = state.stop;
        if stop {
            state.vm.power_off();
        } else if state.vm.poll_timeout().is_some_and(|at| at <= now) {
            state.vm.handle_timeout(now);
        }
        while let Some(transmit) = state.vm.poll_transmit() {
            if let Transmit::Open { conn } = transmit {
                if state.vm.destination_conn() == Some(conn) {
                    self.pending.push_back(
                        self.event(now, EventKind::VmotionGoahead { destination: conn }),
                    );
                }
            }
            self.transmits.push_back(transmit);
        }
        let migrating = state.vm.is_migrating();
        if migrating && !self.migrating {
            if let Some(conn) = state.vm.current_conn() {
                // Before the GOAHEAD of the same turn, if any.
                let begun = self.event(now, EventKind::VmotionBegun { conn });
                let at = self
                    .pending
                    .iter()
                    .position(|e| matches!(e.kind, EventKind::VmotionGoahead { .. }))
                    .unwrap_or(self.pending.len());
                self.pending.insert(at, begun);
            }
        }
        self.migrating = migrating;
        while let Some(event) = state.vm.poll_event() {
            if self.client_data || !matches!(event, EmulatorEvent::ClientData { .. }) {
                self.pending
                    .push_back(self.event(now, EventKind::Emulator(event)));
            }
        }
        (state.vm.poll_timeout(), stop)
    }

    fn event(&self, at: Instant, kind: EventKind) -> Event {
        Event {
            vm: self.n,
            at,
            kind,
        }
    }

    /// Carries out the transmits in order; a failure goes back to the VM at once, and what
    /// it makes the VM do (a reconnect, an abort on the source) joins the queue.
    async fn carry_out(&mut self) {
        while let Some(transmit) = self.transmits.pop_front() {
            match transmit {
                Transmit::Open { conn } => self.open(conn).await,
                Transmit::Write { conn, bytes } => {
                    let Some(at) = self.links.iter().position(|(c, _)| *c == conn) else {
                        continue; // never connected, or already failed
                    };
                    if let Err(error) = self.links[at].1.write_all(&bytes).await {
                        self.links.swap_remove(at);
                        self.failed(conn, EventKind::Io { conn, error });
                    }
                }
                Transmit::Close { conn } => {
                    if let Some(at) = self.links.iter().position(|(c, _)| *c == conn) {
                        let (_, mut link) = self.links.swap_remove(at);
                        link.shutdown().await;
                    }
                }
            }
        }
    }

    async fn open(&mut self, conn: ConnId) {
        let (target, keep_idle) = {
            let mut state = self.shared.lock();
            let destination = if state.vm.destination_conn() == Some(conn) {
                state.destination.take()
            } else {
                None
            };
            (
                destination.unwrap_or_else(|| self.target.clone()),
                state.vm.config().port.keep_idle,
            )
        };
        match target.connect(self.n, keep_idle).await {
            Ok(link) => {
                let tls = link.is_tls();
                self.links.push((conn, link));
                self.shared.lock().connected += 1;
                self.pending
                    .push_back(self.event(now(), EventKind::Connected { conn, tls }));
            }
            Err(error) => self.failed(conn, EventKind::ConnectFailed { conn, error }),
        }
    }

    /// A connection failed: counted, reported, and closed at the VM, whose reaction (new
    /// transmits, events) is taken at once.
    fn failed(&mut self, conn: ConnId, kind: EventKind) {
        let now = now();
        self.pending.push_back(self.event(now, kind));
        let mut state = self.shared.lock();
        state.io_errors += 1;
        state.vm.handle_closed(now, conn);
        drop(state);
        self.take_reactions();
    }

    /// The VM's transmits and events after an input, without firing timers.
    fn take_reactions(&mut self) {
        let mut state = self.shared.lock();
        let now = now();
        while let Some(transmit) = state.vm.poll_transmit() {
            self.transmits.push_back(transmit);
        }
        while let Some(event) = state.vm.poll_event() {
            if self.client_data || !matches!(event, EmulatorEvent::ClientData { .. }) {
                self.pending
                    .push_back(self.event(now, EventKind::Emulator(event)));
            }
        }
    }

    /// Delivers the events (waiting while the channel is full; dropped if nobody listens).
    async fn deliver(&mut self) {
        while let Some(event) = self.pending.pop_front() {
            if let Some(events) = &self.events {
                if events.send(event).await.is_err() {
                    self.events = None;
                }
            }
        }
    }

    async fn wait(&mut self, deadline: Option<Instant>) -> Wake {
        let shared = self.shared.clone();
        let mut links = self.links.iter_mut();
        let first = links.next();
        let second = links.next();
        let sleep = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = shared.kick.notified() => Wake::Kick,
            () = sleep => Wake::Timer,
            (conn, ready) = ready(first) => Wake::Ready(conn, ready),
            (conn, ready) = ready(second) => Wake::Ready(conn, ready),
        }
    }

    /// One read from `conn` into the VM (a plain function: the TCP read buffer lives on the
    /// stack only while reading, not in the task).
    fn read(&mut self, conn: ConnId, ready: Ready) {
        let Some(at) = self.links.iter().position(|(c, _)| *c == conn) else {
            return;
        };
        let mut stack = [0u8; READ_BUFFER];
        let link = &self.links[at].1;
        let (result, bytes): (std::io::Result<usize>, &[u8]) = match ready {
            Ready::Readable => match link.try_read(&mut stack) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Ok(len) => (Ok(len), &stack[..len]),
                Err(e) => (Err(e), &[]),
            },
            Ready::Read(Ok(len)) => (Ok(len), link.tls_buffer(len)),
            Ready::Read(Err(e)) => (Err(e), &[]),
        };
        let now = now();
        match result {
            Ok(0) => {
                self.shared.lock().vm.handle_closed(now, conn);
                self.links.swap_remove(at);
            }
            Ok(_) => self.shared.lock().vm.handle_input(now, conn, bytes),
            Err(error) => {
                self.links.swap_remove(at);
                self.failed(conn, EventKind::Io { conn, error });
            }
        }
    }
}

/// Waits on one link, or forever when there is none.
async fn ready(link: Option<&mut (ConnId, Link)>) -> (ConnId, Ready) {
    match link {
        Some((conn, link)) => (*conn, link.ready().await),
        None => std::future::pending().await,
    }
}
