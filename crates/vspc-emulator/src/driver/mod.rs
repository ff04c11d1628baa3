//! The tokio driver (feature `tokio`): emulated VMs over real sockets, `telnet` or `telnets`
//! (rustls, verified as ESXi verifies, see [`tls`]), one VM or a fleet of thousands from one
//! process, each commanded through a handle and observed through its events.
//!
//! This is only the IO around the sans-IO [`EmulatedVm`]: it owns the sockets and the clock
//! and follows the crate's driving contract. Each [`Transmit::Write`](crate::Transmit::Write) is one socket write, so
//! segment boundaries survive as far as the kernel keeps them (Nagle is off).
//!
//! # The contract
//! - [`spawn`] (or [`Spawner::spawn`], [`spawn_fleet`]) powers a VM on in a task of its own
//!   and returns a [`Vm`]; its [`VmHandle`] (cloneable, usable from any thread) commands it:
//!   [`vmotion`](VmHandle::vmotion), [`set_connected`](VmHandle::set_connected),
//!   [`reconnect`](VmHandle::reconnect), [`inject`](VmHandle::inject) a [`Fault`],
//!   [`write`](VmHandle::write) serial output, or anything else on the [`EmulatedVm`] with
//!   [`with`](VmHandle::with). Commands take effect at once (they run under the VM's lock);
//!   their network effects follow as the task runs.
//! - What happens comes out as [`Event`]s on a bounded channel: connected (or why not),
//!   identified, vMotion begun, GOAHEAD, completed or refused, client data (the VM's serial
//!   input), disconnected, errors. Read it, or drop it: a VM whose full channel nobody reads
//!   waits for it, as a socket would.
//! - [`Vm::stop`] powers the VM off (FIN on its connections) and returns its [`Report`];
//!   dropping a [`Vm`] stops it too, without waiting.
//!
//! # Example
//! ```no_run
//! use std::time::Duration;
//! use vspc_emulator::driver::{spawn, EventKind, Target};
//! use vspc_emulator::{EmulatorConfig, EmulatorEvent, VmIdentity, VmotionPlan};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let uri = "telnets://127.0.0.1:13371#thumbprint=AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01";
//! let target = Target::new(uri.parse()?)?;
//! let (vm, mut events) = spawn(EmulatorConfig::new(VmIdentity::numbered(1)), target);
//! while let Some(event) = events.recv().await {
//!     match event.kind {
//!         EventKind::Emulator(EmulatorEvent::ProxyAnswered { accepted: true, .. }) => break,
//!         EventKind::ConnectFailed { error, .. } => return Err(error.into()),
//!         _ => {}
//!     }
//! }
//! vm.write(b"hello from the guest\r\n")?;
//! vm.vmotion(VmotionPlan::new(&b"\x00\x00\x00\x01"[..]))?;
//! tokio::time::sleep(Duration::from_secs(1)).await;
//! let report = vm.stop().await;
//! assert_eq!(report.vmotions, 1);
//! # Ok(())
//! # }
//! ```

mod link;
mod task;
pub mod tls;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

pub use link::{ConnectError, Target, TargetBuilder, TargetError};
pub use tls::{PolicyError, TlsRejection};

use crate::connection::ConnId;
use crate::error::EmulatorError;
use crate::fault::Fault;
use crate::vm::{EmulatedVm, EmulatorConfig, EmulatorEvent, VmotionPlan};

/// Events queued per VM by [`spawn`] (a fleet's shared channel holds [`FLEET_EVENTS`]).
pub const VM_EVENTS: usize = 1024;
/// Events queued by [`spawn_fleet`]'s shared channel.
pub const FLEET_EVENTS: usize = 16 * 1024;

/// Something that happened to VM [`vm`](Event::vm).
#[derive(Debug)]
pub struct Event {
    /// The VM's number (its index in a fleet, or what [`Spawner::spawn`] was given).
    pub vm: u64,
    /// When the driver saw it: the read, connect or command that caused it.
    pub at: Instant,
    /// What happened.
    pub kind: EventKind,
}

/// What happened.
#[derive(Debug)]
#[non_exhaustive]
pub enum EventKind {
    /// A connection to the proxy is up (TCP, and TLS verified for `telnets`).
    Connected {
        /// The connection.
        conn: ConnId,
        /// Over TLS.
        tls: bool,
    },
    /// A connection could not be made; the VM treats it as closed.
    ConnectFailed {
        /// The connection.
        conn: ConnId,
        /// Why.
        error: ConnectError,
    },
    /// VMOTION-BEGIN was written on `conn` (the VM is quiesced).
    VmotionBegun {
        /// The source connection.
        conn: ConnId,
    },
    /// GOAHEAD arrived: the destination host connects on `destination`.
    VmotionGoahead {
        /// The destination connection.
        destination: ConnId,
    },
    /// What the sans-IO VM reported: the proxy's answer to DO-PROXY (identified), client
    /// data, vMotion outcomes ([`crate::VmotionOutcome`]: completed, refused, ...),
    /// disconnects, protocol errors.
    Emulator(EmulatorEvent),
    /// A read or write on `conn` failed; the VM treats it as closed.
    Io {
        /// The connection.
        conn: ConnId,
        /// The socket error.
        error: std::io::Error,
    },
}

/// What one VM (or a fleet, summed) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Report {
    /// VMs run.
    pub vms: u64,
    /// Connections established.
    pub connected: u64,
    /// Times the proxy answered DO-PROXY with WILL-PROXY.
    pub identified: u64,
    /// Serial bytes the VMs sent.
    pub serial_sent: u64,
    /// Client bytes the VMs received.
    pub client_received: u64,
    /// vMotions completed.
    pub vmotions: u64,
    /// vMotions that ended otherwise (refused, cancelled, aborted, source lost).
    pub vmotions_failed: u64,
    /// VMs whose received client bytes differ from their configured
    /// [`client_pattern`](crate::EmulatorConfig::client_pattern) (lost, reordered, duplicated
    /// or altered bytes).
    pub client_mismatches: u64,
    /// Connect failures, I/O errors and protocol errors.
    pub errors: u64,
}

impl std::ops::AddAssign for Report {
    fn add_assign(&mut self, other: Report) {
        self.vms += other.vms;
        self.connected += other.connected;
        self.identified += other.identified;
        self.serial_sent += other.serial_sent;
        self.client_received += other.client_received;
        self.vmotions += other.vmotions;
        self.vmotions_failed += other.vmotions_failed;
        self.client_mismatches += other.client_mismatches;
        self.errors += other.errors;
    }
}

/// The VM and what the driver counts, under one lock shared by the task and the handles.
struct State {
    vm: EmulatedVm,
    connected: u64,
    io_errors: u64,
    stop: bool,
    /// Where the next vMotion's destination connects, when not the VM's own target.
    destination: Option<Target>,
}

impl State {
    fn report(&self) -> Report {
        let stats = self.vm.stats();
        Report {
            vms: 1,
            connected: self.connected,
            identified: stats.proxy_accepted,
            serial_sent: self.vm.serial_sent(),
            client_received: self.vm.recorder().total(),
            vmotions: stats.vmotions_completed,
            vmotions_failed: stats.vmotions_failed,
            client_mismatches: u64::from(
                self.vm
                    .recorder()
                    .verifier()
                    .is_some_and(|verifier| verifier.first_error().is_some()),
            ),
            errors: self.io_errors + stats.protocol_errors,
        }
    }
}

struct Shared {
    state: Mutex<State>,
    kick: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A command that panicked under the lock leaves the VM as consistent as it got: the
        // sans-IO core never panics itself.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Clock reads live here only: the driver is the IO layer.
#[allow(clippy::disallowed_methods)]
fn now() -> Instant {
    Instant::now()
}

/// Commands one running VM. Cloneable; every method returns at once.
#[derive(Clone)]
pub struct VmHandle {
    shared: Arc<Shared>,
    n: u64,
}

impl std::fmt::Debug for VmHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmHandle").field("vm", &self.n).finish()
    }
}

impl VmHandle {
    /// The VM's number.
    pub fn number(&self) -> u64 {
        self.n
    }

    /// Runs `command` on the VM (with the current time), then lets the task carry out its
    /// network effects. Any [`EmulatedVm`] method works here; the typed methods below are
    /// shorthands.
    pub fn with<R>(&self, command: impl FnOnce(&mut EmulatedVm, Instant) -> R) -> R {
        let result = command(&mut self.shared.lock().vm, now());
        self.shared.kick.notify_one();
        result
    }

    /// Starts a vMotion: the destination host connects to the VM's own target.
    pub fn vmotion(&self, plan: VmotionPlan) -> Result<(), EmulatorError> {
        self.with(|vm, now| vm.start_vmotion(now, plan))
    }

    /// Starts a vMotion whose destination host connects to `destination` (another
    /// concentrator, or the same one by another address).
    pub fn vmotion_to(&self, plan: VmotionPlan, destination: Target) -> Result<(), EmulatorError> {
        let result = {
            let mut state = self.shared.lock();
            let result = state.vm.start_vmotion(now(), plan);
            if result.is_ok() {
                state.destination = Some(destination);
            }
            result
        };
        self.shared.kick.notify_one();
        result
    }

    /// Reconfigures the port's `connected` flag (`true` on a connected port reconnects).
    pub fn set_connected(&self, connected: bool) -> Result<(), EmulatorError> {
        self.with(|vm, now| vm.set_connected(now, connected))
    }

    /// Closes the connection and opens a new one (same identity, no vMotion).
    pub fn reconnect(&self) -> Result<(), EmulatorError> {
        self.set_connected(true)
    }

    /// Injects `fault` on the current connection.
    pub fn inject(&self, fault: Fault) -> Result<(), EmulatorError> {
        self.with(|vm, _| vm.inject(fault))
    }

    /// The guest writes `data` to its serial port.
    pub fn write(&self, data: &[u8]) -> Result<(), EmulatorError> {
        self.with(|vm, _| vm.send_serial(data))
    }

    /// What the VM did so far.
    pub fn report(&self) -> Report {
        self.shared.lock().report()
    }

    /// Asks the VM to power off and its task to end (see [`Vm::stop`] to wait for it).
    pub fn request_stop(&self) {
        self.shared.lock().stop = true;
        self.shared.kick.notify_one();
    }
}

/// A running VM: its handle (by `Deref`) and its task.
pub struct Vm {
    handle: VmHandle,
    task: Option<JoinHandle<Report>>,
}

impl std::fmt::Debug for Vm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.handle.fmt(f)
    }
}

impl std::ops::Deref for Vm {
    type Target = VmHandle;

    fn deref(&self) -> &VmHandle {
        &self.handle
    }
}

impl Vm {
    /// A handle to command the VM from elsewhere.
    pub fn handle(&self) -> VmHandle {
        self.handle.clone()
    }

    /// Powers the VM off (FIN on its connections) and waits for its task: the final report.
    pub async fn stop(mut self) -> Report {
        self.handle.request_stop();
        match self.task.take() {
            Some(task) => task.await.unwrap_or_else(|_| Report {
                vms: 1,
                errors: 1,
                ..self.handle.report()
            }),
            None => self.handle.report(),
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if self.task.is_some() {
            self.handle.request_stop();
        }
    }
}

/// Spawns VMs onto the current tokio runtime, all to one target and one event channel.
#[derive(Debug, Clone)]
pub struct Spawner {
    target: Target,
    events: Option<mpsc::Sender<Event>>,
    client_data: bool,
}

impl Spawner {
    /// VMs connecting to `target`, reporting no events.
    pub fn new(target: Target) -> Self {
        Spawner {
            target,
            events: None,
            client_data: true,
        }
    }

    /// Reports every VM's events on `events`.
    #[must_use]
    pub fn events(mut self, events: mpsc::Sender<Event>) -> Self {
        self.events = Some(events);
        self
    }

    /// Leaves [`EmulatorEvent::ClientData`] out of the events (the bytes are still recorded,
    /// see [`EmulatedVm::recorder`]): for fleets whose client traffic nobody reads.
    #[must_use]
    pub fn without_client_data(mut self) -> Self {
        self.client_data = false;
        self
    }

    /// Powers on VM number `n` with `config` in a task of its own.
    pub fn spawn(&self, n: u64, config: EmulatorConfig) -> Vm {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                vm: EmulatedVm::new(config),
                connected: 0,
                io_errors: 0,
                stop: false,
                destination: None,
            }),
            kick: Notify::new(),
        });
        let driver = task::Driver::new(
            n,
            shared.clone(),
            self.target.clone(),
            self.events.clone(),
            self.client_data,
        );
        let task = tokio::spawn(driver.run());
        Vm {
            handle: VmHandle { shared, n },
            task: Some(task),
        }
    }
}

/// Powers on one VM (number 0) against `target`; its events come out of the receiver.
pub fn spawn(config: EmulatorConfig, target: Target) -> (Vm, mpsc::Receiver<Event>) {
    let (tx, rx) = mpsc::channel(VM_EVENTS);
    (Spawner::new(target).events(tx).spawn(0, config), rx)
}

/// A fleet of VMs, in number order.
#[derive(Debug)]
pub struct Fleet {
    vms: Vec<Vm>,
}

impl Fleet {
    /// The VMs.
    pub fn vms(&self) -> &[Vm] {
        &self.vms
    }

    /// Powers every VM off and waits for them: the summed report.
    pub async fn stop(self) -> Report {
        for vm in &self.vms {
            vm.request_stop();
        }
        let mut total = Report::default();
        for vm in self.vms {
            total += vm.stop().await;
        }
        total
    }
}

impl FromIterator<Vm> for Fleet {
    fn from_iter<I: IntoIterator<Item = Vm>>(vms: I) -> Self {
        Fleet {
            vms: vms.into_iter().collect(),
        }
    }
}

/// Powers on `count` VMs against `target`, VM `n` configured by `config(n)`, connects bounded
/// by the target's limit; their events (without client data) share one channel.
pub fn spawn_fleet(
    count: u64,
    target: Target,
    config: impl Fn(u64) -> EmulatorConfig,
) -> (Fleet, mpsc::Receiver<Event>) {
    let (tx, rx) = mpsc::channel(FLEET_EVENTS);
    let spawner = Spawner::new(target).events(tx).without_client_data();
    let fleet = (0..count).map(|n| spawner.spawn(n, config(n))).collect();
    (fleet, rx)
}

/// Runs `count` VMs against `target` for `duration`, ignoring their events: the summed report.
pub async fn run_fleet(
    count: u64,
    target: Target,
    duration: Duration,
    config: impl Fn(u64) -> EmulatorConfig,
) -> Report {
    let spawner = Spawner::new(target);
    let fleet: Fleet = (0..count).map(|n| spawner.spawn(n, config(n))).collect();
    tokio::time::sleep(duration).await;
    fleet.stop().await
}
