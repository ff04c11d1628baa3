//! VM port ownership under renewable leases: which of this instance's VM ports it holds in
//! the site's directory, which another instance holds, and the task that claims, renews and
//! releases them.
//!
//! A port joins this instance's set when the core binds a live connection to it (a new entry
//! or a reconnect; a flagged duplicate within the instance never does) and leaves it when that
//! connection goes. New ports are claimed in a batch a moment after they arrive (a connect
//! storm is a few store calls, not one per VM); every third of the lease, one command renews
//! the instance's lease and with it every port it holds. Only when that renewal finds the
//! lease lapsed (the instance was away, or the store restarted empty) is every port asked
//! for again. What each answer means:
//! - [`Holding::Held`]: this instance is the port's owner, and writes its console log.
//! - [`Holding::HeldBy`] for a port this connection never held: another instance's lease is
//!   live (the VM has a second connection there, or reconnected here before that lease
//!   lapsed). Served here all the same, listed as held elsewhere, not logged; claimed at a
//!   later renewal once the other lease lapses.
//! - [`Holding::HeldBy`] for a port this connection held: this instance was away (stopped,
//!   or cut from the store) longer than the lease and the VM is served elsewhere now. The
//!   stale connection is closed and the port never claimed from it.
//!
//! The store being unreachable changes nothing for local VMs: they are served and logged as
//! before, errors are counted, every tick tries again, and vMotions are held (answered
//! NOTNOW: a destination reaching another instance could not be carried back). After a
//! store restart the next renewal writes every lease and the directory again.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use vspc_concentrator::VmId;

use super::{Holding, Instance, SharedState, SharedStateError, SitePort};
use crate::Shared;

/// How long new ports wait for company before they are claimed: a connect storm's ports go
/// to the store in a few calls.
const BATCH_PAUSE: Duration = Duration::from_millis(50);

/// Console output kept per port while its first claim is under way; past it the output is
/// written (the store is slow, and losing a boot log is worse than two writers).
const MAX_UNLOGGED: usize = 64 * 1024;

/// Who holds a port, as this instance knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Owner {
    /// Not answered yet.
    Pending,
    /// This instance.
    Held,
    /// Another instance, whose lease is live.
    HeldBy(String),
}

#[derive(Debug)]
struct Tracked {
    port: SitePort,
    owner: Owner,
    /// Console output waiting for the first answer; `None`: written as it comes.
    unlogged: Option<Vec<u8>>,
}

/// What to do with a chunk of a port's console output.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Gate {
    /// Write it, after the earlier output given here, if any.
    Write(Option<Vec<u8>>),
    /// Kept until the port's first answer.
    Kept,
    /// Another instance holds the port and writes its log.
    Skip,
}

/// One round of store calls: ports to release, then ports to claim or renew.
#[derive(Debug, Default)]
pub(crate) struct Work {
    pub(crate) releases: Vec<SitePort>,
    pub(crate) claims: Vec<(VmId, SitePort)>,
    /// Whether this round renews every port (else it claims new ones only).
    pub(crate) renewal: bool,
}

/// What a round's answers ask of the hub.
#[derive(Debug, Default)]
pub(crate) struct Settled {
    /// Console output to write now, per entry (kept until the port was held, or until the
    /// store failed).
    pub(crate) logs: Vec<(VmId, Vec<u8>)>,
    /// Entries whose connection is stale (another instance holds their port): close them.
    pub(crate) stale: Vec<(VmId, String)>,
}

/// This instance's VM ports and their leases (kept in the hub, under its lock).
#[derive(Debug)]
pub(crate) struct Ownership {
    me: Instance,
    lease: Duration,
    ports: HashMap<VmId, Tracked>,
    /// Ports whose connection closed while held, by digest, to release at the next round.
    releases: HashMap<String, SitePort>,
    /// Whether the last store call answered.
    store_up: bool,
    /// Store calls that failed.
    pub(crate) errors: u64,
    /// Renewals of every port that the store answered.
    pub(crate) renewals: u64,
    /// Wakes the lease task for new ports or releases.
    wake: Arc<Notify>,
}

impl Ownership {
    pub(crate) fn new(me: Instance, lease: Duration) -> Ownership {
        Ownership {
            me,
            lease,
            ports: HashMap::new(),
            releases: HashMap::new(),
            store_up: true,
            errors: 0,
            renewals: 0,
            wake: Arc::new(Notify::new()),
        }
    }

    /// The lease task for this set: spawn it once.
    pub(crate) fn task(
        &self,
        shared: Arc<Shared>,
        state: Arc<dyn SharedState>,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        run_leases(
            shared,
            state,
            self.me.clone(),
            self.lease,
            self.wake.clone(),
        )
    }

    pub(crate) fn me(&self) -> &Instance {
        &self.me
    }

    /// Whether the store answered the last call.
    pub(crate) fn store_up(&self) -> bool {
        self.store_up
    }

    /// Entry `vm` has a live connection for `port`: claim it soon.
    pub(crate) fn connected(&mut self, vm: VmId, port: SitePort) {
        self.releases.remove(&port.digest());
        let unlogged = self.store_up.then(Vec::new);
        self.ports.insert(
            vm,
            Tracked {
                port,
                owner: Owner::Pending,
                unlogged,
            },
        );
        self.wake.notify_one();
    }

    /// Entry `vm`'s connection is gone (or the entry): release its port if it was held.
    pub(crate) fn gone(&mut self, vm: VmId) {
        if let Some(tracked) = self.ports.remove(&vm) {
            if tracked.owner == Owner::Held {
                self.releases.insert(tracked.port.digest(), tracked.port);
                self.wake.notify_one();
            }
        }
    }

    /// What to do with console output of entry `vm` (untracked entries, e.g. a duplicate
    /// flagged within this instance, log as without a store).
    pub(crate) fn gate(&mut self, vm: VmId, bytes: &[u8]) -> Gate {
        let Some(tracked) = self.ports.get_mut(&vm) else {
            return Gate::Write(None);
        };
        match &tracked.owner {
            Owner::Held => Gate::Write(None),
            Owner::HeldBy(_) => Gate::Skip,
            Owner::Pending => match tracked.unlogged.as_mut() {
                Some(kept) if kept.len() + bytes.len() <= MAX_UNLOGGED => {
                    kept.extend_from_slice(bytes);
                    Gate::Kept
                }
                Some(_) => Gate::Write(tracked.unlogged.take()),
                None => Gate::Write(None),
            },
        }
    }

    /// The listing's word for entry `vm`: `held`, `held_by:<instance>`, `pending`, or
    /// `unshared` (no live connection, or a duplicate flagged within this instance).
    pub(crate) fn label(&self, vm: VmId) -> String {
        match self.ports.get(&vm).map(|t| &t.owner) {
            Some(Owner::Held) => "held".to_owned(),
            Some(Owner::HeldBy(other)) => format!("held_by:{other}"),
            Some(Owner::Pending) => "pending".to_owned(),
            None => "unshared".to_owned(),
        }
    }

    /// Ports held here, and ports held elsewhere (served here as duplicates).
    pub(crate) fn counts(&self) -> (usize, usize) {
        self.ports
            .values()
            .fold((0, 0), |(held, elsewhere), t| match t.owner {
                Owner::Held => (held + 1, elsewhere),
                Owner::HeldBy(_) => (held, elsewhere + 1),
                Owner::Pending => (held, elsewhere),
            })
    }

    /// Every port held here (to release at shutdown).
    pub(crate) fn held_ports(&self) -> Vec<SitePort> {
        self.ports
            .values()
            .filter(|t| t.owner == Owner::Held)
            .map(|t| t.port.clone())
            .collect()
    }

    /// The next round: the releases, and the ports to claim: every port after this
    /// instance's lease lapsed (`full`: others may hold them now, or a restarted store lost
    /// them), the unanswered ones, and at a renewal the ones another instance held (its lease
    /// may have lapsed since).
    pub(crate) fn work(&mut self, renewal: bool, full: bool) -> Work {
        let claims = self
            .ports
            .iter()
            .filter(|(_, t)| match t.owner {
                Owner::Pending => true,
                Owner::HeldBy(_) => renewal,
                Owner::Held => full,
            })
            .map(|(vm, t)| (*vm, t.port.clone()))
            .collect();
        Work {
            releases: self.releases.drain().map(|(_, port)| port).collect(),
            claims,
            renewal,
        }
    }

    /// Releases the store did not take: asked again next round (the ports stay held while
    /// this instance renews its lease), unless the port's connection is back meanwhile.
    pub(crate) fn release_failed(&mut self, ports: Vec<SitePort>) {
        for port in ports {
            if !self.ports.values().any(|t| t.port == port) {
                self.releases.insert(port.digest(), port);
            }
        }
    }

    /// Applies a round's answers (`None`: no claim was asked; `Err`: the store failed).
    pub(crate) fn settle(
        &mut self,
        work: Work,
        answers: Option<Result<Vec<Holding>, SharedStateError>>,
    ) -> Settled {
        let mut settled = Settled::default();
        let answers = match answers {
            None => return settled,
            Some(Ok(answers)) => answers,
            Some(Err(error)) => {
                if self.store_up {
                    tracing::warn!(%error, "shared state unreachable: local VMs are served and logged as before, vMotions are answered NOTNOW until it is back");
                }
                self.errors += 1;
                self.store_up = false;
                // Nobody can answer for now: what waited for an answer is logged here.
                for (vm, tracked) in &mut self.ports {
                    if let Some(kept) = tracked.unlogged.take() {
                        if !kept.is_empty() {
                            settled.logs.push((*vm, kept));
                        }
                    }
                }
                return settled;
            }
        };
        if !self.store_up {
            tracing::info!("shared state reachable again: leases and directory renewed");
        }
        self.store_up = true;
        if work.renewal {
            self.renewals += 1;
        }
        for ((vm, port), answer) in work.claims.into_iter().zip(answers) {
            let digest = port.digest();
            let tracked = self
                .ports
                .get_mut(&vm)
                .filter(|t| t.port.digest() == digest);
            let Some(tracked) = tracked else {
                // The connection went while its claim was under way: give back what it won.
                if answer == Holding::Held && !self.ports.values().any(|t| t.port == port) {
                    self.releases.insert(digest, port);
                    self.wake.notify_one();
                }
                continue;
            };
            match answer {
                Holding::Held => {
                    if tracked.owner != Owner::Held {
                        tracing::info!(vm = vm.0, name = ?port.name, "VM port held: this instance writes its console log");
                    }
                    tracked.owner = Owner::Held;
                    if let Some(kept) = tracked.unlogged.take() {
                        if !kept.is_empty() {
                            settled.logs.push((vm, kept));
                        }
                    }
                }
                Holding::HeldBy(other) if tracked.owner == Owner::Held => {
                    tracing::warn!(vm = vm.0, name = ?port.name, holder = ?other, "VM port held by another instance since this one lost its lease: closing the stale connection");
                    self.ports.remove(&vm);
                    settled.stale.push((vm, other));
                }
                Holding::HeldBy(other) => {
                    if tracked.owner != Owner::HeldBy(other.clone()) {
                        tracing::info!(vm = vm.0, name = ?port.name, holder = ?other, "VM port held by another instance: served here as a duplicate, not logged");
                    }
                    tracked.owner = Owner::HeldBy(other);
                    tracked.unlogged = None;
                }
            }
        }
        settled
    }
}

/// Claims new ports in batches, renews every port every third of the lease, releases the
/// ports whose connection closed; until shutdown.
async fn run_leases(
    shared: Arc<Shared>,
    state: Arc<dyn SharedState>,
    me: Instance,
    lease: Duration,
    wake: Arc<Notify>,
) {
    let mut stop = shared.stop.subscribe();
    let period = lease / 3;
    // The first round renews: it announces the instance.
    let mut renew_at = Instant::now();
    loop {
        let woken = tokio::select! {
            _ = tokio::time::sleep_until(renew_at.into()) => false,
            _ = wake.notified() => true,
            _ = stop.wait_for(|stop| *stop) => return,
        };
        if woken {
            tokio::time::sleep(BATCH_PAUSE).await;
        }
        let renewal = Instant::now() >= renew_at;
        let started = Instant::now();
        // One command renews the lease of every port held here; only a lapsed lease (or a
        // store restarted empty) makes every port be asked for again.
        let renewed = if renewal {
            Some(state.renew(&me, lease).await)
        } else {
            None
        };
        let full = matches!(renewed, Some(Ok(false)));
        let work = shared.lock().lease_work(renewal, full);
        let Some(work) = work else {
            return;
        };
        if !work.releases.is_empty() {
            if let Err(error) = state.release(&me, &work.releases).await {
                tracing::debug!(%error, "releasing VM ports failed: asked again next round");
                shared.lock().lease_release_failed(work.releases.clone());
            }
        }
        let answers = match renewed {
            Some(Err(error)) => Some(Err(error)),
            _ if !work.claims.is_empty() => {
                let ports: Vec<SitePort> = work.claims.iter().map(|(_, p)| p.clone()).collect();
                Some(state.hold(&me, &ports, lease).await)
            }
            Some(Ok(_)) => Some(Ok(Vec::new())),
            None => None,
        };
        shared.lock().lease_settle(work, answers);
        if renewal {
            renew_at = started + period;
        }
    }
}

/// The default instance name: the host's name and the advertised VM address, unique per
/// instance even with several on one host.
pub(crate) fn default_instance(advertise: SocketAddr) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_graphic()))
        .unwrap_or_else(|| "vspc".to_owned());
    format!("{host}@{advertise}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(n: u8) -> SitePort {
        SitePort {
            uuid: format!("{n:032x}"),
            service_uri: "vSPC.py".to_owned(),
            name: format!("vm-{n}"),
        }
    }

    fn ownership() -> Ownership {
        Ownership::new(
            Instance::new("a", SocketAddr::from(([127, 0, 0, 1], 1))).unwrap(),
            Duration::from_secs(1),
        )
    }

    #[test]
    fn output_waits_for_the_first_answer_and_goes_where_the_port_is_held() {
        let mut o = ownership();
        o.connected(VmId(1), port(1));
        o.connected(VmId(2), port(2));
        assert_eq!(o.gate(VmId(1), b"boot1;"), Gate::Kept);
        assert_eq!(o.gate(VmId(2), b"boot2;"), Gate::Kept);
        assert_eq!(o.label(VmId(1)), "pending");
        let work = o.work(false, false);
        assert_eq!(work.claims.len(), 2);
        let answers = work
            .claims
            .iter()
            .map(|(vm, _)| match vm.0 {
                1 => Holding::Held,
                _ => Holding::HeldBy("b".to_owned()),
            })
            .collect();
        let settled = o.settle(work, Some(Ok(answers)));
        assert_eq!(settled.logs, [(VmId(1), b"boot1;".to_vec())]);
        assert!(settled.stale.is_empty());
        assert_eq!(o.gate(VmId(1), b"x"), Gate::Write(None));
        assert_eq!(o.gate(VmId(2), b"x"), Gate::Skip);
        assert_eq!(o.label(VmId(2)), "held_by:b");
        assert_eq!(o.counts(), (1, 1));
        // Untracked entries (a flagged duplicate within this instance) log as before.
        assert_eq!(o.gate(VmId(9), b"x"), Gate::Write(None));
        assert_eq!(o.label(VmId(9)), "unshared");
        // Nothing new: a round without renewal claims nothing.
        assert!(o.work(false, false).claims.is_empty());
    }

    #[test]
    fn a_held_port_seen_held_elsewhere_is_stale_and_never_claimed_again() {
        let mut o = ownership();
        o.connected(VmId(1), port(1));
        let work = o.work(true, false);
        o.settle(work, Some(Ok(vec![Holding::Held])));
        // While the lease is renewed in time, a renewal asks for no held port again.
        let work = o.work(true, false);
        assert!(work.claims.is_empty());
        o.settle(work, Some(Ok(Vec::new())));
        // The lease lapsed: every port is asked for, and one held elsewhere now is stale.
        let work = o.work(true, true);
        let settled = o.settle(work, Some(Ok(vec![Holding::HeldBy("b".to_owned())])));
        assert_eq!(settled.stale, [(VmId(1), "b".to_owned())]);
        assert!(o.work(true, true).claims.is_empty());
        // Its connection closing releases nothing (it was not held here any more).
        o.gone(VmId(1));
        assert!(o.work(true, false).releases.is_empty());
        assert_eq!(o.renewals, 3);
    }

    #[test]
    fn a_closed_held_port_is_released_and_a_lost_claim_given_back() {
        let mut o = ownership();
        o.connected(VmId(1), port(1));
        o.connected(VmId(2), port(2));
        let work = o.work(false, false);
        let answers = vec![Holding::Held; work.claims.len()];
        o.settle(work, Some(Ok(answers)));
        o.gone(VmId(1));
        let work = o.work(false, false);
        assert_eq!(work.releases, [port(1)]);
        // Port 3 connects, and goes while its claim is under way: what it won is released.
        o.connected(VmId(3), port(3));
        let work = o.work(false, false);
        o.gone(VmId(3));
        o.settle(work, Some(Ok(vec![Holding::Held])));
        assert_eq!(o.work(false, false).releases, [port(3)]);
        // A port that reconnects before its release went out is not released.
        o.gone(VmId(2));
        o.connected(VmId(4), port(2));
        assert!(o.work(false, false).releases.is_empty());
        // A release the store did not take is asked again, unless the port came back.
        o.release_failed(vec![port(3), port(2)]);
        assert_eq!(o.work(false, false).releases, [port(3)]);
    }

    #[test]
    fn a_store_failure_logs_what_waited_and_everything_after() {
        let mut o = ownership();
        o.connected(VmId(1), port(1));
        assert_eq!(o.gate(VmId(1), b"early;"), Gate::Kept);
        let work = o.work(false, false);
        let settled = o.settle(
            work,
            Some(Err(SharedStateError::Unavailable("down".to_owned()))),
        );
        assert_eq!(settled.logs, [(VmId(1), b"early;".to_vec())]);
        assert!(!o.store_up());
        assert_eq!(o.errors, 1);
        assert_eq!(o.gate(VmId(1), b"late"), Gate::Write(None));
        // A port connecting while the store is down logs at once.
        o.connected(VmId(2), port(2));
        assert_eq!(o.gate(VmId(2), b"x"), Gate::Write(None));
        // Back: the renewal holds both.
        let work = o.work(true, false);
        assert_eq!(work.claims.len(), 2);
        o.settle(work, Some(Ok(vec![Holding::Held, Holding::Held])));
        assert!(o.store_up());
        assert_eq!(o.counts(), (2, 0));
    }

    #[test]
    fn kept_output_is_bounded() {
        let mut o = ownership();
        o.connected(VmId(1), port(1));
        let chunk = vec![b'x'; MAX_UNLOGGED / 2];
        assert_eq!(o.gate(VmId(1), &chunk), Gate::Kept);
        assert_eq!(o.gate(VmId(1), &chunk), Gate::Kept);
        assert_eq!(
            o.gate(VmId(1), b"y"),
            Gate::Write(Some(vec![b'x'; MAX_UNLOGGED]))
        );
        assert_eq!(o.gate(VmId(1), b"z"), Gate::Write(None));
    }

    #[test]
    fn the_default_instance_name_carries_the_address() {
        let name = default_instance(SocketAddr::from(([10, 0, 0, 5], 13370)));
        assert!(name.ends_with("@10.0.0.5:13370"), "{name}");
        assert!(name.chars().all(|c| c.is_ascii_graphic()));
    }
}
