//! vMotion with clients typing through it: both FIN orders, NOTNOW, ABORT, expiry.

use super::*;

// ----- vMotion -----

/// A vMotion with `fin_order`, clients typing in every window (after GOAHEAD; between the
/// source's FIN and COMPLETE, or between COMPLETE and the source's FIN).
fn vmotion_with_typing(fin_order: FinOrder) {
    let mut h = harness();
    let i = h.add_numbered_vm(1);
    let a = select(&mut h, Transport::Telnet, "vm-00001");
    let b = select(&mut h, Transport::Raw, "vm-00001");
    let watcher = select(&mut h, Transport::Raw, "vm-00001 ro");
    h.vm_send(i, b"[before]");
    h.type_data(a, b"1");
    h.take_events();
    let source = h.emu(i).current_conn().unwrap();
    let source_session = h.session(i).unwrap();

    // The destination host cannot reach the concentrator yet: the handover waits.
    h.partition(i, true);
    let mut plan = VmotionPlan::new(&b"seq1"[..]);
    plan.fin_order = fin_order;
    assert!(h.vmotion(i, plan));
    assert_eq!(steps(&h, VmId(1)), [VmotionStep::GoAhead]);
    assert!(h
        .core
        .endpoint()
        .session(source_session)
        .unwrap()
        .is_holding());
    // Typed after GOAHEAD: held, not lost; the VM still writes on the source.
    h.type_data(a, b"2\xff");
    h.type_data(b, b"3");
    h.vm_send(i, b"[quiesce]");
    assert_eq!(h.vms[i].received, b"1");

    let dest = h.emu(i).destination_conn().unwrap();
    h.hold(i, dest);
    match fin_order {
        FinOrder::FinBeforeComplete => {
            // Step the destination up to the source's FIN: its COMPLETE waits in the
            // network while clients type to a VM in transit.
            while h.vms[i].has_link(source) {
                assert!(h.step(i, dest), "the source never closed");
            }
            assert_eq!(h.core.vm(VmId(1)).unwrap().state, VmState::Migrating);
            assert_eq!(h.core.vm(VmId(1)).unwrap().session, Some(source_session.0));
            h.type_data(b, b"4");
            h.type_data(a, b"5");
            h.release(i, dest);
        }
        FinOrder::FinAfterComplete => {
            // The source's FIN is late in the network: COMPLETE comes first and the clients
            // type to the destination while the source is still open.
            h.hold(i, source);
            h.release(i, dest);
            assert!(h.vms[i].has_link(source));
            assert_eq!(h.core.vm(VmId(1)).unwrap().state, VmState::Connected);
            h.type_data(b, b"4");
            h.type_data(a, b"5");
            h.release(i, source);
        }
    }
    let dest_session = h.session(i).unwrap();
    assert_ne!(dest_session, source_session);
    assert_eq!(h.emu(i).current_conn(), Some(dest));
    assert!(h.vms[i]
        .events
        .contains(&EmulatorEvent::Vmotion(VmotionOutcome::Completed {
            from: source,
            to: dest
        })));
    assert!(h.events.contains(&Event::VmMoved {
        vm: VmId(1),
        from: source_session,
        to: dest_session
    }));
    assert_eq!(
        steps(&h, VmId(1)),
        [
            VmotionStep::GoAhead,
            VmotionStep::PeerAccepted,
            VmotionStep::Completed {
                replayed: match fin_order {
                    FinOrder::FinBeforeComplete => 5,
                    FinOrder::FinAfterComplete => 3,
                }
            }
        ]
    );
    h.type_data(a, b"6");
    h.vm_send(i, b"[after]");

    // Byte-exact both ways: every client's bytes once, in order; every client sees the VM.
    assert_eq!(h.vms[i].received, b"12\xff3456");
    let received_on_dest: Vec<u8> = h.vms[i]
        .events
        .iter()
        .filter_map(|e| match e {
            EmulatorEvent::ClientData { conn, bytes } if *conn == dest => Some(bytes.to_vec()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(received_on_dest, b"2\xff3456");
    for c in [a, b, watcher] {
        assert_eq!(h.take_data(c), b"[before][quiesce][after]");
        assert_eq!(h.client(c).attached.map(|(vm, _)| vm), Some(VmId(1)));
    }
    let vm = h.core.vm(VmId(1)).unwrap();
    assert_eq!(vm.state, VmState::Connected);
    assert_eq!(vm.session, Some(dest_session.0));
    assert_eq!(vm.connections, 2);
    assert_eq!(vm.clients.len(), 3);
    assert_eq!(vm.vmotions.len(), 3);
    assert_eq!(h.core.open_vm_connections(), 1);
    assert_eq!(h.core.vmotions_pending(), 0);
    assert_eq!(h.core.counters().vmotion_completed, 1);
    assert_eq!(h.core.vm_count(), 1);
}

#[test]
fn vmotion_source_fin_before_complete_keeps_clients_and_bytes() {
    vmotion_with_typing(FinOrder::FinBeforeComplete);
}

#[test]
fn vmotion_source_fin_after_complete_keeps_clients_and_bytes() {
    vmotion_with_typing(FinOrder::FinAfterComplete);
}

#[test]
fn vmotion_in_one_go_both_fin_orders() {
    for fin_order in [FinOrder::FinBeforeComplete, FinOrder::FinAfterComplete] {
        let mut h = harness();
        let i = h.add_numbered_vm(1);
        let a = select(&mut h, Transport::Raw, "vm-00001");
        let mut plan = VmotionPlan::new(&b"\x00\x00\x00\x01"[..]);
        plan.fin_order = fin_order;
        assert!(h.vmotion(i, plan));
        assert_eq!(h.core.vm(VmId(1)).unwrap().connections, 2);
        h.type_data(a, b"x");
        h.vm_send(i, b"y");
        assert_eq!(h.vms[i].received, b"x");
        assert_eq!(h.take_data(a), b"y");
        assert_eq!(h.core.open_vm_connections(), 1);
    }
}

#[test]
fn vmotion_refused_with_notnow_when_disallowed() {
    let mut c = config();
    c.allow_vmotion = false;
    let mut h = Harness::new(c);
    let i = h.add_numbered_vm(1);
    let a = select(&mut h, Transport::Raw, "vm-00001");
    let source = h.session(i);
    vmotion_refused_with_notnow(&mut h, i);
    assert_eq!(h.core.counters().vmotion_notnow, 1);
    // Nothing is held: input goes straight to the VM, which stays on its source.
    h.type_data(a, b"now");
    assert_eq!(h.vms[i].received, b"now");
    assert_eq!(h.session(i), source);
    assert_eq!(h.core.vm(VmId(1)).unwrap().state, VmState::Connected);
}

#[test]
fn vmotion_abort_releases_held_input_to_the_source() {
    let mut h = harness();
    let i = h.add_numbered_vm(1);
    let a = select(&mut h, Transport::Telnet, "vm-00001");
    let source = h.emu(i).current_conn().unwrap();
    let source_session = h.session(i).unwrap();
    h.partition(i, true);
    let mut plan = VmotionPlan::new(&b"seq1"[..]);
    plan.wrong_secret = Some(b"not-the-secret"[..].into());
    assert!(h.vmotion(i, plan));
    h.type_data(a, b"held");
    h.send_break(a);
    h.type_data(a, b"!");
    assert_eq!(h.vms[i].received, b"");
    // The destination presents a wrong secret: refused; the source aborts.
    h.partition(i, false);
    assert!(h.vms[i]
        .events
        .contains(&EmulatorEvent::Vmotion(VmotionOutcome::Aborted {
            reason: AbortReason::PeerRejected
        })));
    assert_eq!(
        steps(&h, VmId(1)),
        [VmotionStep::GoAhead, VmotionStep::Aborted { released: 4 },]
    );
    assert!(h.events.iter().any(|e| matches!(
        e,
        Event::Vmotion {
            vm: None,
            step: VmotionStep::PeerRejected(RejectReason::UnknownKey),
            ..
        }
    )));
    // Held input (and the break typed after it, then the rest) reach the source, in order.
    assert_eq!(
        h.vms[i].inputs,
        [
            VmInput::Data(b"held".to_vec()),
            VmInput::Break,
            VmInput::Data(b"!".to_vec())
        ]
    );
    assert!(h.vms[i].events.iter().all(|e| match e {
        EmulatorEvent::ClientData { conn, .. } => *conn == source,
        _ => true,
    }));
    assert_eq!(h.session(i), Some(source_session));
    assert_eq!(h.core.counters().vmotion_aborted, 1);
    h.type_data(a, b"after");
    assert_eq!(h.vms[i].received, b"held!after");
}

#[test]
fn vmotion_expiry_with_the_source_open_releases_to_it() {
    let mut h = harness();
    let mut config = EmulatorConfig::new(VmIdentity::numbered(1));
    // The host waits longer than the concentrator (30 s) for the destination.
    config.port.vmotion_limit = Duration::from_secs(60);
    let i = h.add_vm(config);
    h.power_on(i);
    let a = select(&mut h, Transport::Raw, "vm-00001");
    let source_session = h.session(i).unwrap();
    h.partition(i, true);
    assert!(h.vmotion(i, VmotionPlan::new(&b"seq1"[..])));
    h.type_data(a, b"held");
    h.advance(Duration::from_secs(29));
    assert_eq!(h.vms[i].received, b"");
    h.advance(Duration::from_secs(1));
    assert_eq!(
        steps(&h, VmId(1)),
        [VmotionStep::GoAhead, VmotionStep::Expired { released: 4 }]
    );
    assert_eq!(h.vms[i].received, b"held");
    assert_eq!(h.core.counters().vmotion_expired, 1);
    assert_eq!(h.core.vmotions_pending(), 0);
    let vm = h.core.vm(VmId(1)).unwrap();
    assert_eq!(vm.state, VmState::Connected);
    assert_eq!(vm.session, Some(source_session.0));
    h.type_data(a, b"+");
    assert_eq!(h.vms[i].received, b"held+");
    // The host gives up later and aborts: nothing changes for the clients.
    h.advance(Duration::from_secs(31));
    h.type_data(a, b"+");
    assert_eq!(h.vms[i].received, b"held++");
    assert_eq!(h.session(i), Some(source_session));
}

#[test]
fn vmotion_expiry_with_the_source_closed_leaves_the_entry_disconnected() {
    let mut h = harness();
    let i = h.add_numbered_vm(1);
    let a = select(&mut h, Transport::Raw, "vm-00001");
    h.partition(i, true);
    assert!(h.vmotion(i, VmotionPlan::new(&b"seq1"[..])));
    h.type_data(a, b"held");
    // The source's connection is lost mid-vMotion: the VM is in transit.
    assert!(h.cut(i));
    assert_eq!(h.core.vm(VmId(1)).unwrap().state, VmState::Migrating);
    assert_eq!(h.core.open_vm_connections(), 0);
    h.type_data(a, b"more");
    h.advance(Duration::from_secs(30));
    assert_eq!(
        steps(&h, VmId(1)),
        [VmotionStep::GoAhead, VmotionStep::Expired { released: 8 }]
    );
    assert!(h.events.contains(&Event::VmDisconnected { vm: VmId(1) }));
    let vm = h.core.vm(VmId(1)).unwrap();
    assert_eq!(vm.state, VmState::Disconnected);
    assert_eq!(vm.session, None);
    // The client stays attached, waiting for the VM to come back.
    assert_eq!(vm.clients.len(), 1);
    assert_eq!(h.core.endpoint().len(), 0);
    assert_eq!(h.vms[i].received, b"");
}

#[test]
fn vm_reconnecting_while_in_transit_is_reattached_not_flagged() {
    let mut h = harness();
    let i = h.add_numbered_vm(1);
    let a = select(&mut h, Transport::Raw, "vm-00001");
    h.partition(i, true);
    assert!(h.vmotion(i, VmotionPlan::new(&b"seq1"[..])));
    h.type_data(a, b"held");
    // The source is lost mid-vMotion; the host gives the vMotion up and reconnects.
    assert!(h.cut(i));
    h.partition(i, false);
    assert_eq!(h.core.vm(VmId(1)).unwrap().state, VmState::Migrating);
    h.take_events();
    assert!(h.set_connected(i, true));
    // It is the same VM: no live connection held the identity.
    assert_eq!(
        h.take_events(),
        [Event::VmReconnected {
            vm: VmId(1),
            conn: SessionId(2)
        }]
    );
    assert_eq!(h.core.vm_count(), 1);
    h.type_data(a, b"typed after");
    h.vm_send(i, b"output");
    assert_eq!(h.take_data(a), b"output");
    // What was held on the lost source goes nowhere when the vMotion expires.
    h.advance(Duration::from_secs(30));
    assert!(h.events.iter().any(|e| matches!(
        e,
        Event::Vmotion {
            step: VmotionStep::Expired { released: 4 },
            ..
        }
    )));
    assert_eq!(h.vms[i].received, b"typed after");
    let vm = h.core.vm(VmId(1)).unwrap();
    assert_eq!(vm.state, VmState::Connected);
    assert_eq!(vm.session, Some(2));
    assert_eq!(vm.flagged, None);
}

#[test]
fn input_waiting_when_an_in_transit_vmotion_expires_waits_for_the_vm() {
    let mut c = config();
    c.max_held = 4;
    let mut h = Harness::new(c);
    let i = h.add_numbered_vm(1);
    let a = select(&mut h, Transport::Raw, "vm-00001");
    h.partition(i, true);
    assert!(h.vmotion(i, VmotionPlan::new(&b"seq1"[..])));
    h.type_data(a, b"1234");
    // Over the hold: this read waits in the core.
    h.type_data(a, b"56");
    assert!(!h.core.client_wants_input(a));
    assert!(h.cut(i));
    h.partition(i, false);
    h.advance(Duration::from_secs(30));
    assert_eq!(h.core.vm(VmId(1)).unwrap().state, VmState::Disconnected);
    assert_eq!(h.core.counters().client_bytes_discarded, 0);
    // The VM comes back: the waiting input reaches it (the held "1234" went with the source).
    h.set_connected(i, true);
    assert_eq!(h.vms[i].received, b"56");
    assert!(h.core.client_wants_input(a));
}
