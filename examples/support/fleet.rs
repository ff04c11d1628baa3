//! The load generator: emulated VMs on the emulator's tokio driver, and telnet clients typing
//! to them (`examples/scale.rs`, `examples/cluster_scale.rs`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use vspc_emulator::driver::{self, EventKind, Spawner, Target};
use vspc_emulator::{
    EmulatorConfig, EmulatorEvent, Pattern, VmIdentity, VmotionOutcome, VmotionPlan,
};
use vspc_proto::vspc_telnet::{encode_data, option, Policy, Telnet, TelnetConfig, TelnetEvent};

use super::WAIT;

/// How one vMotion went, timed on the VM side from the command (VMOTION-BEGIN written).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Motion {
    /// To GOAHEAD read.
    pub(crate) goahead: Option<Duration>,
    /// To PEER-OK read on the destination connection (the vMotion completed).
    #[allow(dead_code, reason = "examples/scale.rs times GOAHEAD only")]
    pub(crate) handover: Option<Duration>,
    pub(crate) completed: bool,
}

impl Motion {
    const FAILED: Motion = Motion {
        goahead: None,
        handover: None,
        completed: false,
    };
}

pub(crate) fn fleet_config(n: u64) -> EmulatorConfig {
    let mut config = EmulatorConfig::new(VmIdentity::numbered(n));
    config.port.com_port_delay = None;
    config.max_recorded = 16;
    config.client_pattern = Some(Pattern::Noise { seed: n });
    config
}

/// The target of the bench's VMs: each connects from a loopback address of its own (with
/// 20,000 connections from one address, the kernel's search for a free ephemeral port took
/// 30% of the load generator's CPU and bounded vMotions/s).
pub(crate) fn target(addr: SocketAddr, connecting: usize) -> Target {
    let uri = format!("telnet://{addr}")
        .parse()
        .expect("a telnet proxyURI");
    Target::builder(uri)
        .max_connecting(connecting)
        .loopback_sources(true)
        .connect_timeout(WAIT)
        .build()
        .expect("a telnet target")
}

/// A vMotion someone waits for: when it was commanded, its GOAHEAD latency, the answer.
type Waiter = (Instant, Option<Duration>, oneshot::Sender<Motion>);

/// VMs on the emulator's driver, numbered from `first`; one task routes their events.
pub(crate) struct Fleet {
    first: u64,
    vms: driver::Fleet,
    waiters: Arc<Mutex<HashMap<u64, Waiter>>>,
    dispatch: JoinHandle<()>,
}

impl Fleet {
    /// Starts VMs `first..first + count`; returns once all have been answered WILL-PROXY
    /// (bounded).
    pub(crate) async fn start(
        first: u64,
        count: u64,
        addr: SocketAddr,
        connecting: usize,
    ) -> Fleet {
        let (tx, mut events) = mpsc::channel(driver::FLEET_EVENTS);
        let spawner = Spawner::new(target(addr, connecting))
            .events(tx)
            .without_client_data();
        let vms = (first..first + count)
            .map(|n| spawner.spawn(n, fleet_config(n)))
            .collect();
        drop(spawner);
        let waiters: Arc<Mutex<HashMap<u64, Waiter>>> = Arc::default();
        let (identified_tx, mut identified) = mpsc::unbounded_channel();
        let routes = waiters.clone();
        let dispatch = tokio::spawn(async move {
            let mut announced = std::collections::HashSet::new();
            while let Some(event) = events.recv().await {
                match event.kind {
                    EventKind::Emulator(EmulatorEvent::ProxyAnswered {
                        accepted: true, ..
                    }) if announced.insert(event.vm) => {
                        let _ = identified_tx.send(event.vm);
                    }
                    EventKind::VmotionGoahead { .. } => {
                        if let Some((begun, goahead, _)) = routes.lock().unwrap().get_mut(&event.vm)
                        {
                            *goahead = Some(event.at.saturating_duration_since(*begun));
                        }
                    }
                    EventKind::Emulator(EmulatorEvent::Vmotion(outcome)) => {
                        if let Some((begun, goahead, answer)) =
                            routes.lock().unwrap().remove(&event.vm)
                        {
                            let completed = matches!(outcome, VmotionOutcome::Completed { .. });
                            let handover =
                                completed.then(|| event.at.saturating_duration_since(begun));
                            let _ = answer.send(Motion {
                                goahead,
                                handover,
                                completed,
                            });
                        }
                    }
                    _ => {}
                }
            }
        });
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut seen = 0;
        while seen < count {
            match tokio::time::timeout_at(deadline, identified.recv()).await {
                Ok(Some(_)) => seen += 1,
                _ => break,
            }
        }
        Fleet {
            first,
            vms,
            waiters,
            dispatch,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.vms.vms().len()
    }

    /// VM `at` vMotions; its destination host connects to `destination` (default: the
    /// VM's own target). Waits for the outcome (bounded).
    pub(crate) async fn vmotion(
        &self,
        at: usize,
        sequence: u32,
        destination: Option<Target>,
    ) -> Motion {
        let Some(vm) = self.vms.vms().get(at) else {
            return Motion::FAILED;
        };
        let (tx, rx) = oneshot::channel();
        let n = self.first + at as u64;
        self.waiters
            .lock()
            .unwrap()
            .insert(n, (Instant::now(), None, tx));
        let plan = VmotionPlan::new(Bytes::copy_from_slice(&sequence.to_be_bytes()));
        let started = match destination {
            Some(destination) => vm.vmotion_to(plan, destination),
            None => vm.vmotion(plan),
        };
        if started.is_err() {
            self.waiters.lock().unwrap().remove(&n);
            return Motion::FAILED;
        }
        tokio::time::timeout(WAIT, rx)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(Motion::FAILED)
    }

    /// Client bytes VM `at` received, and whether they all matched its pattern.
    pub(crate) fn received(&self, at: usize) -> (u64, bool) {
        self.vms.vms().get(at).map_or((0, false), |vm| {
            let report = vm.report();
            (report.client_received, report.client_mismatches == 0)
        })
    }

    /// Powers every VM off; returns the errors they saw.
    pub(crate) async fn stop(self) -> u64 {
        let report = tokio::time::timeout(WAIT, self.vms.stop()).await;
        self.dispatch.abort();
        report.map_or(1, |report| report.errors)
    }
}

// ----- clients -----

pub(crate) fn client_telnet() -> Telnet {
    let policy = Policy::new()
        .accept_both(option::BINARY)
        .accept_both(option::SGA)
        .accept_remote(option::ECHO);
    Telnet::new(TelnetConfig {
        policy,
        ..TelnetConfig::default()
    })
}

/// A client attached to VM `name`: the socket, its telnet state, and the data that followed
/// the attach banner.
pub(crate) async fn attach(addr: SocketAddr, name: &str) -> Option<(TcpStream, Telnet, Vec<u8>)> {
    let run = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        stream.set_nodelay(true).ok()?;
        let mut telnet = client_telnet();
        stream
            .write_all(format!("{name}\r\n").as_bytes())
            .await
            .ok()?;
        let mut data = Vec::new();
        let mut buf = vec![0u8; 4096];
        loop {
            let len = stream.read(&mut buf).await.ok()?;
            if len == 0 {
                return None;
            }
            let mut input = &buf[..len];
            while let Some(event) = telnet.next_event(&mut input) {
                if let TelnetEvent::Data(bytes) = event {
                    data.extend_from_slice(bytes);
                }
            }
            if let Some(reply) = telnet.poll_transmit() {
                stream.write_all(&reply).await.ok()?;
            }
            if let Some(at) = data.windows(4).position(|w| w == b")]\r\n") {
                if !data[..at].ends_with(b"(rw") {
                    return None;
                }
                return Some((stream, telnet, data.split_off(at + 4)));
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .ok()
        .flatten()
}

/// A client typing the pattern of VM `n` (its reads drained in the background).
pub(crate) struct Typist {
    writer: tokio::net::tcp::OwnedWriteHalf,
    pattern: Pattern,
    pub(crate) sent: u64,
    drain: JoinHandle<()>,
}

impl Typist {
    pub(crate) async fn new(addr: SocketAddr, n: u64) -> Option<Typist> {
        let (stream, _, _) = attach(addr, &VmIdentity::numbered(n).name).await?;
        let (mut reader, writer) = stream.into_split();
        let drain = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while matches!(reader.read(&mut buf).await, Ok(len) if len > 0) {}
        });
        Some(Typist {
            writer,
            pattern: Pattern::Noise { seed: n },
            sent: 0,
            drain,
        })
    }

    pub(crate) async fn type_chunk(&mut self, len: usize) -> bool {
        let mut raw = Vec::with_capacity(len);
        self.pattern.extend(self.sent, len, &mut raw);
        let mut wire = Vec::with_capacity(len * 2);
        encode_data(&raw, true, &mut wire);
        self.sent += len as u64;
        self.writer.write_all(&wire).await.is_ok()
    }
}

impl Drop for Typist {
    fn drop(&mut self) {
        self.drain.abort();
    }
}

/// Waits (at most 10 s) until each typist's VM (`typists[i]` types to VM `at[i]` of `fleet`)
/// has received every byte typed to it; returns how many received them exactly, and the
/// bytes lost or wrong.
pub(crate) async fn verify(fleet: &Fleet, typists: &[(usize, Typist)]) -> (usize, u64) {
    let (mut exact, mut lost) = (0, 0u64);
    let deadline = Instant::now() + Duration::from_secs(10);
    for (at, typist) in typists {
        loop {
            let (received, ok) = fleet.received(*at);
            if received >= typist.sent || !ok || Instant::now() > deadline {
                if received == typist.sent && ok {
                    exact += 1;
                } else {
                    lost += typist.sent.saturating_sub(received);
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    (exact, lost)
}
