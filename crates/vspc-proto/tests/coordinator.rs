//! The coordinator's decisions at their edges, on sessions fed raw wire bytes.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use vspc_proto::*;

fn identified(id: u64, now: Instant) -> ProxySession {
    let mut s = ProxySession::new(SessionId(id), ProxyConfig::default());
    s.handle_input_slice(now, &stream(BLOCK_A, true));
    drain(&mut s);
    s
}

fn drain(s: &mut ProxySession) -> (Vec<ProxyEvent>, Vec<u8>) {
    let mut events = Vec::new();
    while let Some(e) = s.poll_event() {
        events.push(e);
    }
    let mut out = Vec::new();
    while let Some(b) = s.poll_transmit() {
        out.extend_from_slice(&b);
    }
    (events, out)
}

fn send(s: &mut ProxySession, now: Instant, m: &Message) -> (Vec<ProxyEvent>, Vec<u8>) {
    s.handle_input_slice(now, &m.to_wire());
    drain(s)
}

fn begin(seq: &[u8]) -> Message {
    Message::VmotionBegin {
        sequence: Bytes::copy_from_slice(seq),
    }
}

fn goahead(c: &mut Coordinator, s: &mut ProxySession, now: Instant, seq: &[u8]) -> VmotionKey {
    send(s, now, &begin(seq));
    match c.begin(now, s, true) {
        BeginOutcome::GoAhead { key, .. } => {
            drain(s);
            key
        }
        other => panic!("{other:?}"),
    }
}

fn dest(id: u64, now: Instant, key: &VmotionKey) -> ProxySession {
    let mut d = ProxySession::new(SessionId(id), ProxyConfig::default());
    // Block C's telnet negotiation from the destination host (it answers our BINARY offer).
    d.handle_input_slice(now, &segments(BLOCK_C, true)[..5].concat());
    drain(&mut d);
    let (events, _) = send(
        &mut d,
        now,
        &Message::VmotionPeer(VmotionKey::from_wire(key.bytes().clone())),
    );
    assert!(events
        .iter()
        .any(|e| matches!(e, ProxyEvent::PeerClaim { .. })));
    d
}

#[test]
fn default_secrets_are_8_random_bytes_and_distinct() {
    let now = t0();
    let mut c = Coordinator::default();
    let mut a = identified(1, now);
    let mut b = identified(2, now);
    let ka = goahead(&mut c, &mut a, now, b"\x01\x02\x03\x04");
    let kb = goahead(&mut c, &mut b, now, b"\x01\x02\x03\x04");
    assert_eq!(ka.secret().unwrap().len(), 8);
    assert_ne!(ka, kb);
    assert_eq!(c.pending_len(), 2);
}

#[test]
fn claims_own_key_already_claimed_released_on_close_and_expired() {
    let now = t0();
    let mut c = Coordinator::default();
    let mut src = identified(1, now);
    let key = goahead(&mut c, &mut src, now, b"SEQ!");
    // The source cannot claim its own vMotion.
    let (events, _) = send(&mut src, now, &Message::VmotionPeer(key.clone()));
    assert!(events
        .iter()
        .any(|e| matches!(e, ProxyEvent::PeerClaim { .. })));
    assert_eq!(
        c.claim(now, &mut src),
        ClaimOutcome::Rejected(RejectReason::OwnKey)
    );
    assert_eq!(drain(&mut src).1, hex("fffae8032cfff0"));
    // First destination wins; a second is refused.
    let mut d1 = dest(2, now, &key);
    assert_eq!(
        c.claim(now, &mut d1),
        ClaimOutcome::Accepted { source: src.id() }
    );
    assert_eq!(drain(&mut d1).1, hex("fffae82d 53455121 fff0"));
    assert_eq!(c.claim(now, &mut d1), ClaimOutcome::NoRequest);
    let mut d2 = dest(3, now, &key);
    assert_eq!(
        c.claim(now, &mut d2),
        ClaimOutcome::Rejected(RejectReason::AlreadyClaimed)
    );
    // The first destination drops: the key can be claimed again.
    assert_eq!(c.session_closed(now, &mut d1), CloseOutcome::Closed);
    let mut d3 = dest(4, now, &key);
    assert_eq!(
        c.claim(now, &mut d3),
        ClaimOutcome::Accepted { source: src.id() }
    );
    // After the deadline the key is unknown.
    let late = now + Duration::from_secs(30);
    let mut d4 = dest(5, late, &key);
    c.session_closed(late, &mut d3);
    assert_eq!(
        c.claim(late, &mut d4),
        ClaimOutcome::Rejected(RejectReason::UnknownKey)
    );
}

#[test]
fn complete_checks_the_source_and_happens_once() {
    let now = t0();
    let mut c = Coordinator::default();
    let mut src = identified(1, now);
    let mut other = identified(9, now);
    let key = goahead(&mut c, &mut src, now, b"\xff\x00\xff\x00");
    src.send_data(b"held").unwrap();
    let mut d = dest(2, now, &key);
    c.claim(now, &mut d);
    drain(&mut d);
    assert_eq!(
        c.complete(now, &mut d, &mut src),
        CompleteOutcome::NoRequest
    );
    let (events, _) = send(
        &mut d,
        now,
        &Message::VmotionComplete {
            sequence: Bytes::from_static(b"\xff\x00\xff\x00"),
        },
    );
    assert_eq!(
        events,
        vec![ProxyEvent::VmotionComplete {
            sequence: Bytes::from_static(b"\xff\x00\xff\x00"),
            source: src.id()
        }]
    );
    assert_eq!(
        c.complete(now, &mut d, &mut other),
        CompleteOutcome::WrongSource { expected: src.id() }
    );
    assert_eq!(
        c.complete(now, &mut d, &mut src),
        CompleteOutcome::Switched {
            source: src.id(),
            replayed: 4,
            source_closed: false
        }
    );
    assert_eq!(drain(&mut d).1, b"held");
    assert_eq!(
        c.complete(now, &mut d, &mut src),
        CompleteOutcome::NoRequest
    );
    assert_eq!(d.migrated_from(), Some(src.id()));
    assert_eq!(src.migrated_to(), Some(d.id()));
    assert_eq!(src.send_data(b"x"), Err(SendError::MigratedTo(d.id())));
    assert_eq!(
        c.session_closed(now, &mut src),
        CloseOutcome::MigratedAway { to: d.id() }
    );
    assert_eq!(c.pending_len(), 0);
}

#[test]
fn notnow_for_capacity_collision_secret_failure_and_no_request() {
    let now = t0();
    // Capacity.
    let mut c = Coordinator::new(CoordinatorConfig {
        max_pending: 1,
        ..CoordinatorConfig::default()
    });
    let mut a = identified(1, now);
    let mut b = identified(2, now);
    goahead(&mut c, &mut a, now, b"AAAA");
    send(&mut b, now, &begin(b"BBBB"));
    assert_eq!(
        c.begin(now, &mut b, true),
        BeginOutcome::NotNow(NotNowReason::Capacity)
    );
    assert_eq!(drain(&mut b).1, hex("fffae82b 42424242 fff0"));
    assert_eq!(c.begin(now, &mut b, true), BeginOutcome::NoRequest);
    // Collision: without a secret, two sources with one sequence.
    let mut c = Coordinator::new(CoordinatorConfig {
        secret_len: 0,
        ..CoordinatorConfig::default()
    });
    goahead(&mut c, &mut a, now, b"SAME");
    send(&mut b, now, &begin(b"SAME"));
    assert_eq!(
        c.begin(now, &mut b, true),
        BeginOutcome::NotNow(NotNowReason::KeyCollision)
    );
    // The secret source fails.
    let mut c = Coordinator::with_secret_source(CoordinatorConfig::default(), |_: &mut [u8]| {
        Err(SecretError::new("no entropy"))
    });
    let mut e = identified(3, now);
    send(&mut e, now, &begin(b"EEEE"));
    assert_eq!(
        c.begin(now, &mut e, true),
        BeginOutcome::NotNow(NotNowReason::SecretUnavailable(SecretError::new(
            "no entropy"
        )))
    );
    assert!(!e.is_holding());
}

#[test]
fn expiry_is_reported_once_at_the_deadline() {
    let now = t0();
    let mut c = Coordinator::new(CoordinatorConfig {
        vmotion_timeout: Duration::from_secs(5),
        ..CoordinatorConfig::default()
    });
    let mut a = identified(1, now);
    goahead(&mut c, &mut a, now, b"AAAA");
    let deadline = now + Duration::from_secs(5);
    assert_eq!(c.poll_timeout(), Some(deadline));
    c.handle_timeout(deadline - Duration::from_nanos(1));
    assert_eq!(c.poll_event(), None);
    c.handle_timeout(deadline);
    assert_eq!(
        c.poll_event(),
        Some(CoordinatorEvent::Expired {
            source: a.id(),
            sequence: Bytes::from_static(b"AAAA"),
            peer: None,
            source_closed: false
        })
    );
    c.handle_timeout(deadline + Duration::from_secs(60));
    assert_eq!(c.poll_event(), None);
    assert_eq!(c.poll_timeout(), None);
    assert!(!c.is_pending(a.id()));
}
