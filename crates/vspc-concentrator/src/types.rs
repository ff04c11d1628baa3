//! Identifiers, modes, and what the concentrator reports.

use core::fmt;
use std::time::Instant;

use bytes::Bytes;
use vspc_proto::{
    BeginOutcome, ClaimOutcome, CompleteOutcome, NotNowReason, ProtocolError, RejectReason,
    SessionId,
};

/// One serial port of one VM as clients see it: an entry that survives reconnects and
/// vMotions. Numbered from 1 in order of appearance (the menu's numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize), serde(transparent))]
pub struct VmId(pub u64);

impl fmt::Display for VmId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// One client connection (a person or a tool).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize), serde(transparent))]
pub struct ClientId(pub u64);

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "client#{}", self.0)
    }
}

/// What a client may do with its VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(rename_all = "kebab-case")
)]
pub enum Mode {
    /// Read and write; several may share a VM.
    ReadWrite,
    /// Watch only: input is discarded.
    ReadOnly,
    /// The only writer while attached; watchers may join, other writers may not.
    Exclusive,
}

impl Mode {
    /// Parses `rw`, `ro`, `excl` (and the long forms), case-insensitively.
    pub fn parse(word: &str) -> Option<Mode> {
        match word.to_ascii_lowercase().as_str() {
            "rw" | "read-write" => Some(Mode::ReadWrite),
            "ro" | "read-only" => Some(Mode::ReadOnly),
            "excl" | "exclusive" | "x" => Some(Mode::Exclusive),
            _ => None,
        }
    }

    /// `rw`, `ro` or `excl`.
    pub fn short(self) -> &'static str {
        match self {
            Mode::ReadWrite => "rw",
            Mode::ReadOnly => "ro",
            Mode::Exclusive => "excl",
        }
    }

    /// Whether the mode may write to the VM.
    pub fn writes(self) -> bool {
        self != Mode::ReadOnly
    }
}

/// How a client's bytes are framed on its transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A telnet client: the concentrator negotiates BINARY, SGA and ECHO, escapes 0xFF,
    /// decodes commands (IAC BRK is a serial break).
    Telnet,
    /// Raw bytes both ways (an SSH channel, a WebSocket, an embedder's own stream).
    Raw,
}

/// Where a VM entry stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(rename_all = "kebab-case")
)]
pub enum VmState {
    /// A live connection carries it.
    Connected,
    /// Its connection closed during a vMotion: in transit to a destination.
    Migrating,
    /// Its connection is gone; the entry lingers for a reconnect.
    Disconnected,
}

impl VmState {
    /// `connected`, `migrating` or `disconnected`.
    pub fn as_str(self) -> &'static str {
        match self {
            VmState::Connected => "connected",
            VmState::Migrating => "migrating",
            VmState::Disconnected => "disconnected",
        }
    }
}

/// One step of a vMotion, as a VM's history keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmotionStep {
    /// GOAHEAD was sent with a fresh secret.
    GoAhead,
    /// NOTNOW was sent.
    NotNow(NotNowReason),
    /// A destination's PEER was accepted.
    PeerAccepted,
    /// A PEER was refused.
    PeerRejected(RejectReason),
    /// The VM now runs behind the destination.
    Completed {
        /// Held client bytes replayed to the destination.
        replayed: usize,
    },
    /// A COMPLETE that changed nothing.
    CompleteRefused(CompleteOutcome),
    /// The source aborted; held client data went to the VM.
    Aborted {
        /// Held client bytes released.
        released: usize,
    },
    /// No COMPLETE nor ABORT came in time.
    Expired {
        /// Held client bytes released (lost if the source had closed).
        released: usize,
    },
}

impl VmotionStep {
    pub(crate) fn from_begin(outcome: &BeginOutcome) -> Option<VmotionStep> {
        match outcome {
            BeginOutcome::GoAhead { .. } => Some(VmotionStep::GoAhead),
            BeginOutcome::NotNow(reason) => Some(VmotionStep::NotNow(reason.clone())),
            _ => None,
        }
    }

    pub(crate) fn from_claim(outcome: &ClaimOutcome) -> Option<VmotionStep> {
        match outcome {
            ClaimOutcome::Accepted { .. } => Some(VmotionStep::PeerAccepted),
            ClaimOutcome::Rejected(reason) => Some(VmotionStep::PeerRejected(*reason)),
            _ => None,
        }
    }
}

impl fmt::Display for VmotionStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VmotionStep::GoAhead => f.write_str("goahead"),
            VmotionStep::NotNow(reason) => write!(f, "notnow ({reason:?})"),
            VmotionStep::PeerAccepted => f.write_str("peer accepted"),
            VmotionStep::PeerRejected(reason) => write!(f, "peer rejected ({reason:?})"),
            VmotionStep::Completed { replayed } => write!(f, "complete (replayed {replayed})"),
            VmotionStep::CompleteRefused(outcome) => write!(f, "complete refused ({outcome:?})"),
            VmotionStep::Aborted { released } => write!(f, "abort (released {released})"),
            VmotionStep::Expired { released } => write!(f, "expired (released {released})"),
        }
    }
}

/// A vMotion step in a VM's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmotionRecord {
    /// When it happened (the `now` of the call that caused it).
    pub at: Instant,
    /// What happened.
    pub step: VmotionStep,
    /// The vMotion's sequence (empty where the step does not carry it).
    pub sequence: Bytes,
}

/// Why a client was dropped by the concentrator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// It fell behind by its whole output budget.
    TooSlow,
    /// Its VM entry expired (the VM never came back).
    VmRemoved,
    /// The concentrator is shutting down.
    Shutdown,
    /// Its selection line was too long.
    LineTooLong,
    /// It did not choose a VM in time.
    SelectionTimeout,
    /// Too many clients were choosing; it had been choosing longest.
    Crowded,
    /// It detached itself (the in-band escape).
    Detached,
}

/// What the concentrator reports. Drain with
/// [`Concentrator::poll_event`](crate::Concentrator::poll_event) after every call.
///
/// Exhaustive on purpose: a new variant is a compile error in every `match`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A VM port appeared: a new entry. `flagged` when a live connection already held the
    /// identity (served apart, never given the original's clients).
    VmAdded {
        /// The entry.
        vm: VmId,
        /// The connection carrying it.
        conn: SessionId,
        /// Why it is flagged, if it is.
        flagged: Option<String>,
    },
    /// A VM came back on a new connection (its port was reconfigured, its host restarted
    /// the port) and was re-attached to its entry: clients and scrollback kept.
    VmReconnected {
        /// The entry.
        vm: VmId,
        /// The new connection.
        conn: SessionId,
    },
    /// The VM's name changed (VM-NAME after identification).
    VmRenamed {
        /// The entry.
        vm: VmId,
    },
    /// A vMotion step of the VM (or of a connection not bound to a VM when `vm` is None).
    Vmotion {
        /// The entry, when known.
        vm: Option<VmId>,
        /// The connection the step happened on.
        conn: SessionId,
        /// What happened.
        step: VmotionStep,
    },
    /// A vMotion completed: the VM now runs behind `to`; nothing was lost.
    VmMoved {
        /// The entry.
        vm: VmId,
        /// The source connection.
        from: SessionId,
        /// The destination connection.
        to: SessionId,
    },
    /// The VM's connection is gone; the entry lingers for a reconnect.
    VmDisconnected {
        /// The entry.
        vm: VmId,
    },
    /// The entry expired after lingering (its clients were dropped).
    VmRemoved {
        /// The entry.
        vm: VmId,
    },
    /// VM output (only with [`ConcentratorConfig::console_events`]).
    ///
    /// [`ConcentratorConfig::console_events`]: crate::ConcentratorConfig::console_events
    Console {
        /// The entry.
        vm: VmId,
        /// The bytes, as the VM sent them (telnet-decoded).
        bytes: Bytes,
    },
    /// A client attached to a VM.
    ClientAttached {
        /// The client.
        client: ClientId,
        /// The entry.
        vm: VmId,
        /// Its mode.
        mode: Mode,
    },
    /// A client's write lock was taken by another (a kick): it is read-only now, and was
    /// told by whom.
    ClientKicked {
        /// The client that lost the lock.
        client: ClientId,
        /// The entry.
        vm: VmId,
        /// The client that took it.
        by: ClientId,
    },
    /// A client's serial break was sent to its VM.
    ClientBreak {
        /// The client.
        client: ClientId,
        /// The entry.
        vm: VmId,
    },
    /// A client was dropped by the concentrator (its goodbye is queued).
    ClientDropped {
        /// The client.
        client: ClientId,
        /// Why.
        reason: DropReason,
    },
    /// With [`ConcentratorConfig::site_directory`](crate::ConcentratorConfig): a client's
    /// selection matched no VM here. Look `selector` up in the site's directory, then
    /// [`Concentrator::attach_remote`](crate::Concentrator::attach_remote) the client to the
    /// VM another instance holds, or
    /// [`Concentrator::selection_failed`](crate::Concentrator::selection_failed). The client
    /// waits meanwhile (its input is kept).
    SelectionElsewhere {
        /// The client.
        client: ClientId,
        /// What it asked for: a name, `name/label` or a UUID.
        selector: String,
        /// The mode it named, if any.
        mode: Option<Mode>,
        /// Whether it asked to take the write lock.
        kick: bool,
    },
    /// A client attached to a VM another instance holds.
    ClientAttachedRemote {
        /// The client.
        client: ClientId,
        /// The VM, as the site's directory names it.
        vm: Box<crate::RemoteVm>,
        /// Its mode.
        mode: Mode,
    },
    /// A protocol violation by a VM; its connection carries on.
    ProtocolError {
        /// The connection.
        conn: SessionId,
        /// What was wrong.
        error: ProtocolError,
    },
    /// With [`ConcentratorConfig::shared_vmotions`](crate::ConcentratorConfig): a vMotion
    /// was given GOAHEAD here; publish its key so that a destination reaching another
    /// concentrator is routed back to this one.
    HandoverOffered {
        /// The source connection.
        conn: SessionId,
        /// `sequence ++ secret`, as the destination's PEER will carry it.
        key: Bytes,
        /// When the vMotion expires here.
        deadline: Instant,
    },
    /// With [`ConcentratorConfig::shared_vmotions`](crate::ConcentratorConfig): a
    /// destination's PEER names a key this concentrator does not hold. Look it up where
    /// vMotions are shared, then [`Concentrator::hand_off`](crate::Concentrator::hand_off)
    /// the connection to the instance that holds it, or
    /// [`Concentrator::refuse_peer`](crate::Concentrator::refuse_peer).
    PeerElsewhere {
        /// The destination connection.
        conn: SessionId,
        /// `sequence ++ secret` as received.
        key: Bytes,
    },
}

/// A connection the driver should attend to (drain with
/// [`Concentrator::poll_wakeup`](crate::Concentrator::poll_wakeup)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Wakeup {
    /// Bytes (or a close) are queued for this VM connection.
    Vm(SessionId),
    /// Output is queued for this client, it is being closed, or its input may flow again.
    Client(ClientId),
}

/// What to do next on a VM connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmTransmit {
    /// Write these bytes.
    Write(Bytes),
    /// Nothing more will come: shut the connection down (after what was written).
    Close,
    /// Nothing to write now; a [`Wakeup::Vm`] comes when there is.
    Idle,
}

/// What to do next on a client connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientTransmit {
    /// Write the chunks appended to the caller's vector.
    Write,
    /// Write the chunks appended (the goodbye), then close the connection.
    Close,
    /// Nothing to write now; a [`Wakeup::Client`] comes when there is.
    Idle,
}

/// Why a connection was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refused {
    /// The configured cap is reached.
    #[error("connection limit ({0}) reached")]
    Capacity(usize),
    /// The concentrator is shutting down.
    #[error("shutting down")]
    ShuttingDown,
}

/// Why a selector named no single VM, or an attach was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AttachError {
    /// No VM has that number.
    #[error("no VM #{0}")]
    NoSuchNumber(u64),
    /// No VM matches the selector.
    #[error("no VM matches {0:?}")]
    NoMatch(String),
    /// Several VMs match; the message lists them.
    #[error("{selector:?} is ambiguous: pick one of {choices}")]
    Ambiguous {
        /// What was asked.
        selector: String,
        /// The candidates, as `#N (label)`.
        choices: String,
    },
    /// An exclusive client holds the VM.
    #[error("{0} is held exclusively by another client; attach read-only with \"ro\"")]
    HeldExclusively(String),
    /// Exclusive access was asked while writers are attached.
    #[error("{name} has {writers} writer(s) attached; exclusive access refused")]
    WritersAttached {
        /// The VM's name.
        name: String,
        /// How many.
        writers: usize,
    },
    /// No VM matches here, and the site's directory could not be asked.
    #[error("no VM matches {0:?} here, and the other instances cannot be asked now")]
    SiteUnavailable(String),
    /// The client is gone or closing.
    #[error("client gone")]
    ClientGone,
    /// An authenticated user's grants do not allow this attach.
    #[error("{user} may not attach to {vm} as {mode} (allowed there: {})", if allowed.is_empty() { "nothing" } else { allowed.as_str() })]
    NotPermitted {
        /// The user's name.
        user: String,
        /// The VM's name.
        vm: String,
        /// What was asked: `ro`, `rw`, `excl` or `kick`.
        mode: &'static str,
        /// What the user's grants allow on that VM (`ro,rw,...`; empty for nothing).
        allowed: String,
    },
}

/// Why [`Concentrator::write_to_vm`](crate::Concentrator::write_to_vm) did not take bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// No such VM entry.
    #[error("no VM {0}")]
    NoSuchVm(VmId),
    /// The VM has no connection now (away or in transit): retry later.
    #[error("VM {0} is not connected")]
    NotConnected(VmId),
    /// The VM's queue or vMotion hold is full: retry later.
    #[error("VM {0} is not keeping up")]
    Full(VmId),
}
