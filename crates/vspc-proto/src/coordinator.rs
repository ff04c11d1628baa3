//! The vMotion coordinator: one per concentrator, shared by all VM connections.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::message::VmotionKey;
use crate::proxy::ProxySession;
use crate::session::{deadline_after, SessionId};

/// Where vMotion secrets come from. The default is the operating system's CSPRNG
/// ([`OsRandom`]); tests inject a closure to force chosen bytes.
///
/// ```
/// use vspc_proto::{Coordinator, CoordinatorConfig};
///
/// // Every secret is 0xFF 0xF0 0xFF 0xF0: bytes the encoder must escape or keep.
/// let coordinator = Coordinator::with_secret_source(
///     CoordinatorConfig { secret_len: 4, ..CoordinatorConfig::default() },
///     |secret: &mut [u8]| {
///         for (i, b) in secret.iter_mut().enumerate() {
///             *b = if i % 2 == 0 { 0xff } else { 0xf0 };
///         }
///         Ok(())
///     },
/// );
/// # drop(coordinator);
/// ```
pub trait SecretSource: Send {
    /// Fills `secret` with unpredictable bytes.
    fn fill(&mut self, secret: &mut [u8]) -> Result<(), SecretError>;
}

/// The secret source failed; the BEGIN is answered with NOTNOW.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("secret source failed: {message}")]
pub struct SecretError {
    message: String,
}

impl SecretError {
    /// An error with a description.
    pub fn new(message: impl Into<String>) -> Self {
        SecretError {
            message: message.into(),
        }
    }
}

/// The operating system's CSPRNG, through `getrandom`.
#[derive(Debug, Clone, Copy, Default)]
pub struct OsRandom;

impl SecretSource for OsRandom {
    fn fill(&mut self, secret: &mut [u8]) -> Result<(), SecretError> {
        getrandom::fill(secret).map_err(|e| SecretError::new(e.to_string()))
    }
}

impl<F> SecretSource for F
where
    F: FnMut(&mut [u8]) -> Result<(), SecretError> + Send,
{
    fn fill(&mut self, secret: &mut [u8]) -> Result<(), SecretError> {
        self(secret)
    }
}

/// Configuration of a [`Coordinator`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoordinatorConfig {
    /// Length of each secret in bytes. Default: 8 (as VMware's own proxy).
    pub secret_len: usize,
    /// How long a vMotion may stay pending after GOAHEAD before it expires (a vMotion the
    /// source cancels before it sees GOAHEAD ends with no ABORT). Held client data is
    /// released to the source at that deadline. Default: 30 s.
    pub vmotion_timeout: Duration,
    /// Cap on vMotions pending at once; beyond it BEGIN gets NOTNOW. Default: 4096.
    pub max_pending: usize,
    /// Refuse BEGIN (NOTNOW) from a connection that has not sent its VM-VC-UUID. Default: true.
    pub require_identified: bool,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            secret_len: 8,
            vmotion_timeout: Duration::from_secs(30),
            max_pending: 4096,
            require_identified: true,
        }
    }
}

/// Why a BEGIN was answered with NOTNOW.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NotNowReason {
    /// The connection has not identified itself (no VM-VC-UUID yet).
    Unidentified,
    /// A vMotion of this connection is pending and a destination already claimed it.
    AlreadyPending,
    /// The application said no.
    Vetoed,
    /// [`CoordinatorConfig::max_pending`] vMotions are pending.
    Capacity,
    /// The secret source failed.
    SecretUnavailable(SecretError),
    /// Could not mint a key distinct from the pending ones (only with a tiny `secret_len`).
    KeyCollision,
}

/// The answer [`Coordinator::begin`] gave.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BeginOutcome {
    /// GOAHEAD was queued; client data is held from now on.
    GoAhead {
        /// `sequence ++ secret`, split known.
        key: VmotionKey,
        /// When the vMotion expires if neither COMPLETE nor ABORT comes.
        deadline: Instant,
    },
    /// NOTNOW was queued.
    NotNow(NotNowReason),
    /// The session has no unanswered BEGIN (already answered, or aborted meanwhile).
    NoRequest,
}

/// Why a PEER was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RejectReason {
    /// No pending vMotion has this `sequence ++ secret` (or it expired).
    UnknownKey,
    /// Another destination connection already claimed it.
    AlreadyClaimed,
    /// The claim came on the source connection itself.
    OwnKey,
}

/// The answer [`Coordinator::claim`] gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClaimOutcome {
    /// PEER-OK was queued.
    Accepted {
        /// The source connection of the vMotion.
        source: SessionId,
    },
    /// UNKNOWN-SUBOPTION-RCVD-2(44) was queued.
    Rejected(RejectReason),
    /// The session has no unanswered PEER.
    NoRequest,
}

/// The result of [`Coordinator::complete`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CompleteOutcome {
    /// The VM now runs behind the destination session: route client data there. The held
    /// client data was queued to the destination first. The source session will not carry
    /// the VM again; drop it once closed (it may already be).
    Switched {
        /// The source connection.
        source: SessionId,
        /// Held client bytes queued to the destination.
        replayed: usize,
        /// Whether the source had already closed.
        source_closed: bool,
    },
    /// The session passed as `source` is not the vMotion's source; nothing changed.
    WrongSource {
        /// The source the vMotion came from.
        expected: SessionId,
    },
    /// The vMotion is no longer pending (expired or aborted); nothing changed.
    NotPending,
    /// The destination has no unanswered COMPLETE.
    NoRequest,
}

/// What [`Coordinator::session_closed`] says about a closed connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseOutcome {
    /// An ordinary close: tear down what belongs to this connection.
    Closed,
    /// The source of a pending vMotion closed (ESXi closes it as the destination completes,
    /// in either order). Keep the VM, its clients and **this session object** (it holds
    /// client data) until [`Coordinator::complete`] switches the VM or
    /// [`CoordinatorEvent::Expired`] reports the vMotion dead.
    Migrating {
        /// The destination that claimed the vMotion, if one did yet.
        peer: Option<SessionId>,
    },
    /// The VM already moved to `to`: drop this session, keep the VM.
    MigratedAway {
        /// The connection now carrying the VM.
        to: SessionId,
    },
}

/// What the coordinator reports on its own (drain with [`Coordinator::poll_event`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CoordinatorEvent {
    /// A vMotion reached its deadline with neither COMPLETE nor ABORT. If the source is still
    /// open, it released its held data at the same deadline and carries on. If it had
    /// closed (`source_closed`), the VM's connection is gone: tear the VM down and drop the
    /// source session.
    Expired {
        /// The source connection.
        source: SessionId,
        /// The vMotion's sequence.
        sequence: Bytes,
        /// The destination that had claimed it, if any.
        peer: Option<SessionId>,
        /// Whether the source had closed.
        source_closed: bool,
    },
}

#[derive(Debug)]
struct Pending {
    source: SessionId,
    sequence: Bytes,
    deadline: Instant,
    order: u64,
    peer: Option<SessionId>,
    source_closed: bool,
}

/// Matches vMotion sources and destinations, one per concentrator.
///
/// It mints each GOAHEAD's secret from a CSPRNG, matches PEER by `sequence ++ secret` only
/// (never by UUID or name: only the secret authenticates a connection that claims a VM),
/// keeps pending vMotions bounded and expires them by deadline.
///
/// Sessions never call it: the application hands it the session whose event needs it, so a
/// multi-threaded proxy touches the coordinator (and its lock) only on vMotion events.
///
/// # Driving order
/// - [`ProxyEvent::VmotionBegin`](crate::ProxyEvent::VmotionBegin) ->
///   [`begin`](Self::begin) (GOAHEAD or NOTNOW is queued on the session).
/// - [`ProxyEvent::PeerClaim`](crate::ProxyEvent::PeerClaim) -> [`claim`](Self::claim)
///   (PEER-OK or UNKNOWN-SUBOPTION-RCVD-2(44)).
/// - [`ProxyEvent::VmotionComplete`](crate::ProxyEvent::VmotionComplete) ->
///   [`complete`](Self::complete) with the destination and the source session; then route
///   the VM's client data to the destination.
/// - [`ProxyEvent::VmotionAbort`](crate::ProxyEvent::VmotionAbort) -> [`abort`](Self::abort).
/// - A connection's EOF or error -> [`session_closed`](Self::session_closed).
/// - Timer: [`poll_timeout`](Self::poll_timeout) / [`handle_timeout`](Self::handle_timeout),
///   then drain [`poll_event`](Self::poll_event).
///
/// After each call, drain the session's `poll_transmit`.
pub struct Coordinator {
    config: CoordinatorConfig,
    secrets: Box<dyn SecretSource>,
    pending: HashMap<Bytes, Pending>,
    by_source: HashMap<SessionId, Bytes>,
    deadlines: BTreeMap<(Instant, u64), Bytes>,
    next_order: u64,
    events: VecDeque<CoordinatorEvent>,
}

impl fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Coordinator")
            .field("config", &self.config)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl Default for Coordinator {
    fn default() -> Self {
        Coordinator::new(CoordinatorConfig::default())
    }
}

impl Coordinator {
    /// A coordinator drawing secrets from the OS CSPRNG.
    pub fn new(config: CoordinatorConfig) -> Self {
        Coordinator::with_secret_source(config, OsRandom)
    }

    /// A coordinator drawing secrets from `secrets`.
    pub fn with_secret_source(
        config: CoordinatorConfig,
        secrets: impl SecretSource + 'static,
    ) -> Self {
        Coordinator {
            config,
            secrets: Box::new(secrets),
            pending: HashMap::new(),
            by_source: HashMap::new(),
            deadlines: BTreeMap::new(),
            next_order: 0,
            events: VecDeque::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &CoordinatorConfig {
        &self.config
    }

    /// How many vMotions are pending.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Whether `source` has a pending vMotion.
    pub fn is_pending(&self, source: SessionId) -> bool {
        self.by_source.contains_key(&source)
    }

    /// Whether `key` (`sequence ++ secret`, as a PEER carries it) names a vMotion pending
    /// here: where several concentrators share vMotions, a PEER for a key held nowhere
    /// locally is routed to the instance that issued it.
    pub fn holds(&self, key: &[u8]) -> bool {
        self.pending.contains_key(key)
    }

    fn remove(&mut self, key: &[u8]) -> Option<Pending> {
        let pending = self.pending.remove(key)?;
        self.deadlines.remove(&(pending.deadline, pending.order));
        if self.by_source.get(&pending.source).map(|k| &k[..]) == Some(key) {
            self.by_source.remove(&pending.source);
        }
        Some(pending)
    }

    /// Answers the session's VMOTION-BEGIN: GOAHEAD with a fresh secret, or NOTNOW when
    /// `allow` is false (the application's veto), the VM is unidentified (see
    /// [`CoordinatorConfig::require_identified`]), a claimed vMotion of this connection is
    /// pending, the pending cap is reached or the secret source fails.
    ///
    /// A second BEGIN while an unclaimed vMotion of the same connection is pending supersedes
    /// it (the source gave up on it), so a BEGIN never wedges.
    pub fn begin(&mut self, now: Instant, session: &mut ProxySession, allow: bool) -> BeginOutcome {
        let Some(sequence) = session.pending_begin().cloned() else {
            return BeginOutcome::NoRequest;
        };
        let id = session.id();
        if let Some(old) = self.by_source.get(&id).cloned() {
            if self.pending.get(&old).is_some_and(|p| p.peer.is_some()) {
                session.not_now(true);
                return BeginOutcome::NotNow(NotNowReason::AlreadyPending);
            }
            self.remove(&old);
        }
        let refusal = if !allow {
            Some(NotNowReason::Vetoed)
        } else if self.config.require_identified && !session.identity().is_identified() {
            Some(NotNowReason::Unidentified)
        } else if self.pending.len() >= self.config.max_pending {
            Some(NotNowReason::Capacity)
        } else {
            None
        };
        let key = match refusal {
            Some(reason) => Err(reason),
            None => self.mint(&sequence),
        };
        match key {
            Err(reason) => {
                session.not_now(false);
                BeginOutcome::NotNow(reason)
            }
            Ok(key) => {
                let deadline = deadline_after(now, self.config.vmotion_timeout);
                let order = self.next_order;
                self.next_order += 1;
                let bytes = key.bytes().clone();
                self.deadlines.insert((deadline, order), bytes.clone());
                self.by_source.insert(id, bytes.clone());
                self.pending.insert(
                    bytes,
                    Pending {
                        source: id,
                        sequence: sequence.clone(),
                        deadline,
                        order,
                        peer: None,
                        source_closed: false,
                    },
                );
                session.go_ahead(&key, sequence, deadline);
                BeginOutcome::GoAhead { key, deadline }
            }
        }
    }

    fn mint(&mut self, sequence: &[u8]) -> Result<VmotionKey, NotNowReason> {
        let mut secret = vec![0u8; self.config.secret_len];
        for _ in 0..4 {
            self.secrets
                .fill(&mut secret)
                .map_err(NotNowReason::SecretUnavailable)?;
            let key = VmotionKey::new(sequence, &secret);
            if !self.pending.contains_key(key.as_bytes()) {
                return Ok(key);
            }
        }
        Err(NotNowReason::KeyCollision)
    }

    /// Answers the session's VMOTION-PEER: PEER-OK (sequence only) when `sequence ++ secret`
    /// is pending, unexpired and unclaimed by another connection; otherwise
    /// UNKNOWN-SUBOPTION-RCVD-2(44), which makes the destination give up.
    pub fn claim(&mut self, now: Instant, session: &mut ProxySession) -> ClaimOutcome {
        let Some(key) = session.pending_claim().cloned() else {
            return ClaimOutcome::NoRequest;
        };
        let id = session.id();
        let verdict = match self.pending.get_mut(key.as_bytes()) {
            None => Err(RejectReason::UnknownKey),
            Some(p) if p.deadline <= now => Err(RejectReason::UnknownKey),
            Some(p) if p.source == id => Err(RejectReason::OwnKey),
            Some(p) if p.peer.is_some_and(|peer| peer != id) => Err(RejectReason::AlreadyClaimed),
            Some(p) => {
                p.peer = Some(id);
                Ok((p.sequence.clone(), p.source))
            }
        };
        match verdict {
            Ok((sequence, source)) => {
                let key = key.with_sequence(&sequence).unwrap_or(key);
                session.accept_peer(key, sequence, source);
                ClaimOutcome::Accepted { source }
            }
            Err(reason) => {
                session.reject_peer();
                ClaimOutcome::Rejected(reason)
            }
        }
    }

    /// Completes the vMotion whose COMPLETE the destination received: the source session
    /// hands its held client data to the destination, which queues it before anything else,
    /// and the source is marked as migrated ([`ProxySession::migrated_to`]).
    ///
    /// `source` must be the session named by
    /// [`ProxyEvent::VmotionComplete`](crate::ProxyEvent::VmotionComplete), open or closed.
    pub fn complete(
        &mut self,
        now: Instant,
        dest: &mut ProxySession,
        source: &mut ProxySession,
    ) -> CompleteOutcome {
        let Some((key, source_id)) = dest.completion() else {
            return CompleteOutcome::NoRequest;
        };
        let key = key.bytes().clone();
        let live = self
            .pending
            .get(&key)
            .is_some_and(|p| p.deadline > now && p.peer == Some(dest.id()));
        if !live {
            dest.drop_claim();
            return CompleteOutcome::NotPending;
        }
        if source.id() != source_id {
            return CompleteOutcome::WrongSource {
                expected: source_id,
            };
        }
        let source_closed = self.remove(&key).is_some_and(|p| p.source_closed);
        let held = source.hand_over(dest.id());
        dest.take_over(source_id, &held);
        CompleteOutcome::Switched {
            source: source_id,
            replayed: held.len(),
            source_closed,
        }
    }

    /// Forgets the vMotion the session aborted (the session already released its held data
    /// to the VM). Returns whether one was pending.
    pub fn abort(&mut self, session: &ProxySession) -> bool {
        if session.has_hold() {
            // A newer BEGIN already holds again; its entry is not the aborted one's.
            return false;
        }
        match self.by_source.get(&session.id()).cloned() {
            Some(key) => self.remove(&key).is_some(),
            None => false,
        }
    }

    /// The connection of `session` closed (EOF, error, or the application closed it).
    /// The session ignores further input; see [`CloseOutcome`] for what to keep.
    pub fn session_closed(&mut self, now: Instant, session: &mut ProxySession) -> CloseOutcome {
        let _ = now;
        session.mark_closed();
        let id = session.id();
        if let Some(to) = session.migrated_to() {
            return CloseOutcome::MigratedAway { to };
        }
        if let Some(key) = self.by_source.get(&id) {
            if let Some(p) = self.pending.get_mut(key) {
                p.source_closed = true;
                return CloseOutcome::Migrating { peer: p.peer };
            }
        }
        if let Some(key) = session.accepted_key() {
            if let Some(p) = self.pending.get_mut(key.as_bytes()) {
                if p.peer == Some(id) {
                    p.peer = None;
                }
            }
        }
        session.drop_claim();
        CloseOutcome::Closed
    }

    /// Expires the vMotions whose deadline has passed, reporting each as
    /// [`CoordinatorEvent::Expired`].
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(entry) = self.deadlines.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let key = entry.remove();
            if let Some(p) = self.remove(&key) {
                self.events.push_back(CoordinatorEvent::Expired {
                    source: p.source,
                    sequence: p.sequence,
                    peer: p.peer,
                    source_closed: p.source_closed,
                });
            }
        }
    }

    /// The earliest deadline, if any vMotion is pending.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.keys().next().map(|(deadline, _)| *deadline)
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<CoordinatorEvent> {
        self.events.pop_front()
    }
}
