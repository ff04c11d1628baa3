//! Flow control toward clients: while a client is a budget behind, its VM is not read, and
//! what that VM does meanwhile (a reconnect) is judged once its connection is read again.

use super::*;

#[test]
fn a_reconnect_while_the_vm_is_not_read_is_a_reconnect_not_an_impostor() {
    let mut c = config();
    c.output_budget = 600;
    let mut h = Harness::new(c);
    let i = h.add_numbered_vm(1);
    let stuck = select(&mut h, Transport::Raw, "vm-00001");
    h.set_reading(stuck, false);
    h.vm_send(i, &[b'.'; 300]);
    h.vm_send(i, &[b'.'; 601]);
    let old = h.session(i).unwrap();
    assert!(!h.core.vm_wants_input(old));
    // The port is reconfigured: its FIN waits unread behind the output; the new connection
    // identifies at once.
    h.take_events();
    h.set_connected(i, false);
    h.set_connected(i, true);
    let new = h.session(i).unwrap();
    assert_ne!(new, old);
    let events = h.take_events();
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::VmAdded { .. } | Event::VmReconnected { .. })),
        "decided too early: {events:?}"
    );
    // The grace ends: the stuck client is dropped, the old connection is read to its FIN,
    // and the new one is the same VM coming back.
    h.advance(Duration::from_secs(1));
    let events = h.take_events();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::VmReconnected { vm: VmId(1), conn } if *conn == new)),
        "{events:?}"
    );
    assert!(!events.iter().any(|e| matches!(e, Event::VmAdded { .. })));
    assert!(events.iter().any(|e| matches!(
        e,
        Event::ClientDropped { client, reason: DropReason::TooSlow } if *client == stuck
    )));
    assert_eq!(h.core.counters().impostors, 0);
    let joined = select(&mut h, Transport::Raw, "vm-00001");
    h.type_data(joined, b"hello");
    assert!(h.vms[i].received.ends_with(b"hello"));
}
