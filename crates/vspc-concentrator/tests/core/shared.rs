//! vMotions shared with other concentrators (`shared_vmotions`): GOAHEAD keys are reported
//! for publishing, a PEER for a key held here is answered here, one for a key held nowhere
//! here is reported and then refused or handed off, byte for byte.

use super::*;
use bytes::Bytes;
use support::find;

fn shared_config() -> ConcentratorConfig {
    let mut c = config();
    c.shared_vmotions = true;
    c
}

/// A destination's blind handshake whose PEER carries `key`.
fn destination(key: &[u8]) -> Vec<u8> {
    let mut wire = vec![
        0xff, 0xfb, 0x25, 0xff, 0xfd, 0x00, 0xff, 0xfd, 0x03, 0xff, 0xfd, 0x01, 0xff, 0xfb, 0x00,
        0xff, 0xfb, 0x03, 0xff, 0xfb, 0xe8,
    ];
    wire.extend_from_slice(&[0xff, 0xfa, 0xe8, 0x2c]);
    wire.extend_from_slice(key);
    wire.extend_from_slice(&[0xff, 0xf0]);
    wire
}

const PEER_REFUSED: &[u8] = &[0xff, 0xfa, 0xe8, 0x03, 0x2c, 0xff, 0xf0];

#[test]
fn a_goahead_reports_its_key_and_a_local_peer_completes_here() {
    let mut h = Harness::new(shared_config());
    let i = h.add_numbered_vm(1);
    h.take_events();
    assert!(h.vmotion(i, VmotionPlan::new(Bytes::from_static(b"\x44\xda\x87\xf1"))));
    let events = h.take_events();
    let offered: Vec<&Bytes> = events
        .iter()
        .filter_map(|e| match e {
            Event::HandoverOffered { key, .. } => Some(key),
            _ => None,
        })
        .collect();
    assert_eq!(offered.len(), 1, "{events:?}");
    assert!(offered[0].starts_with(b"\x44\xda\x87\xf1"));
    // The destination reached this concentrator: its PEER is answered here, no detour.
    assert!(!events
        .iter()
        .any(|e| matches!(e, Event::PeerElsewhere { .. })));
    let outcome = h.vms[i].events.iter().rev().find_map(|e| match e {
        EmulatorEvent::Vmotion(o) => Some(o.clone()),
        _ => None,
    });
    assert!(
        matches!(outcome, Some(VmotionOutcome::Completed { .. })),
        "{outcome:?}"
    );
}

#[test]
fn a_peer_for_a_key_held_elsewhere_is_reported_then_refused_or_handed_off() {
    let mut h = Harness::new(shared_config());
    let key = b"\x01\x02\x03\x04\x05\x06\x07\x08";
    for hand_off in [false, true] {
        let s = h.raw_connect().unwrap();
        h.take_events();
        h.raw_input(s, &destination(key));
        let events = h.take_events();
        assert!(
            events.iter().any(|e| matches!(
                e,
                Event::PeerElsewhere { conn, key: k } if *conn == s && k[..] == key[..]
            )),
            "{events:?}"
        );
        // Nothing is answered until the driver decides.
        assert!(find(&h.raw[&s].received, PEER_REFUSED).is_none());
        assert!(!h.core.is_identified(s));
        let now = h.now;
        if hand_off {
            let before = h.raw[&s].received.len();
            h.core.hand_off(now, s);
            h.run();
            // Forgotten without a word: the other instance answers.
            assert_eq!(h.raw[&s].received.len(), before);
            assert_eq!(h.core.endpoint().session(s).map(|_| ()), None);
        } else {
            h.core.refuse_peer(now, s);
            h.run();
            assert!(h.raw[&s].received.ends_with(PEER_REFUSED));
        }
    }
    assert!(h.core.vms(VmId(0), 10).is_empty());
}

#[test]
fn held_vmotions_are_answered_notnow_until_released() {
    let mut h = Harness::new(shared_config());
    let i = h.add_numbered_vm(1);
    let source = h.session(i);
    h.take_events();
    h.core.hold_vmotions(true);
    vmotion_refused_with_notnow(&mut h, i);
    // Nothing was offered for the shared state to publish, and the VM stays on its source.
    assert!(!h
        .take_events()
        .iter()
        .any(|e| matches!(e, Event::HandoverOffered { .. })));
    assert_eq!(h.session(i), source);

    h.core.hold_vmotions(false);
    assert!(h.vmotion(i, VmotionPlan::new(&b"seq2"[..])));
    assert!(h
        .take_events()
        .iter()
        .any(|e| matches!(e, Event::HandoverOffered { .. })));
    assert_eq!(h.core.counters().vmotion_goahead, 1);
}

#[test]
fn a_closed_vm_connection_leaves_its_entry_and_clients_for_a_reconnect() {
    let mut h = Harness::new(shared_config());
    let i = h.add_numbered_vm(1);
    let a = select(&mut h, Transport::Raw, "vm-00001");
    h.vm_send(i, b"before;");
    h.take_events();
    h.core.close_vm(VmId(1));
    // Twice is once; an unknown entry is nothing.
    h.core.close_vm(VmId(1));
    h.core.close_vm(VmId(9));
    h.run();
    assert_eq!(h.take_events(), [Event::VmDisconnected { vm: VmId(1) }]);
    assert!(h.emu(i).current_conn().is_none());
    assert_eq!(h.core.vm(VmId(1)).unwrap().state, VmState::Disconnected);
    assert_eq!(h.core.open_vm_connections(), 0);
    // The client stays attached and sees the VM again when it reconnects.
    assert!(h.set_connected(i, true));
    h.vm_send(i, b"after");
    assert_eq!(h.take_data(a), b"before;after");
    assert_eq!(h.core.counters().reattached, 1);
}
