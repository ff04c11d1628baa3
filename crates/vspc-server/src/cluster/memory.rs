//! The shared state in this process's memory: concentrators embedded in one process.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{
    fresh_token, Holding, Instance, SharedState, SitePort, SiteSelector, SiteVm, StateFuture,
};

/// Handover records and the directory in this process's memory, with the same semantics as
/// [`RedisState`](super::RedisState): concentrators embedded in one process, or tests.
#[derive(Debug, Default)]
pub struct MemoryState {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    handovers: HashMap<String, (SocketAddr, Instant)>,
    /// Instance id → its announcement, until.
    instances: HashMap<String, (Instance, Instant)>,
    /// Port digest → the port, and its holder's id and incarnation (held while that
    /// announcement lives).
    ports: HashMap<String, (SitePort, String, u64)>,
    token: Option<String>,
}

impl Inner {
    fn expire(&mut self, now: Instant) {
        self.handovers.retain(|_, (_, until)| *until > now);
        self.instances.retain(|_, (_, until)| *until > now);
        let instances = &self.instances;
        self.ports.retain(|_, (_, holder, incarnation)| {
            instances
                .get(holder)
                .is_some_and(|(me, _)| me.incarnation == *incarnation)
        });
    }

    /// Announces `me` until `until`; whether this very run's announcement was live.
    fn announce(&mut self, me: &Instance, until: Instant) -> bool {
        let before = self.instances.insert(me.id.clone(), (me.clone(), until));
        let continuous = before.as_ref().is_some_and(|(was, _)| was == me);
        if before.is_some() && !continuous {
            // A new run under the same name: the last run's ports are not its own.
            self.expire(Instant::now());
        }
        continuous
    }

    fn held(&self, filter: impl Fn(&SitePort) -> bool) -> Vec<SiteVm> {
        self.ports
            .values()
            .filter(|(port, _, _)| filter(port))
            .filter_map(|(port, holder, _)| {
                let (instance, _) = self.instances.get(holder)?;
                Some(SiteVm {
                    port: port.clone(),
                    instance: instance.clone(),
                })
            })
            .collect()
    }
}

impl MemoryState {
    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.expire(Instant::now());
        f(&mut inner)
    }
}

impl SharedState for MemoryState {
    fn offer(&self, digest: &str, owner: SocketAddr, ttl: Duration) -> StateFuture<'_, ()> {
        let until = Instant::now() + ttl;
        self.with(|inner| inner.handovers.insert(digest.to_owned(), (owner, until)));
        Box::pin(async { Ok(()) })
    }

    fn claim(&self, digest: &str) -> StateFuture<'_, Option<SocketAddr>> {
        let owner = self.with(|inner| inner.handovers.remove(digest).map(|(owner, _)| owner));
        Box::pin(async move { Ok(owner) })
    }

    fn renew(&self, me: &Instance, lease: Duration) -> StateFuture<'_, bool> {
        let until = Instant::now() + lease;
        let continuous = self.with(|inner| inner.announce(me, until));
        Box::pin(async move { Ok(continuous) })
    }

    fn hold(
        &self,
        me: &Instance,
        ports: &[SitePort],
        lease: Duration,
    ) -> StateFuture<'_, Vec<Holding>> {
        let until = Instant::now() + lease;
        let answers = self.with(|inner| {
            inner.announce(me, until);
            ports
                .iter()
                .map(|port| {
                    let digest = port.digest();
                    // Expired holders' ports are gone already (`expire`).
                    match inner.ports.get(&digest) {
                        Some((_, holder, _)) if *holder != me.id => Holding::HeldBy(holder.clone()),
                        _ => {
                            inner
                                .ports
                                .insert(digest, (port.clone(), me.id.clone(), me.incarnation));
                            Holding::Held
                        }
                    }
                })
                .collect()
        });
        Box::pin(async move { Ok(answers) })
    }

    fn release(&self, me: &Instance, ports: &[SitePort]) -> StateFuture<'_, ()> {
        self.with(|inner| {
            for port in ports {
                let digest = port.digest();
                let mine = |(_, holder, incarnation): &(SitePort, String, u64)| {
                    *holder == me.id && *incarnation == me.incarnation
                };
                if inner.ports.get(&digest).is_some_and(mine) {
                    inner.ports.remove(&digest);
                }
            }
        });
        Box::pin(async { Ok(()) })
    }

    fn locate(&self, selector: &str) -> StateFuture<'_, Vec<SiteVm>> {
        let found = match SiteSelector::parse(selector) {
            Some(selector) => self.with(|inner| inner.held(|port| port.matches(&selector))),
            None => Vec::new(),
        };
        Box::pin(async move { Ok(found) })
    }

    fn site(&self) -> StateFuture<'_, Vec<SiteVm>> {
        let all = self.with(|inner| inner.held(|_| true));
        Box::pin(async move { Ok(all) })
    }

    fn site_token(&self) -> StateFuture<'_, String> {
        let token = self.with(|inner| match &inner.token {
            Some(token) => Ok(token.clone()),
            None => {
                let token = fresh_token()?;
                inner.token = Some(token.clone());
                Ok(token)
            }
        });
        Box::pin(async move { token })
    }
}
