//! Invariants of an `Endpoint` (its `ProxySession`s and the vMotion `Coordinator`) on
//! arbitrary bytes, splits, client data, clock jumps, closes and late answers, shared by the
//! fuzz target `proxy_session` and the corpus replay test of vspc-proto.
//!
//! Input format: byte 0 is flags (bit 0: accept COM-PORT, bit 1: query BIOS/location UUIDs,
//! bit 2: allow vMotion, bit 3: require identification, bit 4: the application answers BEGIN
//! itself, bit 5: the application answers PEER itself); then steps `[op, len, len bytes]`:
//! op bit 0 picks one of two VM connections, op bits 1-2 are 0 input, 1 client data,
//! 2 advance the clock by `len` seconds (answering, with bits 4 and 5, every BEGIN and PEER
//! asked so far, however stale) and fire timers, 3 close the connection (a new one takes its
//! slot).
//!
//! Checked: no panic; the same bytes fed to a session whole or in the given chunks give the
//! same events (data merged) and the same replies; every bound holds (held data, pending
//! vMotions, closed connections kept only for a vMotion in transit, transmit and event
//! growth); VM data out never exceeds what came in; and the endpoint's events are consistent:
//! every event names a connection that exists and has not left; Ready comes at most once, with
//! a VC UUID and an accepted DO-PROXY; a close is reported exactly once (SourceClosed, or
//! Closed with the connection gone); Moved names a destination that took over from its source;
//! Closed says MovedAway only after that move, VmotionExpired only after SourceClosed and at a
//! deadline, Disconnected only when the application closed the connection.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::epoch;
use crate::pair::drain_proxy as drain;
use vspc_proto::{
    Answer, BeginOutcome, ClaimOutcome, CloseReason, ComPortPolicy, CoordinatorConfig, Endpoint,
    EndpointConfig, EndpointEvent, ProxyConfig, ProxySession, SecretError, SessionId,
};

const MAX_HELD: usize = 256;
const MAX_PENDING: usize = 4;

fn config(flags: u8) -> ProxyConfig {
    ProxyConfig {
        com_port: if flags & 1 != 0 {
            ComPortPolicy::Accept
        } else {
            ComPortPolicy::Refuse
        },
        query_bios_uuid: flags & 2 != 0,
        query_location_uuid: flags & 2 != 0,
        max_subnegotiation: 512,
        max_held: MAX_HELD,
        ..ProxyConfig::default()
    }
}

struct Step<'a> {
    op: u8,
    bytes: &'a [u8],
}

fn steps(mut input: &[u8]) -> Vec<Step<'_>> {
    let mut out = Vec::new();
    while let [op, len, rest @ ..] = input {
        let n = usize::from(*len).min(rest.len());
        out.push(Step {
            op: *op,
            bytes: &rest[..n],
        });
        input = &rest[n..];
    }
    out
}

/// Chunking invariance of one session without application actions.
fn chunking(flags: u8, chunks: &[&[u8]], now: Instant) {
    let mut whole = ProxySession::new(SessionId(0), config(flags));
    let mut split = ProxySession::new(SessionId(0), config(flags));
    let (mut seen_whole, mut out_whole) = (Vec::new(), Vec::new());
    let (mut seen_split, mut out_split) = (Vec::new(), Vec::new());
    let all: Vec<u8> = chunks.concat();
    whole.handle_input_slice(now, &all);
    drain(&mut whole, &mut seen_whole, &mut out_whole);
    drain(&mut split, &mut seen_split, &mut out_split);
    for chunk in chunks {
        split.handle_input_slice(now, chunk);
        drain(&mut split, &mut seen_split, &mut out_split);
    }
    assert_eq!(seen_whole, seen_split, "events depend on chunking");
    assert_eq!(out_whole, out_split, "replies depend on chunking");
}

/// What a run reached, so that corpus tests can tell a seed still goes deep.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reached {
    /// vMotions the coordinator answered GOAHEAD.
    pub goaheads: usize,
    /// PEER messages accepted (a destination claimed a pending vMotion).
    pub peers_accepted: usize,
    /// Destinations that took over from their source (COMPLETE).
    pub switched: usize,
    /// Pending vMotions that expired.
    pub expired: usize,
    /// Serial bytes delivered to the application.
    pub data_bytes: usize,
}

/// What the checker knows of one connection.
#[derive(Debug, Default)]
struct Conn {
    input: usize,
    data_out: usize,
    ready: bool,
    source_closed: bool,
    moved_to: Option<SessionId>,
    left: bool,
}

/// The application's side of the run: the endpoint, what it said, what is owed.
struct Run {
    endpoint: Endpoint,
    conns: HashMap<SessionId, Conn>,
    begin_asks: Vec<SessionId>,
    peer_asks: Vec<SessionId>,
    reached: Reached,
}

/// What the step that produced the events did.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Action {
    Other,
    Advance,
    Close(SessionId),
}

impl Run {
    /// Drains the endpoint's events, checking each; returns how many reports the closed
    /// connection got (SourceClosed or Closed).
    fn drain(&mut self, action: Action) -> usize {
        let mut close_reports = 0;
        while let Some(event) = self.endpoint.poll_event() {
            let id = event.conn();
            let conn = self
                .conns
                .get_mut(&id)
                .expect("event about an unknown connection");
            assert!(!conn.left, "event after Closed: {event:?}");
            match event {
                EndpointEvent::Data { bytes, .. } => {
                    conn.data_out += bytes.len();
                    self.reached.data_bytes += bytes.len();
                    assert!(conn.data_out <= conn.input, "more data out than in");
                }
                EndpointEvent::Ready { .. } => {
                    assert!(!conn.ready, "Ready twice");
                    conn.ready = true;
                    let session = self.endpoint.session(id).unwrap();
                    assert!(session.identity().vc_uuid.is_some());
                    assert!(session.proxy_request().is_some_and(|r| r.accepted));
                }
                EndpointEvent::BeginRequested { .. } => {
                    assert_eq!(self.endpoint.config().begin, Answer::Manual);
                    self.begin_asks.push(id);
                }
                EndpointEvent::PeerRequested { .. } => {
                    assert_eq!(self.endpoint.config().peer, Answer::Manual);
                    self.peer_asks.push(id);
                }
                EndpointEvent::BeginAnswered { outcome, .. } => {
                    if matches!(outcome, BeginOutcome::GoAhead { .. }) {
                        self.reached.goaheads += 1;
                    }
                }
                EndpointEvent::PeerAnswered { outcome, .. } => {
                    if matches!(outcome, ClaimOutcome::Accepted { .. }) {
                        self.reached.peers_accepted += 1;
                    }
                }
                EndpointEvent::Moved { from, to, .. } => {
                    self.reached.switched += 1;
                    let source = self.conns.get_mut(&from).expect("Moved from unknown");
                    assert!(!source.left, "Moved from a connection that left");
                    assert_eq!(source.moved_to, None, "moved twice");
                    source.moved_to = Some(to);
                    let dest = self.endpoint.session(to).unwrap();
                    assert_eq!(dest.migrated_from(), Some(from));
                    if let Some(source) = self.endpoint.session(from) {
                        assert_eq!(source.migrated_to(), Some(to));
                        assert!(!source.is_holding());
                    }
                }
                EndpointEvent::VmotionExpired { .. } => {
                    assert!(action == Action::Advance, "expired outside a timeout");
                    self.reached.expired += 1;
                }
                EndpointEvent::SourceClosed { .. } => {
                    assert!(action == Action::Close(id), "SourceClosed without a close");
                    assert!(!conn.source_closed);
                    conn.source_closed = true;
                    close_reports += 1;
                    assert!(self.endpoint.session(id).is_some_and(|s| s.is_closed()));
                }
                EndpointEvent::Closed { reason, .. } => {
                    conn.left = true;
                    assert!(self.endpoint.session(id).is_none(), "Closed but kept");
                    match reason {
                        CloseReason::MovedAway { to } => {
                            assert_eq!(conn.moved_to, Some(to));
                        }
                        CloseReason::VmotionExpired => {
                            assert!(conn.source_closed, "expired, but never in transit");
                            assert!(action == Action::Advance);
                        }
                        CloseReason::Disconnected => {
                            assert!(action == Action::Close(id), "Disconnected without a close");
                        }
                    }
                    if action == Action::Close(id) {
                        close_reports += 1;
                    }
                }
                EndpointEvent::Identified { .. }
                | EndpointEvent::KnownSuboptions { .. }
                | EndpointEvent::ProxyRequested { .. }
                | EndpointEvent::CompleteRefused { .. }
                | EndpointEvent::VmotionAborted { .. }
                | EndpointEvent::ComPort { .. }
                | EndpointEvent::UnknownSuboptionReported { .. }
                | EndpointEvent::Command { .. }
                | EndpointEvent::OptionChanged { .. }
                | EndpointEvent::ProtocolError { .. } => {}
            }
        }
        close_reports
    }
}

/// Checks every invariant on one input (panics on a violation) and says how far it got.
pub fn check(input: &[u8]) -> Reached {
    let Some((&flags, rest)) = input.split_first() else {
        return Reached::default();
    };
    let steps = steps(rest);
    let start = epoch();
    let inputs: Vec<&[u8]> = steps
        .iter()
        .filter(|s| s.op & 0b111 == 0)
        .map(|s| s.bytes)
        .collect();
    chunking(flags, &inputs, start);

    let mut counter = 0u64;
    let secrets = move |out: &mut [u8]| -> Result<(), SecretError> {
        counter += 1;
        for (i, b) in out.iter_mut().enumerate() {
            // 0xFF and 0xF0 on purpose: they must be escaped, never framed.
            *b = [0xff, 0xf0, counter as u8, i as u8][i % 4];
        }
        Ok(())
    };
    let manual = |bit: u8| {
        if flags & bit != 0 {
            Answer::Manual
        } else {
            Answer::Automatic
        }
    };
    let config = EndpointConfig {
        proxy: Arc::new(config(flags)),
        coordinator: CoordinatorConfig {
            secret_len: 4,
            max_pending: MAX_PENDING,
            require_identified: flags & 8 != 0,
            ..CoordinatorConfig::default()
        },
        allow_vmotion: flags & 4 != 0,
        begin: manual(0x10),
        peer: manual(0x20),
    };
    let allow = config.allow_vmotion;
    let mut run = Run {
        endpoint: Endpoint::with_secret_source(config, secrets),
        conns: HashMap::new(),
        begin_asks: Vec::new(),
        peer_asks: Vec::new(),
        reached: Reached::default(),
    };
    let mut now = start;
    let mut connected = 0usize;
    let mut slots: Vec<SessionId> = Vec::new();
    for _ in 0..2 {
        let id = run.endpoint.connect(());
        run.conns.insert(id, Conn::default());
        slots.push(id);
        connected += 1;
    }
    let mut transmitted = 0usize;
    let mut client = 0usize;
    let mut total_in = 0usize;

    for step in &steps {
        let which = usize::from(step.op & 1);
        let id = slots[which];
        let mut action = Action::Other;
        match (step.op >> 1) & 3 {
            0 => {
                total_in += step.bytes.len();
                run.conns.get_mut(&id).unwrap().input += step.bytes.len();
                // `Bytes` by inference: the fuzz crate does not depend on `bytes`.
                run.endpoint
                    .handle_input(now, id, &step.bytes.to_vec().into());
            }
            1 => {
                client += step.bytes.len();
                if let Ok(target) = run.endpoint.send_data(id, step.bytes) {
                    assert!(run.endpoint.session(target).is_some());
                }
            }
            2 => {
                action = Action::Advance;
                now += Duration::from_secs(u64::from(step.bytes.len() as u8));
                for conn in std::mem::take(&mut run.begin_asks) {
                    run.endpoint.answer_begin(now, conn, allow);
                }
                for conn in std::mem::take(&mut run.peer_asks) {
                    run.endpoint.answer_peer(now, conn);
                }
                run.endpoint.handle_timeout(now);
            }
            _ => {
                action = Action::Close(id);
                // The application closes it: once its queued bytes are written, the
                // transport goes down.
                run.endpoint.close(id);
                loop {
                    let queued = run.endpoint.pending_transmit_len(id);
                    assert_eq!(run.endpoint.wants_close(id), queued == 0);
                    let Some(bytes) = run.endpoint.poll_transmit(id) else {
                        break;
                    };
                    transmitted += bytes.len();
                }
                run.endpoint.handle_close(now, id);
                let fresh = run.endpoint.connect(());
                run.conns.insert(fresh, Conn::default());
                slots[which] = fresh;
                connected += 1;
            }
        }
        let close_reports = run.drain(action);
        if let Action::Close(_) = action {
            assert_eq!(close_reports, 1, "a close reported {close_reports} times");
        }
        // Every connection's writes, in a fixed order (the endpoint's is unspecified).
        let mut ids: Vec<SessionId> = run.endpoint.connections().collect();
        ids.sort_unstable();
        for conn in ids {
            assert!(run.endpoint.session(conn).unwrap().held_len() <= MAX_HELD);
            while let Some(bytes) = run.endpoint.poll_transmit(conn) {
                transmitted += bytes.len();
            }
        }
        let pending = run.endpoint.coordinator().pending_len();
        assert!(pending <= MAX_PENDING);
        // A closed connection stays only while its vMotion is in transit (one pending each).
        let kept = run.endpoint.len();
        assert!(
            kept <= slots.len() + pending,
            "{kept} connections kept, {pending} vMotions pending"
        );
        assert!(
            transmitted <= 1024 * connected + 8 * total_in + 2 * client + 4 * MAX_HELD,
            "output out of proportion: {transmitted} for {total_in} in, {client} client"
        );
    }
    run.reached
}
