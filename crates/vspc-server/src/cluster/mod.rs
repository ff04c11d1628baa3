//! Several concentrators behaving as one: what they share through a store.
//!
//! **vMotions.** A vMotion's destination host may reach another instance than its source's (a
//! virtual IP, round-robin DNS): the proxyURI is the same, and option 232 has no redirect.
//! So the instance that answers a BEGIN with GOAHEAD publishes where it can be reached under
//! a digest of the vMotion's key (`sequence ++ secret`), and an instance that receives a
//! PEER for a key it does not hold claims that record (atomically, once) and carries the
//! destination connection to the owner ([`carry`]). The owner checks the secret as for any
//! PEER and completes the vMotion itself, so its clients stay where they are and its console
//! log stays its own.
//!
//! **The directory.** Each instance holds the VM ports whose live connection it has
//! ([`SharedState::hold`]) under one renewable lease, its announcement
//! ([`SharedState::renew`]): a port is held by one instance at a time, a port whose holder
//! keeps renewing is never taken over (a second live connection claiming a held identity is
//! a duplicate, as within one instance), and the ports of an instance whose lease lapses (it
//! died, or lost the store for longer than the lease) are free for the instances their VMs
//! reconnect to. An instance that comes back after its lease lapsed learns so from its next
//! renewal, asks again for each of its ports, and claims none that others hold now. The directory
//! answers which instance holds a port and how to reach it ([`SharedState::locate`],
//! [`SharedState::site`]).
//!
//! The store is a [`SharedState`]: [`RedisState`] (Redis or Valkey, shared by the
//! instances) or [`MemoryState`] (instances in one process, e.g. an embedder's tests).
//! Without one (the default), every PEER is answered where it arrives.

mod carry;
mod lease;
mod memory;
mod redis;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

pub(crate) use carry::{carry, MAX_REPLAY};
pub(crate) use lease::{default_instance, Gate, Ownership, Work};
pub use memory::MemoryState;
pub use redis::RedisState;

/// A boxed future, for the object-safe [`SharedState`].
pub type StateFuture<'a, T> =
    Pin<Box<dyn Future<Output = Result<T, SharedStateError>> + Send + 'a>>;

/// Why the shared state could not answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SharedStateError {
    /// The store could not be reached or failed the command.
    #[error("shared state unavailable: {0}")]
    Unavailable(String),
    /// A record held something that is not what this version writes.
    #[error("shared state record is malformed: {0:?}")]
    BadRecord(String),
}

/// One VM serial port, as an instance announces it to the directory.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct SitePort {
    /// The VM's VC UUID, as the VM announced it.
    pub uuid: String,
    /// The service URI of the port's DO-PROXY: the ports of one VM differ by it.
    pub service_uri: String,
    /// The VM's name.
    pub name: String,
}

impl SitePort {
    /// The port's record name in the store: a digest of its identity (UUID and service URI),
    /// the same on every instance.
    pub fn digest(&self) -> String {
        let mut hash = Sha256::new();
        hash.update(self.uuid.as_bytes());
        hash.update([0]);
        hash.update(self.service_uri.as_bytes());
        hex(&hash.finalize()[..16])
    }

    /// Whether `selector` (parsed) names this port.
    fn matches(&self, selector: &SiteSelector) -> bool {
        let who = match &selector.who {
            Who::Name(name) => self.name == *name,
            Who::Uuid(compact) => vspc_concentrator::compact_hex(&self.uuid) == *compact,
        };
        who && selector.label.as_deref().is_none_or(|label| {
            vspc_concentrator::label_of(&self.service_uri) == label || self.service_uri == label
        })
    }
}

/// An instance of the site: its name and where the others reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// Its name, unique in the site (`[cluster] instance`).
    pub id: String,
    /// Where it accepts attaches from the other instances' clients.
    pub link: SocketAddr,
    /// Which run of the instance this is: an instance restarted under the same name is a new
    /// incarnation, so the ports its previous run held are not taken for its own.
    pub incarnation: u64,
}

impl Instance {
    /// This run of instance `id`, reached at `link`: a fresh random incarnation.
    pub fn new(id: impl Into<String>, link: SocketAddr) -> Result<Instance, SharedStateError> {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).map_err(|e| {
            SharedStateError::Unavailable(format!("no randomness for the incarnation: {e}"))
        })?;
        Ok(Instance {
            id: id.into(),
            link,
            incarnation: u64::from_le_bytes(bytes),
        })
    }
}

/// A VM port of the site, with the instance holding its live connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteVm {
    /// The port.
    pub port: SitePort,
    /// The instance holding it.
    pub instance: Instance,
}

/// Who holds a port after [`SharedState::hold`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Holding {
    /// This instance: the lease is (still) its own.
    Held,
    /// Another instance's live lease: this instance's connection is a duplicate, or a stale
    /// one (the VM reconnected there while this instance was away).
    HeldBy(String),
}

/// Where concentrators that behave as one keep their vMotion handover records and their
/// directory of VM ports.
pub trait SharedState: Send + Sync + 'static {
    /// Records that the vMotion whose key hashes to `digest` is held by the instance
    /// reachable at `owner`, for `ttl`.
    fn offer(&self, digest: &str, owner: SocketAddr, ttl: Duration) -> StateFuture<'_, ()>;
    /// Takes the record for `digest`: `Some(owner)` once, `None` for every later claim or
    /// an unknown or expired digest.
    fn claim(&self, digest: &str) -> StateFuture<'_, Option<SocketAddr>>;
    /// Renews `me`'s announcement for `lease`, and with it every port `me` holds: a port is
    /// held as long as its holder's announcement lives, so a renewal is one store command
    /// however many ports the instance holds. `false`: the announcement had lapsed (this
    /// instance was away longer than the lease, or the store restarted empty), so others may
    /// hold its ports now or the store may have lost them: [`hold`](Self::hold) them again
    /// to learn which.
    fn renew(&self, me: &Instance, lease: Duration) -> StateFuture<'_, bool>;
    /// Announces `me` for `lease` (as [`renew`](Self::renew)) and claims each of `ports`: a
    /// port nobody holds (new, or its holder's announcement lapsed, or lost with a restarted
    /// store) becomes `me`'s, one `me` holds stays so, one whose holder's announcement is
    /// live is left alone. One answer per port, in order.
    fn hold(
        &self,
        me: &Instance,
        ports: &[SitePort],
        lease: Duration,
    ) -> StateFuture<'_, Vec<Holding>>;
    /// Gives up `me`'s leases on `ports` (their connections closed); others' stay untouched.
    fn release(&self, me: &Instance, ports: &[SitePort]) -> StateFuture<'_, ()>;
    /// The held ports that `selector` names: a name or a VC UUID (canonical, compact or vmx
    /// form), optionally followed by `/label` (the `port=` of the service URI, or the whole
    /// URI), as a client selects a VM. Entry numbers are each instance's own: they match
    /// nothing here.
    fn locate(&self, selector: &str) -> StateFuture<'_, Vec<SiteVm>>;
    /// Every held port of the site.
    fn site(&self) -> StateFuture<'_, Vec<SiteVm>>;
    /// A random secret shared by the site's instances (made by the first to ask), which
    /// authenticates them to each other.
    fn site_token(&self) -> StateFuture<'_, String>;
}

/// A client's selector, in the directory's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SiteSelector {
    pub(crate) who: Who,
    pub(crate) label: Option<String>,
}

/// What a selector names a VM by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Who {
    Name(String),
    /// A VC UUID's 32 hex digits, lowercase.
    Uuid(String),
}

impl SiteSelector {
    /// Parses a selector as the core's registry does; `None` for an entry number (local to
    /// each instance) or an empty one.
    pub(crate) fn parse(selector: &str) -> Option<SiteSelector> {
        if selector.is_empty() || selector.parse::<u64>().is_ok() {
            return None;
        }
        let (who, label) = match selector.split_once('/') {
            Some((who, label)) if !who.contains(':') => (who, Some(label.to_owned())),
            _ => (selector, None),
        };
        let compact = vspc_concentrator::compact_hex(who);
        let who = if compact.len() == 32
            && who
                .chars()
                .all(|c| c.is_ascii_hexdigit() || " -:".contains(c))
        {
            Who::Uuid(compact)
        } else {
            Who::Name(who.to_owned())
        };
        Some(SiteSelector { who, label })
    }
}

/// What an instance shares, and how it is reached.
#[derive(Clone)]
pub(crate) struct Cluster {
    pub(crate) state: Arc<dyn SharedState>,
    /// This instance's VM listener, as the others reach it.
    pub(crate) advertise: SocketAddr,
    /// This instance's name in the site (`[cluster] instance`).
    pub(crate) instance: String,
    /// Where this instance accepts links from the other instances' clients, as they reach
    /// it (`[cluster] link_advertise`, else the bound `link_listen`).
    pub(crate) link: SocketAddr,
    /// The site token, once read from the store (it never changes).
    pub(crate) token: Arc<tokio::sync::OnceCell<String>>,
}

/// A record outlives its vMotion's deadline by this much (clocks and queues differ a little).
const RECORD_MARGIN: Duration = Duration::from_secs(5);

/// The record name of a vMotion key: a digest, so the store never holds a secret.
pub(crate) fn digest(key: &[u8]) -> String {
    hex(&Sha256::digest(key))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A fresh site token: 32 random bytes in hex.
fn fresh_token() -> Result<String, SharedStateError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| {
        SharedStateError::Unavailable(format!("no randomness for the site token: {e}"))
    })?;
    Ok(hex(&bytes))
}

impl Cluster {
    /// The site token (asked of the store once, then kept).
    pub(crate) async fn site_token(&self) -> Result<String, SharedStateError> {
        self.token
            .get_or_try_init(|| self.state.site_token())
            .await
            .cloned()
    }

    /// The record's lifetime for a vMotion that expires at `deadline`.
    pub(crate) fn ttl(deadline: Instant, now: Instant) -> Duration {
        deadline.saturating_duration_since(now) + RECORD_MARGIN
    }
}

#[cfg(test)]
mod tests;
