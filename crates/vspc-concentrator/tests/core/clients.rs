//! Identification, selection and the menu, attach modes, scrollback and output budgets.

use super::*;

// ----- identification, selection, menu -----

#[test]
fn identification_adds_a_vm_entry() {
    let mut h = harness();
    let i = h.add_numbered_vm(1);
    // The entry appears on VC UUID plus DO-PROXY; VM-NAME comes after, as ESXi sends it.
    assert_eq!(
        h.take_events(),
        [
            Event::VmAdded {
                vm: VmId(1),
                conn: SessionId(1),
                flagged: None
            },
            Event::VmRenamed { vm: VmId(1) },
        ]
    );
    let conn = h.emu(i).current_conn().unwrap();
    assert!(h.vms[i].events.contains(&EmulatorEvent::ProxyAnswered {
        conn,
        accepted: true
    }));
    let vm = h.core.vm(VmId(1)).unwrap();
    assert_eq!(vm.name, "vm-00001");
    assert_eq!(vm.vc_uuid, UUID_1);
    assert_eq!(vm.service_uri, "vSPC.py");
    assert_eq!(vm.label, "vSPC.py");
    assert_eq!(vm.state, VmState::Connected);
    assert_eq!(vm.session, Some(1));
    assert_eq!(vm.connections, 1);
    assert_eq!(vm.flagged, None);
    assert!(vm.bios_uuid.is_some() && vm.location_uuid.is_some());
    assert_eq!(h.core.vm_count(), 1);
    assert_eq!(h.core.connected_vm_count(), 1);
    assert_eq!(h.core.open_vm_connections(), 1);
    assert_eq!(h.core.counters().vm_connections_total, 1);
}

#[test]
fn menu_lists_a_screenful() {
    let mut c = config();
    c.menu_rows = 1;
    let mut h = Harness::new(c);
    h.add_numbered_vm(1);
    h.add_numbered_vm(2);
    let raw = h.connect_client(Transport::Raw, None);
    let expected = format!(
        "\r\nvspc: 2 VM port(s)\r\n  # name/label               VC UUID                              state  clients\r\n  1 vm-00001/vSPC.py         {UUID_1} up     0\r\n... and 1 more (the admin listing has them all)\r\n{PROMPT}"
    );
    assert_eq!(text(&h.take_data(raw)), expected);
    assert_eq!(h.core.menu(), expected);

    // A telnet client gets the negotiation first, then the same menu.
    let telnet = h.connect_client(Transport::Telnet, None);
    let wire = h.client(telnet).wire.clone();
    assert!(wire.starts_with(NEGOTIATION), "{wire:?}");
    assert_eq!(&wire[NEGOTIATION.len()..], expected.as_bytes());
    assert_eq!(text(&h.take_data(telnet)), expected);
}

#[test]
fn selection_by_number_name_label_and_uuid() {
    let mut h = harness();
    vm_with_uri(&mut h, 1, "vSPC.py?port=console");
    vm_with_uri(&mut h, 1, "vSPC.py?port=com2");
    vm_with_uri(&mut h, 2, "vSPC.py");
    h.take_events();
    let vmx_2 = "01 23 45 67 89 ab cd ef-fe dc 00 00 00 00 00 02";
    let compact_1 = "0123456789abcdeffedc000000000001";
    for (line, vm, mode) in [
        ("1", VmId(1), Mode::ReadWrite),
        ("2 ro", VmId(2), Mode::ReadOnly),
        ("vm-00002", VmId(3), Mode::ReadWrite),
        ("connect vm-00001/com2", VmId(2), Mode::ReadWrite),
        ("vm-00001/console ro", VmId(1), Mode::ReadOnly),
        ("vm-00001/vSPC.py?port=com2", VmId(2), Mode::ReadWrite),
        (UUID_2, VmId(3), Mode::ReadWrite),
        (vmx_2, VmId(3), Mode::ReadOnly),
        (&format!("{compact_1}/console"), VmId(1), Mode::ReadWrite),
        (
            &format!("{}/com2", UUID_1.to_uppercase()),
            VmId(2),
            Mode::ReadWrite,
        ),
    ] {
        let c = h.connect_client(Transport::Raw, None);
        let line = if vm == VmId(3) && mode == Mode::ReadOnly {
            format!("{line} ro")
        } else {
            line.to_owned()
        };
        h.type_data(c, format!("{line}\r\n").as_bytes());
        assert_eq!(
            h.client(c).attached,
            Some((vm, mode)),
            "{line:?}: {}",
            text(&h.client(c).data)
        );
        let name = h.core.vm(vm).unwrap().name;
        let data = h.take_data(c);
        let mut tail = format!("{line}\r\n").into_bytes();
        tail.extend(banner(&name, mode.short()));
        assert!(data.ends_with(&tail), "{line:?}: {}", text(&data));
        assert_eq!(
            h.take_events(),
            [Event::ClientAttached {
                client: c,
                vm,
                mode
            }]
        );
    }
    assert_eq!(h.core.resolve("vm-00001/console"), Ok(VmId(1)));
    assert_eq!(h.core.resolve("3"), Ok(VmId(3)));
}

#[test]
fn selection_errors_show_the_menu_again() {
    let mut h = harness();
    vm_with_uri(&mut h, 1, "vSPC.py?port=console");
    vm_with_uri(&mut h, 1, "vSPC.py?port=com2");
    let c = h.connect_client(Transport::Raw, None);
    h.take_data(c);
    let menu = h.core.menu();
    for (line, error) in [
        (
            "vm-00001",
            "\"vm-00001\" is ambiguous: pick one of #1 (console), #2 (com2)",
        ),
        ("nope", "no VM matches \"nope\""),
        ("9", "no VM #9"),
        ("vm-00001/com3", "no VM matches \"vm-00001/com3\""),
    ] {
        h.type_data(c, format!("{line}\r\n").as_bytes());
        assert_eq!(
            text(&h.take_data(c)),
            format!("{line}\r\nvspc: {error}\r\n{menu}")
        );
        assert_eq!(h.client(c).attached, None);
    }
    assert_eq!(
        h.core.resolve("vm-00001"),
        Err(AttachError::Ambiguous {
            selector: "vm-00001".into(),
            choices: "#1 (console), #2 (com2)".into()
        })
    );
    // Line editing: backspace is echoed as erase, and the edited line selects.
    h.type_data(c, b"vm-00001/com3\x7f2\r\n");
    assert_eq!(h.client(c).attached, Some((VmId(2), Mode::ReadWrite)));
    let mut expected = b"vm-00001/com3\x08 \x082\r\n".to_vec();
    expected.extend(banner("vm-00001", "rw"));
    assert_eq!(h.take_data(c), expected);
}

#[test]
fn attach_at_connect_and_a_failed_target() {
    let mut h = harness();
    h.add_numbered_vm(1);
    let a = h.connect_client(Transport::Raw, Some((VmId(1), Mode::Exclusive)));
    assert_eq!(h.take_data(a), banner("vm-00001", "excl"));
    // A target refused (held exclusively) leaves the client at the menu.
    let b = h.connect_client(Transport::Raw, Some((VmId(1), Mode::ReadWrite)));
    assert_eq!(
        text(&h.take_data(b)),
        format!(
            "vspc: vm-00001 is held exclusively by another client; attach read-only with \"ro\"\r\n{}",
            h.core.menu()
        )
    );
    assert_eq!(h.client(b).attached, None);
    let c = h.connect_client(Transport::Raw, Some((VmId(7), Mode::ReadWrite)));
    assert!(text(&h.take_data(c)).starts_with("vspc: no VM #7\r\n"));
}

// ----- modes -----

#[test]
fn read_write_clients_share_the_vm() {
    let mut h = harness();
    let i = h.add_numbered_vm(1);
    let a = select(&mut h, Transport::Raw, "vm-00001");
    let b = select(&mut h, Transport::Telnet, "vm-00001 rw");
    h.type_data(a, b"from a;");
    h.type_data(b, b"from b\xff;");
    h.type_data(a, b"a again");
    assert_eq!(h.vms[i].received, b"from a;from b\xff;a again");
    h.vm_send(i, b"both\xffsee");
    assert_eq!(h.take_data(a), b"both\xffsee");
    assert_eq!(h.take_data(b), b"both\xffsee");
    let vm = h.core.vm(VmId(1)).unwrap();
    assert_eq!(vm.bytes_to_vm, 22);
    assert_eq!(vm.bytes_from_vm, 8);
    assert_eq!(vm.clients.len(), 2);
    assert_eq!(h.core.client(a).unwrap().bytes_in, 14);
    assert_eq!(h.core.client(b).unwrap().bytes_in, 8);
}

#[test]
fn read_only_input_is_discarded_and_counted() {
    let mut h = harness();
    let i = h.add_numbered_vm(1);
    let ro = select(&mut h, Transport::Telnet, "vm-00001 ro");
    let rw = select(&mut h, Transport::Raw, "vm-00001");
    h.type_data(ro, b"ignored");
    h.type_data(rw, b"ok");
    h.send_break(ro);
    assert_eq!(h.vms[i].inputs, [VmInput::Data(b"ok".to_vec())]);
    assert_eq!(h.core.counters().client_bytes_discarded, 7);
    assert_eq!(h.core.client(ro).unwrap().bytes_in, 0);
    // A watcher still sees everything, and its input never blocks it.
    assert!(h.core.client_wants_input(ro));
    h.vm_send(i, b"out");
    assert_eq!(h.take_data(ro), b"out");
    assert_eq!(h.take_data(rw), b"out");
}

#[test]
fn exclusive_excludes_writers_but_not_watchers() {
    let mut h = harness();
    let i = h.add_numbered_vm(1);
    let x = select(&mut h, Transport::Raw, "vm-00001 excl");
    let held =
        "vspc: vm-00001 is held exclusively by another client; attach read-only with \"ro\"\r\n";
    for line in ["vm-00001", "vm-00001 excl", "1 rw"] {
        let c = h.connect_client(Transport::Raw, None);
        h.take_data(c);
        h.type_data(c, format!("{line}\r\n").as_bytes());
        assert_eq!(h.client(c).attached, None);
        let data = text(&h.take_data(c));
        assert!(data.starts_with(&format!("{line}\r\n{held}")), "{data}");
    }
    let ro = select(&mut h, Transport::Raw, "vm-00001 ro");
    h.type_data(x, b"mine");
    h.type_data(ro, b"not mine");
    assert_eq!(h.vms[i].received, b"mine");
    let vm = h.core.vm(VmId(1)).unwrap();
    assert_eq!(vm.exclusive, Some(x));
    assert_eq!(vm.clients.len(), 2);
}

#[test]
fn exclusive_is_refused_while_writers_are_attached() {
    let mut h = harness();
    h.add_numbered_vm(1);
    select(&mut h, Transport::Raw, "vm-00001");
    select(&mut h, Transport::Raw, "vm-00001 ro");
    let c = h.connect_client(Transport::Raw, None);
    h.take_data(c);
    h.type_data(c, b"vm-00001 excl\r\n");
    let data = text(&h.take_data(c));
    assert!(
        data.starts_with(
            "vm-00001 excl\r\nvspc: vm-00001 has 1 writer(s) attached; exclusive access refused\r\n"
        ),
        "{data}"
    );
    assert_eq!(h.client(c).attached, None);
}

#[test]
fn exclusive_is_released_on_detach() {
    let mut h = harness();
    let i = h.add_numbered_vm(1);
    let x = select(&mut h, Transport::Raw, "vm-00001 excl");
    let w = h.connect_client(Transport::Raw, None);
    h.type_data(w, b"vm-00001\r\n");
    assert_eq!(h.client(w).attached, None);
    h.close_client(x);
    assert_eq!(h.core.vm(VmId(1)).unwrap().exclusive, None);
    h.type_data(w, b"vm-00001 excl\r\n");
    assert_eq!(h.client(w).attached, Some((VmId(1), Mode::Exclusive)));
    h.mark_typed(w);
    h.type_data(w, b"now mine");
    assert_eq!(h.vms[i].received, b"now mine");

    // A dropped exclusive client releases it too.
    let mut c = config();
    c.output_budget = 600;
    let mut h = Harness::new(c);
    let i = h.add_numbered_vm(1);
    let x = select(&mut h, Transport::Raw, "vm-00001 excl");
    h.set_reading(x, false);
    // Its writer takes the first write and blocks in it; the next is a budget behind, and
    // after the grace it is dropped.
    h.vm_send(i, &[b'.'; 300]);
    h.vm_send(i, &[b'.'; 601]);
    h.advance(Duration::from_secs(1));
    assert_eq!(dropped(&h), [(x, DropReason::TooSlow)]);
    assert_eq!(h.core.vm(VmId(1)).unwrap().exclusive, None);
    select(&mut h, Transport::Raw, "vm-00001 excl");
}

// ----- scrollback and budgets -----

#[test]
fn scrollback_is_replayed_escaped_for_telnet_and_raw_for_raw() {
    let mut c = config();
    c.scrollback = 16;
    let mut h = Harness::new(c);
    let i = h.add_numbered_vm(1);
    h.vm_send(i, b"0123456789");
    h.vm_send(i, b"abcdef\xffXYZ");
    let kept = b"456789abcdef\xffXYZ";

    let telnet = h.connect_client(Transport::Telnet, Some((VmId(1), Mode::ReadOnly)));
    let mut wire = NEGOTIATION.to_vec();
    wire.extend(banner("vm-00001", "ro"));
    wire.extend_from_slice(b"456789abcdef\xff\xffXYZ");
    assert_eq!(h.client(telnet).wire, wire);
    let mut data = banner("vm-00001", "ro");
    data.extend_from_slice(kept);
    assert_eq!(h.take_data(telnet), data);

    let raw = h.connect_client(Transport::Raw, None);
    h.take_data(raw);
    h.type_data(raw, b"1\r\n");
    let mut data = b"1\r\n".to_vec();
    data.extend(banner("vm-00001", "rw"));
    data.extend_from_slice(kept);
    assert_eq!(h.take_data(raw), data);

    // Live output follows the replay; live 0xFF is escaped for telnet only.
    h.vm_send(i, b"\xff!");
    assert_eq!(h.take_data(telnet), b"\xff!");
    assert_eq!(h.take_data(raw), b"\xff!");
    assert!(h.client(telnet).wire.ends_with(b"\xff\xff!"));
}

#[test]
fn scrollback_replay_is_trimmed_to_the_output_budget() {
    let mut c = config();
    c.scrollback = 1000;
    c.output_budget = 300;
    let mut h = Harness::new(c);
    let i = h.add_numbered_vm(1);
    let output: Vec<u8> = (0..1000u32).map(|n| (n % 251) as u8 + 5).collect();
    h.vm_send(i, &output);
    // Raw: the banner (37 bytes) and the newest 263 bytes fill the budget, and it stays.
    let raw = h.connect_client(Transport::Raw, Some((VmId(1), Mode::ReadOnly)));
    let mut expected = banner("vm-00001", "ro");
    expected.extend_from_slice(&output[1000 - (300 - expected.len())..]);
    assert_eq!(h.take_data(raw), expected);
    // Telnet: an escaped 0xFF counts twice, and the negotiation queued before the banner
    // shares the budget.
    h.vm_send(i, &[0xff; 10]);
    let telnet = h.connect_client(Transport::Telnet, Some((VmId(1), Mode::ReadOnly)));
    let data = h.take_data(telnet);
    assert!(data.ends_with(&[0xff; 10]), "{data:?}");
    let wire = h.client(telnet).wire.len();
    assert!((299..=300).contains(&wire), "{wire} bytes");
    assert_eq!(dropped(&h), []);
    h.vm_send(i, b"live");
    assert_eq!(
        h.take_data(raw),
        b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xfflive"
    );
    assert_eq!(h.take_data(telnet), b"live");
}

#[test]
fn a_client_that_never_reads_is_dropped_alone() {
    let mut c = config();
    c.output_budget = 4096;
    let mut h = Harness::new(c);
    let i = h.add_numbered_vm(1);
    let slow = select(&mut h, Transport::Telnet, "vm-00001");
    let fast = select(&mut h, Transport::Raw, "vm-00001");
    h.set_reading(slow, false);
    let chunk: Vec<u8> = (0..1000u32).map(|n| (n * 7) as u8).collect();
    let mut all = Vec::new();
    for _ in 0..6 {
        h.vm_send(i, &chunk);
        all.extend_from_slice(&chunk);
        h.type_data(fast, b"k");
    }
    // Its writer took the first write and is stuck in it; the next five (escaped: a few
    // 0xFF doubled) pass the 4096-byte budget at the sixth. From then on the VM is not read
    // (what it writes waits in the socket), for the grace.
    let s = h.session(i).unwrap();
    assert!(!h.core.vm_wants_input(s));
    h.vm_send(i, &chunk);
    all.extend_from_slice(&chunk);
    assert_eq!(dropped(&h), []);
    let before_drop = h.take_data(fast);
    assert_eq!(before_drop.len(), 6000);
    assert!(before_drop == all[..6000]);
    h.advance(Duration::from_millis(999));
    assert_eq!(dropped(&h), []);
    assert_eq!(h.take_data(fast), b"");
    h.advance(Duration::from_millis(1));
    assert_eq!(dropped(&h), [(slow, DropReason::TooSlow)]);
    assert!(h.core.vm_wants_input(s));
    assert_eq!(h.core.counters().clients_dropped_slow, 1);
    assert!(h.core.client_is_closing(slow));
    assert!(!h.core.client_wants_input(slow));
    // The driver abandons the write it was stuck in and closes the connection: the client
    // got that write, never the backlog.
    assert!(h.client(slow).closed);
    assert_eq!(h.take_data(slow), chunk);
    assert_eq!(h.core.client(slow), None);
    // The other client got every byte, once the VM was read again.
    let after_drop = h.take_data(fast);
    assert_eq!(after_drop.len(), 1000);
    assert!(after_drop == all[6000..]);
    assert_eq!(h.vms[i].received, b"kkkkkk");
    let vm = h.core.vm(VmId(1)).unwrap();
    assert_eq!(vm.state, VmState::Connected);
    assert_eq!(vm.clients.len(), 1);
    assert_eq!(vm.bytes_from_vm, 7000);
}

#[test]
fn one_vm_write_beyond_twice_the_budget_drops_even_a_reader() {
    let mut c = config();
    c.output_budget = 600;
    let mut h = Harness::new(c);
    let i = h.add_numbered_vm(1);
    let a = select(&mut h, Transport::Raw, "vm-00001");
    h.vm_send(i, &[b'.'; 1200]);
    assert_eq!(h.take_data(a), [b'.'; 1200]);
    h.vm_send(i, &[b'.'; 1201]);
    assert_eq!(dropped(&h), [(a, DropReason::TooSlow)]);
    assert_eq!(h.take_data(a), GOODBYE_SLOW);
    assert!(h.client(a).closed);
}

#[test]
fn a_slow_vm_pauses_its_writers_without_loss() {
    let mut c = config();
    c.max_pending_to_vm = 16;
    let mut h = Harness::new(c);
    let i = h.add_numbered_vm(1);
    let a = select(&mut h, Transport::Raw, "vm-00001");
    h.stall(i, true);
    h.type_data(a, b"0123456789");
    h.type_data(a, b"abcdefghij");
    assert!(h.core.client_wants_input(a));
    // Over the cap: this read waits in the core, and the client is not read any more.
    h.type_data(a, b"ABCDEFGHIJ");
    assert!(!h.core.client_wants_input(a));
    h.type_data(a, b"klmnop");
    assert!(h.client(a).has_pending());
    h.stall(i, false);
    assert!(h.core.client_wants_input(a));
    assert!(!h.client(a).has_pending());
    assert_eq!(h.vms[i].received, b"0123456789abcdefghijABCDEFGHIJklmnop");
    assert_eq!(h.core.counters().client_bytes_discarded, 0);
}

#[test]
fn the_application_writes_to_a_vm() {
    let mut h = harness();
    let i = h.add_numbered_vm(1);
    assert_eq!(h.core.write_to_vm(VmId(1), b"app;"), Ok(()));
    h.run();
    assert_eq!(h.vms[i].received, b"app;");
    assert_eq!(
        h.core.write_to_vm(VmId(9), b"x"),
        Err(WriteError::NoSuchVm(VmId(9)))
    );
    // Held in order during a vMotion, delivered to the destination.
    h.partition(i, true);
    assert!(h.vmotion(i, VmotionPlan::new(&b"seq1"[..])));
    assert_eq!(h.core.write_to_vm(VmId(1), b"held;"), Ok(()));
    h.run();
    h.partition(i, false);
    assert_eq!(h.vms[i].received, b"app;held;");
    assert_eq!(h.core.vm(VmId(1)).unwrap().connections, 2);
    h.set_connected(i, false);
    assert_eq!(
        h.core.write_to_vm(VmId(1), b"x"),
        Err(WriteError::NotConnected(VmId(1)))
    );
    assert_eq!(h.core.vm(VmId(1)).unwrap().bytes_to_vm, 9);
}
