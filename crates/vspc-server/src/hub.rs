//! The hub: the sans-IO [`Concentrator`] behind one `std::sync::Mutex`, plus what only the
//! IO layer has: tasks' wakers, console log files, sticky listeners, embedders'
//! subscriptions and the timer's kick.
//!
//! Connection tasks lock the hub for short, non-async critical sections (one core call, then
//! [`Hub::settle`]) and never hold it across an `.await`. `settle` drains the core's
//! wakeups (waking the tasks with something to write) and events (logs, subscribers,
//! sticky ports), and kicks the timer when the core's next deadline moved earlier.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::task::Waker;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio::sync::{mpsc, Notify};
use vspc_concentrator::{
    AttachError, ClientId, Concentrator, DropReason, Event, VmId, VmTransmit, Wakeup,
};
use vspc_proto::SessionId;

use crate::audit::Audit;
use crate::cluster::{digest, Cluster, Gate, Ownership, SitePort, Work};
use crate::config::ServerConfig;
use crate::embed::{ConsoleChunk, VmEvent};
use crate::link::LinkSignals;
use crate::logs::{file_name, ConsoleLog};
use crate::Shared;

/// How a client task is told about its connection.
#[derive(Debug, Default)]
pub(crate) struct ClientSignals {
    /// Output is queued, or the client is closing.
    pub(crate) output: Notify,
    /// Its input may flow again.
    pub(crate) input: Notify,
    /// The reader waits on `input` (most of the time it waits on its socket instead, and a
    /// wakeup for output need not touch it).
    pub(crate) reader_waiting: std::sync::atomic::AtomicBool,
    /// It is being dropped: abandon a write in progress (it may have stopped reading).
    pub(crate) kill: Notify,
}

/// A VM entry's own client listener.
pub(crate) struct Sticky {
    pub(crate) addr: std::net::SocketAddr,
    pub(crate) task: tokio::task::AbortHandle,
}

/// How long a destination's instance keeps asking for a handover record that is not there
/// yet: the owner stores it while its GOAHEAD travels, and a destination may be quicker
/// than the store, more so under load.
const CLAIM_PATIENCE: Duration = Duration::from_secs(3);

/// Claims a handover record, asking again for a moment when there is none yet: first after
/// a pause of a couple of milliseconds (usually the record is a store round trip behind),
/// then with pauses doubling up to a quarter second, until [`CLAIM_PATIENCE`].
async fn claim_patiently(
    state: &dyn crate::SharedState,
    digest: &str,
) -> Result<Option<SocketAddr>, crate::SharedStateError> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(2);
    loop {
        match state.claim(digest).await {
            Ok(None) if started.elapsed() + pause < CLAIM_PATIENCE => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(250));
            }
            answer => return answer,
        }
    }
}

/// Capacity of an embedder's subscription, in messages; a subscriber that falls this far
/// behind is cut off (its receiver ends) rather than stall a VM or grow without bound.
pub(crate) const SUBSCRIPTION_CAPACITY: usize = 4096;

pub(crate) struct Hub {
    pub(crate) core: Concentrator,
    config: Arc<ServerConfig>,
    /// VM connection tasks waiting for something to write.
    vm_wakers: HashMap<SessionId, Waker>,
    clients: HashMap<ClientId, Arc<ClientSignals>>,
    /// Console logs by VM entry (with a log directory).
    logs: HashMap<VmId, ConsoleLog>,
    /// Logs written since the last flush.
    unflushed: HashSet<VmId>,
    /// Which entry each log file belongs to: one file per VM port.
    log_files: HashMap<std::path::PathBuf, VmId>,
    /// VM connections refused by `vm.allow`.
    pub(crate) vm_denied: u64,
    /// Per-connection limit on log lines a VM can cause.
    pub(crate) log_limit: LogLimiter,
    pub(crate) sticky: HashMap<VmId, Sticky>,
    /// VMs waiting for a sticky listener (bound outside the lock).
    sticky_tx: Option<mpsc::Sender<VmId>>,
    vm_event_subs: Vec<mpsc::Sender<VmEvent>>,
    console_subs: Vec<(Option<VmId>, mpsc::Sender<ConsoleChunk>)>,
    /// Wakes the timer task when a deadline is earlier than the one it sleeps to.
    timer: Arc<Notify>,
    timer_at: Option<Instant>,
    /// When the core was made, on both clocks (to show vMotion records in wall time).
    pub(crate) started: (Instant, SystemTime),
    /// vMotions shared with other instances, and the way back to the hub for the tasks that
    /// talk to the shared state.
    cluster: Option<(Cluster, Weak<Shared>)>,
    /// Destination connections to carry to the instance that holds their vMotion.
    handoffs: HashMap<SessionId, SocketAddr>,
    /// Shared vMotions: destinations carried to their owner, PEERs refused for want of a
    /// record (or of the store), and GOAHEADs the store did not record.
    pub(crate) cluster_counts: ClusterCounts,
    /// Where client events are recorded.
    pub(crate) audit: Arc<Audit>,
    /// With a shared state: this instance's VM ports and their leases.
    pub(crate) owners: Option<Ownership>,
    /// Clients attached to a VM another instance holds: their link's tasks.
    links: HashMap<ClientId, Arc<LinkSignals>>,
}

/// What sharing vMotions did, for the metrics.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ClusterCounts {
    pub(crate) carried: u64,
    pub(crate) refused: u64,
    pub(crate) unavailable: u64,
    pub(crate) unshared: u64,
}

impl Hub {
    pub(crate) fn new(
        config: Arc<ServerConfig>,
        timer: Arc<Notify>,
        now: Instant,
        shared_vmotions: bool,
    ) -> Hub {
        let mut core_config = config.concentrator();
        core_config.shared_vmotions = shared_vmotions;
        // A clustered instance asks the site for a VM it does not hold.
        core_config.site_directory = shared_vmotions;
        let mut core = Concentrator::new(core_config);
        if config.log.dir.is_some() {
            core.set_console_events(true);
        }
        Hub {
            core,
            config,
            vm_wakers: HashMap::new(),
            clients: HashMap::new(),
            logs: HashMap::new(),
            unflushed: HashSet::new(),
            log_files: HashMap::new(),
            vm_denied: 0,
            log_limit: LogLimiter::default(),
            sticky: HashMap::new(),
            sticky_tx: None,
            vm_event_subs: Vec::new(),
            console_subs: Vec::new(),
            timer,
            timer_at: None,
            started: (now, SystemTime::now()),
            cluster: None,
            handoffs: HashMap::new(),
            cluster_counts: ClusterCounts::default(),
            audit: Arc::new(Audit::none()),
            owners: None,
            links: HashMap::new(),
        }
    }

    pub(crate) fn set_cluster(
        &mut self,
        cluster: Cluster,
        owners: Ownership,
        shared: Weak<Shared>,
    ) {
        self.cluster = Some((cluster, shared));
        self.owners = Some(owners);
    }

    /// The shared state, with a cluster.
    pub(crate) fn shared_state(&self) -> Option<Arc<dyn crate::SharedState>> {
        self.cluster.as_ref().map(|(c, _)| c.state.clone())
    }

    /// Entry `vm` has a live connection: its port joins this instance's leases (not a
    /// duplicate flagged within this instance: the first connection holds the port).
    fn port_connected(&mut self, vm: VmId) {
        let Some(owners) = self.owners.as_mut() else {
            return;
        };
        if let Some(info) = self.core.vm(vm).filter(|v| v.flagged.is_none()) {
            owners.connected(
                vm,
                SitePort {
                    uuid: info.vc_uuid,
                    service_uri: info.service_uri,
                    name: info.name,
                },
            );
        }
    }

    /// The lease task's next round (`None` once the cluster is gone).
    pub(crate) fn lease_work(&mut self, renewal: bool, full: bool) -> Option<Work> {
        self.owners.as_mut().map(|o| o.work(renewal, full))
    }

    /// The store did not take the lease task's releases: count it, and ask again.
    pub(crate) fn lease_release_failed(&mut self, ports: Vec<crate::SitePort>) {
        if let Some(owners) = self.owners.as_mut() {
            owners.errors += 1;
            owners.release_failed(ports);
        }
    }

    /// Applies a round's answers: output kept for the ports now held is logged, stale
    /// connections are closed, and vMotions are answered NOTNOW while the store is away.
    pub(crate) fn lease_settle(
        &mut self,
        work: Work,
        answers: Option<Result<Vec<crate::Holding>, crate::SharedStateError>>,
    ) {
        let Some(owners) = self.owners.as_mut() else {
            return;
        };
        let settled = owners.settle(work, answers);
        let store_up = owners.store_up();
        self.core.hold_vmotions(!store_up);
        for (vm, bytes) in settled.logs {
            self.log_write(vm, &bytes);
        }
        for (vm, _) in settled.stale {
            self.core.close_vm(vm);
        }
        self.settle();
    }

    /// Whether vMotions are shared with other instances.
    pub(crate) fn is_clustered(&self) -> bool {
        self.cluster.is_some()
    }

    /// Where the VM connection `conn` is to be carried, once (see `cluster`).
    pub(crate) fn take_handoff(&mut self, conn: SessionId) -> Option<SocketAddr> {
        if self.handoffs.is_empty() {
            return None;
        }
        self.handoffs.remove(&conn)
    }

    pub(crate) fn set_sticky_sender(&mut self, tx: mpsc::Sender<VmId>) {
        self.sticky_tx = Some(tx);
    }

    pub(crate) fn register_client(&mut self, client: ClientId) -> Arc<ClientSignals> {
        let signals = Arc::new(ClientSignals::default());
        self.clients.insert(client, signals.clone());
        signals
    }

    pub(crate) fn client_closed(&mut self, client: ClientId) {
        if let Some(c) = self.core.client(client) {
            let vm = self.core.client_vm(client);
            self.audit.record(
                "detach",
                &[
                    ("client", &client.0),
                    ("user", &c.user.as_deref().unwrap_or("-")),
                    ("peer", &c.peer),
                    ("vm", &vm.map_or(0, |v| v.0)),
                    ("bytes_in", &c.bytes_in),
                    ("bytes_out", &c.bytes_out),
                ],
            );
        }
        self.core.handle_client_closed(client);
        self.clients.remove(&client);
        if let Some(link) = self.links.remove(&client) {
            link.wake();
        }
        self.settle();
    }

    /// A link to another instance now carries `client`'s remote VM: its tasks' signals.
    pub(crate) fn link_opened(&mut self, client: ClientId) -> Arc<LinkSignals> {
        let signals = Arc::new(LinkSignals::default());
        if let Some(old) = self.links.insert(client, signals.clone()) {
            old.wake();
        }
        signals
    }

    /// Whether `signals` is `client`'s current link (a client back at its menu may have
    /// chosen another since).
    pub(crate) fn link_is(&self, client: ClientId, signals: &Arc<LinkSignals>) -> bool {
        self.links
            .get(&client)
            .is_some_and(|current| Arc::ptr_eq(current, signals))
    }

    /// Forgets `client`'s link `signals`; whether it was the current one.
    pub(crate) fn link_closed(&mut self, client: ClientId, signals: &Arc<LinkSignals>) -> bool {
        let current = self.link_is(client, signals);
        if current {
            self.links.remove(&client);
        }
        current
    }

    /// The next write for a VM connection; on `Idle` the task's waker is kept.
    pub(crate) fn take_vm_transmit(&mut self, conn: SessionId, waker: &Waker) -> VmTransmit {
        let next = self.core.poll_vm_transmit(conn);
        if next == VmTransmit::Idle {
            match self.vm_wakers.get_mut(&conn) {
                Some(held) if held.will_wake(waker) => {}
                Some(held) => held.clone_from(waker),
                None => {
                    self.vm_wakers.insert(conn, waker.clone());
                }
            }
        }
        self.settle();
        next
    }

    pub(crate) fn vm_finished(&mut self, now: Instant, conn: SessionId) {
        self.core.handle_vm_closed(now, conn);
        self.vm_wakers.remove(&conn);
        self.log_limit.forget(conn);
        self.settle();
    }

    pub(crate) fn subscribe_vm_events(&mut self) -> mpsc::Receiver<VmEvent> {
        let (tx, rx) = mpsc::channel(SUBSCRIPTION_CAPACITY);
        self.vm_event_subs.push(tx);
        rx
    }

    pub(crate) fn subscribe_console(&mut self, vm: Option<VmId>) -> mpsc::Receiver<ConsoleChunk> {
        let (tx, rx) = mpsc::channel(SUBSCRIPTION_CAPACITY);
        self.core.set_console_events(true);
        self.console_subs.push((vm, tx));
        rx
    }

    /// After every core call: wake whoever has something to do, act on events, and make the
    /// timer sleep no later than the core's next deadline.
    pub(crate) fn settle(&mut self) {
        while let Some(wakeup) = self.core.poll_wakeup() {
            match wakeup {
                Wakeup::Vm(conn) => {
                    if let Some(waker) = self.vm_wakers.remove(&conn) {
                        waker.wake();
                    }
                }
                Wakeup::Client(client) => {
                    if let Some(link) = self.links.get(&client) {
                        link.wake();
                    }
                    if let Some(signals) = self.clients.get(&client) {
                        signals.output.notify_one();
                        if signals
                            .reader_waiting
                            .load(std::sync::atomic::Ordering::Acquire)
                        {
                            signals.input.notify_one();
                        }
                    }
                }
            }
        }
        while let Some(event) = self.core.poll_event() {
            self.on_event(event);
        }
        if let Some(at) = self.core.poll_timeout() {
            if self.timer_at.is_none_or(|t| at < t) {
                self.timer_at = Some(at);
                self.timer.notify_one();
            }
        }
    }

    /// What the timer task should sleep to: the core's next deadline, but at least once per
    /// `tick` (console log flushes).
    pub(crate) fn next_deadline(&mut self, now: Instant, tick: Duration) -> Instant {
        let at = self
            .core
            .poll_timeout()
            .map_or(now + tick, |at| at.min(now + tick));
        self.timer_at = Some(at);
        at
    }

    pub(crate) fn on_timer(&mut self, now: Instant) {
        self.core.handle_timeout(now);
        self.settle();
        self.flush_logs();
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::VmAdded { vm, conn, flagged } => {
                if let Some(info) = self.core.vm(vm) {
                    match &flagged {
                        // VM-controlled text is logged with `?`: control characters come out
                        // escaped, so a VM cannot forge or rewrite log lines.
                        None => tracing::info!(vm = vm.0, session = conn.0, uuid = ?info.vc_uuid,
                            label = ?info.label, name = ?info.name, "new VM"),
                        Some(reason) => {
                            tracing::warn!(vm = vm.0, session = conn.0, uuid = ?info.vc_uuid,
                            "second live connection claims a held identity without a vMotion secret: {reason}")
                        }
                    }
                    self.publish(VmEvent::Added {
                        vm,
                        name: info.name,
                        vc_uuid: info.vc_uuid,
                        label: info.label,
                        flagged: flagged.is_some(),
                    });
                }
                if flagged.is_none() {
                    self.port_connected(vm);
                }
                if let Some(tx) = &self.sticky_tx {
                    // Never blocks under the lock; a full queue means a connect storm: that
                    // entry goes without a sticky port (the menu serves).
                    if tx.try_send(vm).is_err() {
                        tracing::warn!(
                            vm = vm.0,
                            "sticky port requests backlogged: none for this VM"
                        );
                    }
                }
            }
            Event::VmReconnected { vm, conn } => {
                tracing::info!(
                    vm = vm.0,
                    session = conn.0,
                    "VM reconnected: re-attached to its entry (clients, log, scrollback kept)"
                );
                self.port_connected(vm);
                self.publish(VmEvent::Reconnected { vm });
            }
            Event::VmRenamed { vm } => {
                if let Some(info) = self.core.vm(vm) {
                    self.publish(VmEvent::Renamed {
                        vm,
                        name: info.name,
                    });
                }
            }
            Event::Vmotion { vm, conn, step } => {
                if self.log_limit.allow(conn) {
                    tracing::info!(vm = vm.map(|v| v.0), session = conn.0, %step, "vMotion");
                }
            }
            Event::VmMoved { vm, from, to } => {
                tracing::info!(vm = vm.0, from = from.0, to = to.0, "VM moved by vMotion");
                self.publish(VmEvent::Moved { vm });
            }
            Event::VmDisconnected { vm } => {
                tracing::info!(vm = vm.0, "VM disconnected; entry kept for a reconnect");
                if let Some(owners) = self.owners.as_mut() {
                    owners.gone(vm);
                }
                // A lingering entry holds no descriptor: the log reopens if the VM returns.
                if let Some(log) = self.logs.get_mut(&vm) {
                    log.reopen();
                }
                self.unflushed.remove(&vm);
                self.publish(VmEvent::Disconnected { vm });
            }
            Event::VmRemoved { vm } => {
                tracing::info!(vm = vm.0, "VM entry removed");
                if let Some(owners) = self.owners.as_mut() {
                    owners.gone(vm);
                }
                if let Some(sticky) = self.sticky.remove(&vm) {
                    sticky.task.abort();
                }
                if let Some(log) = self.logs.remove(&vm) {
                    self.log_files.remove(log.path());
                }
                self.unflushed.remove(&vm);
                self.publish(VmEvent::Removed { vm });
            }
            Event::Console { vm, bytes } => self.console(vm, bytes),
            Event::ClientAttached { client, vm, mode } => {
                let name = self.core.vm(vm).map(|v| v.name).unwrap_or_default();
                self.audit_client(
                    "attach",
                    client,
                    &[("vm", &vm.0), ("name", &name), ("mode", &mode.short())],
                );
            }
            Event::ClientAttachedRemote { client, vm, mode } => {
                self.audit_client(
                    "attach",
                    client,
                    &[
                        ("name", &vm.name),
                        ("instance", &vm.instance),
                        ("mode", &mode.short()),
                    ],
                );
            }
            Event::SelectionElsewhere {
                client, selector, ..
            } => match &self.cluster {
                Some((cluster, shared)) => {
                    tokio::spawn(crate::link::attach_elsewhere(
                        shared.clone(),
                        cluster.clone(),
                        client,
                        selector,
                    ));
                }
                None => self
                    .core
                    .selection_failed(client, AttachError::NoMatch(selector)),
            },
            Event::ClientKicked { client, vm, by } => {
                let by_user = self.user_of(by);
                self.audit_client(
                    "kick",
                    client,
                    &[("vm", &vm.0), ("by", &by.0), ("by_user", &by_user)],
                );
            }
            Event::ClientBreak { client, vm } => {
                self.audit_client("break", client, &[("vm", &vm.0)]);
            }
            Event::ClientDropped { client, reason } => {
                if reason == DropReason::TooSlow {
                    tracing::warn!(client = client.0, "client too slow: dropped");
                }
                self.audit_client("dropped", client, &[("reason", &format!("{reason:?}"))]);
                if let Some(signals) = self.clients.get(&client) {
                    signals.kill.notify_one();
                }
            }
            Event::ProtocolError { conn, error } => {
                if self.log_limit.allow(conn) {
                    tracing::debug!(session = conn.0, error = ?error.to_string(), "protocol error from VM");
                }
            }
            Event::HandoverOffered {
                conn: _,
                key,
                deadline,
            } => {
                if let Some((cluster, _)) = &self.cluster {
                    let state = cluster.state.clone();
                    let owner = cluster.advertise;
                    let ttl = Cluster::ttl(deadline, Instant::now());
                    let shared = self.cluster.as_ref().map(|(_, s)| s.clone());
                    tokio::spawn(async move {
                        if let Err(error) = state.offer(&digest(&key), owner, ttl).await {
                            tracing::warn!(%error, "vMotion not shared: a destination reaching another instance will be refused");
                            if let Some(shared) = shared.and_then(|s| s.upgrade()) {
                                let mut hub = shared.lock();
                                hub.cluster_counts.unshared += 1;
                                // Until a renewal reaches the store again, no more GOAHEADs.
                                hub.core.hold_vmotions(true);
                            }
                        }
                    });
                }
            }
            Event::PeerElsewhere { conn, key } => match &self.cluster {
                Some((cluster, shared)) => {
                    let state = cluster.state.clone();
                    let me = cluster.advertise;
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        let owner = claim_patiently(&*state, &digest(&key)).await;
                        let Some(shared) = shared.upgrade() else {
                            return;
                        };
                        let mut hub = shared.lock();
                        let now = Instant::now();
                        match owner {
                            Ok(Some(owner)) if owner != me => {
                                tracing::info!(session = conn.0, %owner, "PEER for a vMotion held elsewhere: carrying the destination there");
                                hub.handoffs.insert(conn, owner);
                                hub.cluster_counts.carried += 1;
                                hub.core.hand_off(now, conn);
                                if let Some(waker) = hub.vm_wakers.get(&conn) {
                                    waker.wake_by_ref();
                                }
                            }
                            Ok(_) => {
                                hub.cluster_counts.refused += 1;
                                hub.core.refuse_peer(now, conn);
                            }
                            Err(error) => {
                                tracing::warn!(%error, session = conn.0, "PEER refused: the shared state is unavailable");
                                hub.cluster_counts.unavailable += 1;
                                hub.core.refuse_peer(now, conn);
                            }
                        }
                        hub.settle();
                    });
                }
                None => self.core.refuse_peer(Instant::now(), conn),
            },
        }
    }

    /// An audit line about a client: who (its user, `-` for telnet) and from where first.
    fn audit_client(&self, event: &str, client: ClientId, rest: &[(&str, &dyn std::fmt::Display)]) {
        let user = self.user_of(client);
        let peer = self
            .core
            .client(client)
            .map_or_else(String::new, |c| c.peer.to_string());
        let mut fields: Vec<(&str, &dyn std::fmt::Display)> =
            vec![("client", &client.0), ("user", &user), ("peer", &peer)];
        fields.extend_from_slice(rest);
        self.audit.record(event, &fields);
    }

    fn user_of(&self, client: ClientId) -> String {
        self.core
            .client(client)
            .and_then(|c| c.user)
            .unwrap_or_else(|| "-".to_owned())
    }

    fn publish(&mut self, event: VmEvent) {
        if self.vm_event_subs.is_empty() {
            return;
        }
        // A subscriber that fell behind by its whole capacity is cut off.
        self.vm_event_subs
            .retain(|tx| tx.try_send(event.clone()).is_ok());
    }

    fn console(&mut self, vm: VmId, bytes: Bytes) {
        if self.config.log.dir.is_some() {
            // Only the instance holding the port writes its log.
            match self.owners.as_mut().map(|o| o.gate(vm, &bytes)) {
                None | Some(Gate::Write(None)) => self.log_write(vm, &bytes),
                Some(Gate::Write(Some(earlier))) => {
                    self.log_write(vm, &earlier);
                    self.log_write(vm, &bytes);
                }
                Some(Gate::Kept | Gate::Skip) => {}
            }
        }
        if !self.console_subs.is_empty() {
            self.console_subs.retain(|(filter, tx)| {
                filter.is_some_and(|f| f != vm)
                    || tx
                        .try_send(ConsoleChunk {
                            vm,
                            bytes: bytes.clone(),
                        })
                        .is_ok()
            });
        }
    }

    /// Appends to entry `vm`'s console log (opened on first use).
    fn log_write(&mut self, vm: VmId, bytes: &[u8]) {
        if let Some(dir) = &self.config.log.dir {
            let log = match self.logs.get_mut(&vm) {
                Some(log) => log,
                None => {
                    let Some(info) = self.core.vm(vm) else {
                        return;
                    };
                    let name = if info.name.is_empty() {
                        &info.vc_uuid
                    } else {
                        &info.name
                    };
                    let mut name = file_name(
                        &self.config.log.name,
                        name,
                        &info.vc_uuid,
                        &info.label,
                        vm.0,
                    );
                    if info.flagged.is_some() {
                        name = format!("FLAGGED-{name}");
                    }
                    let mut path = dir.join(&name);
                    if self.log_files.get(&path).is_some_and(|owner| *owner != vm) {
                        path = dir.join(disambiguate(&name, vm));
                    }
                    self.log_files.insert(path.clone(), vm);
                    self.logs.entry(vm).or_insert_with(|| ConsoleLog::new(path))
                }
            };
            log.write(bytes);
            self.unflushed.insert(vm);
        }
    }

    pub(crate) fn log_path(&self, vm: VmId) -> Option<String> {
        self.logs.get(&vm).map(|l| l.path().display().to_string())
    }

    pub(crate) fn flush_logs(&mut self) {
        for vm in self.unflushed.drain() {
            if let Some(log) = self.logs.get_mut(&vm) {
                log.flush();
            }
        }
    }

    pub(crate) fn reopen_logs(&mut self) {
        for log in self.logs.values_mut() {
            log.reopen();
        }
        self.audit.reopen();
        tracing::info!("console logs reopened");
    }

    pub(crate) fn shutdown(&mut self) {
        self.core.shutdown();
        self.settle();
        self.flush_logs();
    }
}

/// Log lines one VM connection may cause per window; past it they are counted, and one line
/// says so. A VM looping on VMOTION-BEGIN cannot grow the log faster than its input.
const LOG_LINES_PER_WINDOW: u32 = 20;
const LOG_WINDOW: Duration = Duration::from_secs(10);

/// Rate limit of the log lines VM connections cause.
#[derive(Debug, Default)]
pub(crate) struct LogLimiter {
    windows: HashMap<SessionId, (Instant, u32)>,
    /// Lines not written.
    pub(crate) suppressed: u64,
}

impl LogLimiter {
    /// Whether one more line caused by `conn` may be written now.
    fn allow(&mut self, conn: SessionId) -> bool {
        let now = Instant::now();
        let (start, count) = self.windows.entry(conn).or_insert((now, 0));
        if now.duration_since(*start) >= LOG_WINDOW {
            *start = now;
            *count = 0;
        }
        *count += 1;
        if *count == LOG_LINES_PER_WINDOW + 1 {
            tracing::warn!(session = conn.0, "this VM connection causes too many log lines: the rest of this window's are counted, not written");
        }
        let allowed = *count <= LOG_LINES_PER_WINDOW;
        if !allowed {
            self.suppressed += 1;
        }
        allowed
    }

    fn forget(&mut self, conn: SessionId) {
        self.windows.remove(&conn);
    }
}

/// `name` with `-{id}` before its extension: the file of a second VM port whose name the
/// scheme made equal to another's.
fn disambiguate(name: &str, vm: VmId) -> String {
    match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => format!("{stem}-{}.{ext}", vm.0),
        _ => format!("{name}-{}", vm.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disambiguated_names_keep_the_extension() {
        assert_eq!(
            disambiguate("coll_x_console.log", VmId(7)),
            "coll_x_console-7.log"
        );
        assert_eq!(disambiguate("plain", VmId(7)), "plain-7");
        assert_eq!(disambiguate(".log", VmId(7)), ".log-7");
    }
}
