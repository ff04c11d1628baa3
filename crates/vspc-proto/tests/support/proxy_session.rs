//! Invariants of `ProxySession` and the `Coordinator` on arbitrary bytes, splits, client data,
//! clock jumps and closes, shared by the fuzz target `proxy_session` and the corpus replay test
//! of vspc-proto.
//!
//! Input format: byte 0 is flags (bit 0: accept COM-PORT, bit 1: query BIOS/location UUIDs,
//! bit 2: allow vMotion, bit 3: require identification); then steps `[op, len, len bytes]`:
//! op bit 0 picks one of two VM connections, op bits 1-2 are 0 input, 1 client data,
//! 2 advance the clock by `len` seconds and fire timers, 3 close the connection (a new one
//! takes its slot).
//!
//! Checked: no panic; the same bytes fed whole or in the given chunks give the same events
//! (data merged) and the same replies; every bound holds (held data, pending vMotions,
//! transmit and event growth); VM data out never exceeds what came in.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::panic)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use vspc_proto::{
    BeginOutcome, ClaimOutcome, CloseOutcome, ComPortPolicy, CompleteOutcome, Coordinator,
    CoordinatorConfig, CoordinatorEvent, ProxyConfig, ProxyEvent, ProxySession, SecretError,
    SessionId,
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

#[derive(Debug, PartialEq)]
enum Seen {
    Data(Vec<u8>),
    Other(String),
}

fn drain(session: &mut ProxySession, seen: &mut Vec<Seen>, out: &mut Vec<u8>) {
    while let Some(event) = session.poll_event() {
        match (event, seen.last_mut()) {
            (ProxyEvent::Data(d), Some(Seen::Data(last))) => last.extend_from_slice(&d),
            (ProxyEvent::Data(d), _) => seen.push(Seen::Data(d.to_vec())),
            (other, _) => seen.push(Seen::Other(format!("{other:?}"))),
        }
    }
    while let Some(bytes) = session.poll_transmit() {
        out.extend_from_slice(&bytes);
    }
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

struct Slot {
    session: ProxySession,
    input: usize,
    data_out: usize,
}

#[allow(clippy::disallowed_methods)]
fn epoch() -> Instant {
    Instant::now()
}

/// What a run reached, so that corpus tests can tell a seed still goes deep.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reached {
    pub goaheads: usize,
    pub peers_accepted: usize,
    pub switched: usize,
    pub expired: usize,
    pub data_bytes: usize,
}

pub fn check(input: &[u8]) -> Reached {
    let mut reached = Reached::default();
    let Some((&flags, rest)) = input.split_first() else {
        return reached;
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
    let mut coord = Coordinator::with_secret_source(
        CoordinatorConfig {
            secret_len: 4,
            max_pending: MAX_PENDING,
            require_identified: flags & 8 != 0,
            ..CoordinatorConfig::default()
        },
        secrets,
    );
    let allow = flags & 4 != 0;
    let mut now = start;
    let mut next_id = 2u64;
    let mut slots: Vec<Slot> = (0..2)
        .map(|i| Slot {
            session: ProxySession::new(SessionId(i), config(flags)),
            input: 0,
            data_out: 0,
        })
        .collect();
    // Closed sources of pending vMotions, kept as CloseOutcome::Migrating asks.
    let mut parked: HashMap<u64, ProxySession> = HashMap::new();
    let mut transmitted = 0usize;
    let mut client = 0usize;
    let mut total_in = 0usize;

    for step in &steps {
        let which = usize::from(step.op & 1);
        match (step.op >> 1) & 3 {
            0 => {
                total_in += step.bytes.len();
                slots[which].input += step.bytes.len();
                slots[which].session.handle_input_slice(now, step.bytes);
            }
            1 => {
                client += step.bytes.len();
                let _ = slots[which].session.send_data(step.bytes);
            }
            2 => {
                now += Duration::from_secs(u64::from(step.bytes.len() as u8));
                for slot in &mut slots {
                    if slot.session.poll_timeout().is_some_and(|t| t <= now) {
                        slot.session.handle_timeout(now);
                    }
                }
                for s in parked.values_mut() {
                    s.handle_timeout(now);
                }
                coord.handle_timeout(now);
                while let Some(CoordinatorEvent::Expired { source, .. }) = coord.poll_event() {
                    reached.expired += 1;
                    parked.remove(&source.0);
                }
            }
            _ => {
                let fresh = ProxySession::new(SessionId(next_id), config(flags));
                next_id += 1;
                let mut old = std::mem::replace(&mut slots[which].session, fresh);
                slots[which].input = 0;
                slots[which].data_out = 0;
                if let CloseOutcome::Migrating { .. } = coord.session_closed(now, &mut old) {
                    parked.insert(old.id().0, old);
                }
            }
        }
        // The application's side: drain, and hand vMotion events to the coordinator.
        for i in 0..slots.len() {
            while let Some(event) = slots[i].session.poll_event() {
                match event {
                    ProxyEvent::Data(d) => {
                        slots[i].data_out += d.len();
                        reached.data_bytes += d.len();
                    }
                    ProxyEvent::VmotionBegin { .. } => {
                        let o = coord.begin(now, &mut slots[i].session, allow);
                        if matches!(o, BeginOutcome::GoAhead { .. }) {
                            reached.goaheads += 1;
                        }
                    }
                    ProxyEvent::PeerClaim { .. } => {
                        let o = coord.claim(now, &mut slots[i].session);
                        if matches!(o, ClaimOutcome::Accepted { .. }) {
                            reached.peers_accepted += 1;
                        }
                    }
                    ProxyEvent::VmotionAbort { .. } => {
                        coord.abort(&slots[i].session);
                    }
                    ProxyEvent::VmotionComplete { source, .. } => {
                        let other = 1 - i;
                        let (a, b) = slots.split_at_mut(1);
                        let (dest, src) = if i == 0 {
                            (&mut a[0].session, &mut b[0].session)
                        } else {
                            (&mut b[0].session, &mut a[0].session)
                        };
                        let outcome = if src.id() == source {
                            coord.complete(now, dest, src)
                        } else if let Some(mut p) = parked.remove(&source.0) {
                            let o = coord.complete(now, dest, &mut p);
                            if !matches!(o, CompleteOutcome::Switched { .. }) {
                                parked.insert(source.0, p);
                            }
                            o
                        } else {
                            CompleteOutcome::NoRequest
                        };
                        if matches!(outcome, CompleteOutcome::Switched { .. }) {
                            reached.switched += 1;
                        }
                        let _ = other;
                    }
                    _ => {}
                }
            }
            assert!(slots[i].data_out <= slots[i].input, "more data out than in");
            assert!(slots[i].session.held_len() <= MAX_HELD);
            while let Some(bytes) = slots[i].session.poll_transmit() {
                transmitted += bytes.len();
            }
        }
        for p in parked.values_mut() {
            assert!(p.held_len() <= MAX_HELD);
            while let Some(bytes) = p.poll_transmit() {
                transmitted += bytes.len();
            }
        }
        assert!(coord.pending_len() <= MAX_PENDING);
        assert!(
            transmitted <= 1024 * (next_id as usize) + 8 * total_in + 2 * client + 4 * MAX_HELD,
            "output out of proportion: {transmitted} for {total_in} in, {client} client"
        );
    }
    reached
}
