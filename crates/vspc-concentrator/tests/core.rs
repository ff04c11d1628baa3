//! The concentrator core on a simulated clock, byte for byte: emulated ESXi VMs and raw and
//! telnet clients driven through the in-memory harness (`support`), no sockets.

mod support;

use std::time::Duration;

use support::{Harness, VmInput};
use vspc_concentrator::vspc_proto::{NotNowReason, RejectReason, SessionId};
use vspc_concentrator::{
    AttachError, ClientId, ConcentratorConfig, DropReason, Event, Mode, Refused, Transport, VmId,
    VmState, VmotionStep, WriteError,
};
use vspc_emulator::{
    AbortReason, EmulatorConfig, EmulatorEvent, FinOrder, VmIdentity, VmotionOutcome, VmotionPlan,
};

/// What the concentrator offers a telnet client first: WILL ECHO, WILL SGA, WILL BINARY,
/// DO BINARY, DO SGA.
const NEGOTIATION: &[u8] = b"\xff\xfb\x01\xff\xfb\x03\xff\xfb\x00\xff\xfd\x00\xff\xfd\x03";
const UUID_1: &str = "01234567-89ab-cdef-fedc-000000000001";
const UUID_2: &str = "01234567-89ab-cdef-fedc-000000000002";
const GOODBYE_SLOW: &[u8] =
    b"\r\n[vspc: output buffer overflow: this client reads too slowly and was disconnected]\r\n";
const GOODBYE_REMOVED: &[u8] = b"\r\n[vspc: the VM did not come back; closing]\r\n";
const GOODBYE_SHUTDOWN: &[u8] = b"\r\n[vspc: the concentrator is shutting down; goodbye]\r\n";
const PROMPT: &str = "select by number, name[/label] or UUID, then optionally ro or excl: ";

fn banner(name: &str, mode: &str) -> Vec<u8> {
    format!("\r\n[vspc: attached to {name} ({mode})]\r\n").into_bytes()
}

fn harness() -> Harness {
    Harness::new(ConcentratorConfig::default())
}

fn config() -> ConcentratorConfig {
    ConcentratorConfig::default()
}

/// A VM with `identity` and a service URI.
fn vm_with_uri(h: &mut Harness, n: u64, uri: &'static str) -> usize {
    let mut config = EmulatorConfig::new(VmIdentity::numbered(n));
    config.port.service_uri = uri.into();
    let i = h.add_vm(config);
    h.power_on(i);
    i
}

/// A client that selected with `line` and is attached: its output so far (menu, echo,
/// banner) is taken, and what it types from now on is what its VM should get.
fn select(h: &mut Harness, transport: Transport, line: &str) -> ClientId {
    let c = h.connect_client(transport, None);
    h.type_data(c, format!("{line}\r\n").as_bytes());
    assert!(h.client(c).attached.is_some(), "{line:?} did not attach");
    h.take_data(c);
    h.mark_typed(c);
    c
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn steps(h: &Harness, vm: VmId) -> Vec<VmotionStep> {
    h.events
        .iter()
        .filter_map(|e| match e {
            Event::Vmotion {
                vm: Some(v), step, ..
            } if *v == vm => Some(step.clone()),
            _ => None,
        })
        .collect()
}

fn dropped(h: &Harness) -> Vec<(ClientId, DropReason)> {
    h.events
        .iter()
        .filter_map(|e| match e {
            Event::ClientDropped { client, reason } => Some((*client, *reason)),
            _ => None,
        })
        .collect()
}

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
    // Its writer takes the first write and blocks in it; the next is a budget behind.
    h.vm_send(i, &[b'.'; 300]);
    h.vm_send(i, &[b'.'; 601]);
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
    // 0xFF doubled) pass the 4096-byte budget at the fifth.
    assert_eq!(dropped(&h), [(slow, DropReason::TooSlow)]);
    assert_eq!(h.core.counters().clients_dropped_slow, 1);
    assert!(h.core.client_is_closing(slow));
    assert!(!h.core.client_wants_input(slow));
    // The driver abandons the write it was stuck in and closes the connection: the client
    // got that write, never the backlog.
    assert!(h.client(slow).closed);
    assert_eq!(h.take_data(slow), chunk);
    assert_eq!(h.core.client(slow), None);
    // The other client and the VM never noticed.
    assert_eq!(h.take_data(fast), all);
    assert_eq!(h.vms[i].received, b"kkkkkk");
    let vm = h.core.vm(VmId(1)).unwrap();
    assert_eq!(vm.state, VmState::Connected);
    assert_eq!(vm.clients.len(), 1);
    assert_eq!(vm.bytes_from_vm, 6000);
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
    assert!(h.vmotion(i, VmotionPlan::new(&b"seq1"[..])));
    assert_eq!(
        steps(&h, VmId(1)),
        [VmotionStep::NotNow(NotNowReason::Vetoed)]
    );
    assert!(h.vms[i]
        .events
        .contains(&EmulatorEvent::Vmotion(VmotionOutcome::Refused)));
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
