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
    /// Instance id → its link address, until.
    instances: HashMap<String, (SocketAddr, Instant)>,
    /// Port digest → the port, its holder, until.
    ports: HashMap<String, (SitePort, String, Instant)>,
    token: Option<String>,
}

impl Inner {
    fn expire(&mut self, now: Instant) {
        self.handovers.retain(|_, (_, until)| *until > now);
        self.instances.retain(|_, (_, until)| *until > now);
        self.ports.retain(|_, (_, _, until)| *until > now);
    }

    fn held(&self, filter: impl Fn(&SitePort) -> bool) -> Vec<SiteVm> {
        self.ports
            .values()
            .filter(|(port, _, _)| filter(port))
            .filter_map(|(port, holder, _)| {
                let (link, _) = self.instances.get(holder)?;
                Some(SiteVm {
                    port: port.clone(),
                    instance: Instance {
                        id: holder.clone(),
                        link: *link,
                    },
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

    fn hold(
        &self,
        me: &Instance,
        ports: &[SitePort],
        lease: Duration,
    ) -> StateFuture<'_, Vec<Holding>> {
        let until = Instant::now() + lease;
        let answers = self.with(|inner| {
            inner.instances.insert(me.id.clone(), (me.link, until));
            ports
                .iter()
                .map(|port| {
                    let digest = port.digest();
                    match inner.ports.get_mut(&digest) {
                        Some((_, holder, _)) if *holder != me.id => Holding::HeldBy(holder.clone()),
                        Some((_, _, held_until)) => {
                            *held_until = until;
                            Holding::Held
                        }
                        None => {
                            inner
                                .ports
                                .insert(digest, (port.clone(), me.id.clone(), until));
                            Holding::Held
                        }
                    }
                })
                .collect()
        });
        Box::pin(async move { Ok(answers) })
    }

    fn release(&self, me: &str, ports: &[SitePort]) -> StateFuture<'_, ()> {
        self.with(|inner| {
            for port in ports {
                let digest = port.digest();
                if inner
                    .ports
                    .get(&digest)
                    .is_some_and(|(_, holder, _)| holder == me)
                {
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
