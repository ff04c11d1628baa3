//! Reconnects, impostors, lingering entries, the selection line's framing, capacity and
//! shutdown.

use super::*;

// ----- reconnects, impostors, lingering -----

#[test]
fn reconnect_reattaches_clients_and_scrollback() {
    let mut h = harness();
    let i = h.add_numbered_vm(1);
    let a = select(&mut h, Transport::Raw, "vm-00001");
    h.vm_send(i, b"before;");
    h.take_events();
    assert!(h.set_connected(i, false));
    assert_eq!(h.take_events(), [Event::VmDisconnected { vm: VmId(1) }]);
    assert_eq!(h.core.vm(VmId(1)).unwrap().state, VmState::Disconnected);
    // Typed while the VM is away: the first read waits in the core, the rest in the client.
    h.type_data(a, b"away1;");
    h.type_data(a, b"away2;");
    assert!(!h.core.client_wants_input(a));
    assert!(h.client(a).has_pending());
    assert!(h.set_connected(i, true));
    let conn = SessionId(2);
    // The same name again: no rename.
    assert_eq!(
        h.take_events(),
        [Event::VmReconnected { vm: VmId(1), conn }]
    );
    assert_eq!(h.vms[i].received, b"away1;away2;");
    h.vm_send(i, b"after");
    assert_eq!(h.take_data(a), b"before;after");
    // A client joining now gets the scrollback from before the reconnect.
    let late = h.connect_client(Transport::Raw, Some((VmId(1), Mode::ReadOnly)));
    h.vm_send(i, b"!");
    assert_eq!(h.client(late).after_banner(), Some(&b"before;after!"[..]));
    let vm = h.core.vm(VmId(1)).unwrap();
    assert_eq!((vm.state, vm.connections), (VmState::Connected, 2));
    assert_eq!(h.core.counters().reattached, 1);
    assert_eq!(h.core.vm_count(), 1);
}

#[test]
fn impostor_is_served_apart_and_flagged() {
    let mut h = harness();
    let real = h.add_numbered_vm(1);
    let a = select(&mut h, Transport::Raw, "vm-00001");
    h.take_events();
    // A second live connection with the same VC UUID and service URI.
    let fake = h.add_numbered_vm(1);
    let events = h.take_events();
    let Event::VmAdded {
        vm: VmId(2),
        flagged: Some(reason),
        ..
    } = &events[0]
    else {
        panic!("{events:?}");
    };
    assert_eq!(
        reason,
        "identity of vm #1 is held by live session 1: served separately"
    );
    h.vm_send(fake, b"evil");
    h.vm_send(real, b"good");
    assert_eq!(h.take_data(a), b"good");
    h.type_data(a, b"to real");
    assert_eq!(h.vms[real].received, b"to real");
    assert_eq!(h.vms[fake].received, b"");
    // By name the trusted entry wins; the flagged one is reachable by number, with a warning.
    assert_eq!(h.core.resolve("vm-00001"), Ok(VmId(1)));
    let f = h.connect_client(Transport::Raw, None);
    let menu = text(&h.take_data(f));
    assert!(menu.contains("[FLAGGED: duplicate identity]"), "{menu}");
    h.type_data(f, b"2\r\n");
    let data = text(&h.take_data(f));
    assert!(
        data.ends_with("[vspc: attached to vm-00001 (rw), FLAGGED duplicate identity]\r\nevil"),
        "{data}"
    );
    assert_eq!(
        h.core.vm(VmId(2)).unwrap().flagged.as_deref(),
        Some(&reason[..])
    );
    assert_eq!(h.core.counters().impostors, 1);
    // The impostor leaving does not touch the real entry.
    h.power_off(fake);
    assert!(h.events.contains(&Event::VmDisconnected { vm: VmId(2) }));
    assert_eq!(h.core.vm(VmId(1)).unwrap().state, VmState::Connected);
}

#[test]
fn lingering_entry_expires_and_drops_its_clients() {
    let mut c = config();
    c.linger = Duration::from_secs(60);
    let mut h = Harness::new(c);
    let i = h.add_numbered_vm(1);
    let a = select(&mut h, Transport::Telnet, "vm-00001");
    let b = select(&mut h, Transport::Raw, "vm-00001 ro");
    h.power_off(i);
    assert!(h.core.poll_timeout() <= Some(h.now + Duration::from_secs(60)));
    h.advance(Duration::from_secs(59));
    assert_eq!(h.core.vm_count(), 1);
    h.take_events();
    h.advance(Duration::from_secs(1));
    assert_eq!(
        h.take_events(),
        [
            Event::ClientDropped {
                client: a,
                reason: DropReason::VmRemoved
            },
            Event::ClientDropped {
                client: b,
                reason: DropReason::VmRemoved
            },
            Event::VmRemoved { vm: VmId(1) },
        ]
    );
    for c in [a, b] {
        assert_eq!(h.take_data(c), GOODBYE_REMOVED);
        assert!(h.client(c).closed);
    }
    assert_eq!(h.core.vm_count(), 0);
    assert_eq!(h.core.open_clients(), 0);
    assert_eq!(h.core.poll_timeout(), None);
    // Coming back later, it is a new entry.
    h.power_on(i);
    assert!(matches!(
        h.take_events()[..],
        [
            Event::VmAdded {
                vm: VmId(2),
                flagged: None,
                ..
            },
            ..
        ]
    ));
}

#[test]
fn vm_returning_before_expiry_is_kept() {
    let mut c = config();
    c.linger = Duration::from_secs(60);
    let mut h = Harness::new(c);
    let i = h.add_numbered_vm(1);
    let a = select(&mut h, Transport::Raw, "vm-00001");
    h.set_connected(i, false);
    h.advance(Duration::from_secs(30));
    h.set_connected(i, true);
    h.advance(Duration::from_secs(10));
    // Away again: the first departure's deadline (t = 60 s) must not remove it.
    h.set_connected(i, false);
    h.advance(Duration::from_secs(30));
    assert_eq!(h.core.vm_count(), 1);
    assert!(!h
        .events
        .iter()
        .any(|e| matches!(e, Event::VmRemoved { .. })));
    h.set_connected(i, true);
    h.advance(Duration::from_secs(600));
    assert_eq!(h.core.vm_count(), 1);
    assert!(!h
        .events
        .iter()
        .any(|e| matches!(e, Event::VmRemoved { .. })));
    assert_eq!(h.core.poll_timeout(), None);
    h.type_data(a, b"still here");
    assert_eq!(h.vms[i].received, b"still here");
    assert_eq!(h.core.vm(VmId(1)).unwrap().connections, 3);
}

// ----- the selection line and input framing -----

#[test]
fn pipelined_selection_lines_attach_to_the_good_one() {
    let mut h = harness();
    let i = h.add_numbered_vm(1);
    let c = h.connect_client(Transport::Raw, None);
    let menu = text(&h.take_data(c));
    h.type_data(c, b"bad\r\nvm-00001\r\nls\r");
    assert_eq!(h.client(c).attached, Some((VmId(1), Mode::ReadWrite)));
    let mut expected =
        format!("bad\r\nvspc: no VM matches \"bad\"\r\n{menu}vm-00001\r\n").into_bytes();
    expected.extend(banner("vm-00001", "rw"));
    assert_eq!(h.take_data(c), expected);
    // What followed the good line in the same read is the VM's.
    assert_eq!(h.vms[i].received, b"ls\r");
}

#[test]
fn cr_and_lf_of_the_selection_line_in_separate_segments() {
    let mut h = harness();
    let i = h.add_numbered_vm(1);
    let c = h.connect_client(Transport::Raw, None);
    h.type_wire(c, &[b"vm-00001\r", b"\nabc"]);
    assert_eq!(h.vms[i].received, b"abc");
    // The telnet NUL after CR is skipped the same way; a line ending in LF skips nothing.
    let t = h.connect_client(Transport::Telnet, None);
    h.type_wire(t, &[b"vm-00001\r", b"\0def"]);
    let n = h.connect_client(Transport::Raw, None);
    h.type_wire(n, &[b"vm-00001\n", b"\nghi"]);
    assert_eq!(h.vms[i].received, b"abcdef\nghi");
    // Only the first byte of the next segment, and only LF or NUL.
    let d = h.connect_client(Transport::Raw, None);
    h.type_wire(d, &[b"vm-00001\r", b"x\n"]);
    assert_eq!(h.vms[i].received, b"abcdef\nghix\n");
}

#[test]
fn serial_break_reaches_the_vm_in_order_with_data() {
    let mut h = harness();
    let i = h.add_numbered_vm(1);
    let t = select(&mut h, Transport::Telnet, "vm-00001");
    // One read: data, IAC BRK, data (with an escaped 0xFF); then a break in a read of its own.
    h.type_wire(t, &[b"ab\xff\xf3c\xff\xffd", b"\xff\xf3", b"e"]);
    assert_eq!(
        h.vms[i].inputs,
        [
            VmInput::Data(b"ab".to_vec()),
            VmInput::Break,
            VmInput::Data(b"c\xffd".to_vec()),
            VmInput::Break,
            VmInput::Data(b"e".to_vec()),
        ]
    );
    // IAC BRK split across reads is still one break.
    h.type_wire(t, &[b"f\xff", b"\xf3g"]);
    assert_eq!(h.vms[i].breaks(), 3);
    assert_eq!(h.vms[i].received, b"abc\xffdefg");
    // A raw client has no commands: its 0xFF bytes are data.
    let r = select(&mut h, Transport::Raw, "vm-00001");
    h.type_data(r, b"\xff\xf3");
    assert_eq!(h.vms[i].breaks(), 3);
    assert!(h.vms[i].received.ends_with(b"g\xff\xf3"));
}

// ----- capacity and shutdown -----

#[test]
fn vm_and_client_capacity_refusals() {
    let mut c = config();
    c.max_vm_connections = 1;
    c.max_clients = 1;
    let mut h = Harness::new(c);
    let first = h.add_numbered_vm(1);
    let second = h.add_numbered_vm(2);
    assert_eq!(h.core.vm_count(), 1);
    assert_eq!(h.core.counters().vm_connections_refused, 1);
    assert!(h.vms[second]
        .events
        .iter()
        .any(|e| matches!(e, EmulatorEvent::Disconnected { .. })));
    assert_eq!(h.emu(second).current_conn(), None);
    // A client still choosing gives its slot up to a new one.
    let choosing = h.connect_client(Transport::Raw, None);
    let a = h.connect_client(Transport::Raw, Some((VmId(1), Mode::ReadOnly)));
    assert_eq!(h.client(choosing).dropped, Some(DropReason::Crowded));
    assert!(h.client(choosing).closed);
    // An attached one does not.
    assert_eq!(
        h.try_connect_client(Transport::Telnet, None),
        Err(Refused::Capacity(1))
    );
    assert_eq!(h.core.counters().client_connections_refused, 1);
    // Room again once it leaves.
    h.close_client(a);
    h.connect_client(Transport::Raw, None);
    h.power_off(first);
    h.set_connected(second, true);
    assert_eq!(h.core.vm_count(), 2);
}

#[test]
fn shutdown_drops_clients_and_closes_vms() {
    let mut h = harness();
    let i = h.add_numbered_vm(1);
    let j = h.add_numbered_vm(2);
    let a = select(&mut h, Transport::Telnet, "vm-00001");
    let menu = h.connect_client(Transport::Raw, None);
    h.take_data(menu);
    h.take_events();
    h.shutdown();
    assert!(h.core.is_shutting_down());
    assert_eq!(
        h.take_events()
            .into_iter()
            .filter(|e| matches!(e, Event::ClientDropped { .. }))
            .count(),
        2
    );
    for c in [a, menu] {
        assert_eq!(h.take_data(c), GOODBYE_SHUTDOWN);
        assert!(h.client(c).closed);
    }
    for vm in [i, j] {
        assert!(h.vms[vm]
            .events
            .iter()
            .any(|e| matches!(e, EmulatorEvent::Disconnected { .. })));
    }
    assert_eq!(h.core.endpoint().len(), 0);
    assert_eq!(h.core.open_clients(), 0);
    assert_eq!(
        h.try_connect_client(Transport::Raw, None),
        Err(Refused::ShuttingDown)
    );
    assert_eq!(h.raw_connect(), Err(Refused::ShuttingDown));
}
