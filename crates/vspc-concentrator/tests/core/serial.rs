//! RFC 2217 on the client port, byte for byte: negotiation, answers to every setting, what a
//! read-only client may not set, breaks in order with data, purges, notifications, and the
//! VM side's reports taking precedence.

use super::*;
use vspc_emulator::Fault;

/// `IAC SB COM-PORT <payload> IAC SE`, 0xFF doubled.
fn sb(payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0xff, 0xfa, 44];
    for &byte in payload {
        out.push(byte);
        if byte == 0xff {
            out.push(0xff);
        }
    }
    out.extend_from_slice(&[0xff, 0xf0]);
    out
}

/// What reached the client's wire since `from`.
fn wire_since(h: &Harness, c: ClientId, from: usize) -> Vec<u8> {
    h.client(c).wire[from..].to_vec()
}

/// Carrier, DSR and CTS: a connected VM whose DTR and RTS are up.
const CONNECTED: u8 = 0x80 | 0x20 | 0x10;

/// A telnet client attached to VM 1 in `mode` that negotiated COM-PORT; the wire mark after
/// the negotiation and the first modem-state report.
fn serial_client(h: &mut Harness, mode: Mode) -> (ClientId, usize) {
    let c = h.connect_client(Transport::Telnet, Some((VmId(1), mode)));
    let before = h.client(c).wire.len();
    h.offer_com_port(c);
    // DO COM-PORT, then the modem state at once (RFC 2217 clients learn the lines only from
    // notifications).
    let mut expected = vec![0xff, 0xfd, 44];
    expected.extend(sb(&[107, CONNECTED]));
    assert_eq!(wire_since(h, c, before), expected);
    let mark = h.client(c).wire.len();
    h.take_data(c);
    (c, mark)
}

#[test]
fn a_serial_tool_gets_every_setting_answered() {
    let mut h = harness();
    h.add_numbered_vm(1);
    let (c, mut mark) = serial_client(&mut h, Mode::ReadWrite);
    let mut exchange = |h: &mut Harness, request: &[u8], answer: &[u8]| {
        h.type_wire(c, &[&sb(request)]);
        assert_eq!(wire_since(h, c, mark), sb(answer), "request {request:?}");
        mark = h.client(c).wire.len();
    };
    // Requests (value 0) answer the defaults: 9600 8N1, no flow control, DTR and RTS on.
    exchange(&mut h, &[1, 0, 0, 0, 0], &[101, 0, 0, 0x25, 0x80]);
    exchange(&mut h, &[2, 0], &[102, 8]);
    exchange(&mut h, &[3, 0], &[103, 1]);
    exchange(&mut h, &[4, 0], &[104, 1]);
    exchange(&mut h, &[5, 0], &[105, 1]);
    exchange(&mut h, &[5, 4], &[105, 6]);
    exchange(&mut h, &[5, 7], &[105, 8]);
    exchange(&mut h, &[5, 10], &[105, 11]);
    // Settings are applied and echoed (115200 has a 0x00 and no 0xFF; 0x01C2FF00 has one).
    exchange(&mut h, &[1, 0, 1, 0xc2, 0], &[101, 0, 1, 0xc2, 0]);
    exchange(
        &mut h,
        &[1, 0x01, 0xc2, 0xff, 0],
        &[101, 0x01, 0xc2, 0xff, 0],
    );
    exchange(&mut h, &[2, 7], &[102, 7]);
    exchange(&mut h, &[3, 3], &[103, 3]);
    exchange(&mut h, &[4, 2], &[104, 2]);
    exchange(&mut h, &[5, 3], &[105, 3]);
    exchange(&mut h, &[5, 16], &[105, 16]);
    exchange(&mut h, &[5, 9], &[105, 9]);
    exchange(&mut h, &[5, 12], &[105, 12]);
    // Out of range: answered with what stays in effect.
    exchange(&mut h, &[2, 9], &[102, 7]);
    exchange(&mut h, &[3, 77], &[103, 3]);
    // Masks are echoed; SIGNATURE asked is answered.
    exchange(&mut h, &[10, 0x10], &[110, 0x10]);
    exchange(&mut h, &[11, 0xf0], &[111, 0xf0]);
    let mut signature = vec![100];
    signature.extend_from_slice(b"vspc-concentrator");
    exchange(&mut h, &[0], &signature);
    // The settings belong to the port: a second client asking sees them.
    let (other, other_mark) = serial_client(&mut h, Mode::ReadOnly);
    h.type_wire(other, &[&sb(&[1, 0, 0, 0, 0])]);
    assert_eq!(
        wire_since(&h, other, other_mark),
        sb(&[101, 0x01, 0xc2, 0xff, 0])
    );
    // None of it reached either client's data, nor the VM.
    assert_eq!(h.take_data(c), b"");
    assert_eq!(h.take_data(other), b"");
    assert_eq!(h.vms[0].received, b"");
}

#[test]
fn a_read_only_client_may_ask_but_not_set() {
    let mut h = harness();
    h.add_numbered_vm(1);
    let (ro, mut mark) = serial_client(&mut h, Mode::ReadOnly);
    for (request, answer) in [
        (vec![1, 0, 0, 0x4b, 0], vec![101, 0, 0, 0x25, 0x80]),
        (vec![2, 5], vec![102, 8]),
        (vec![5, 5], vec![105, 6]),
        (vec![5, 9], vec![105, 8]),
    ] {
        h.type_wire(ro, &[&sb(&request)]);
        assert_eq!(wire_since(&h, ro, mark), sb(&answer));
        mark = h.client(ro).wire.len();
    }
    // Its BREAK-ON was refused: the VM got no break.
    assert_eq!(h.vms[0].inputs, []);
}

#[test]
fn a_client_still_choosing_is_acknowledged_and_nothing_is_applied() {
    let mut h = harness();
    let i = h.add_numbered_vm(1);
    let c = h.connect_client(Transport::Telnet, None);
    h.offer_com_port(c);
    // No VM yet: no lines to report.
    assert!(h.client(c).wire.ends_with(&sb(&[107, 0])));
    let mark = h.client(c).wire.len();
    h.type_wire(c, &[&sb(&[1, 0, 1, 0xc2, 0]), &sb(&[5, 5])]);
    assert_eq!(
        wire_since(&h, c, mark),
        [sb(&[101, 0, 1, 0xc2, 0]), sb(&[105, 5])].concat()
    );
    h.take_data(c);
    h.type_data(c, b"vm-00001\r\n");
    assert_eq!(h.client(c).attached, Some((VmId(1), Mode::ReadWrite)));
    // Attached, its lines come up (after the banner), and it reads the port's own settings.
    assert!(h.client(c).wire.ends_with(&sb(&[107, CONNECTED | 0x0b])));
    let mark = h.client(c).wire.len();
    h.type_wire(c, &[&sb(&[1, 0, 0, 0, 0])]);
    assert_eq!(wire_since(&h, c, mark), sb(&[101, 0, 0, 0x25, 0x80]));
    assert_eq!(h.vms[i].inputs, []);
}

#[test]
fn break_on_is_a_serial_break_in_order_with_the_data() {
    let mut h = harness();
    let i = h.add_numbered_vm(1);
    let (c, mark) = serial_client(&mut h, Mode::ReadWrite);
    let mut wire = b"before".to_vec();
    wire.extend(sb(&[5, 5]));
    wire.extend_from_slice(b"during");
    wire.extend(sb(&[5, 5]));
    wire.extend(sb(&[5, 6]));
    wire.extend_from_slice(b"after");
    h.type_wire(c, &[&wire]);
    assert_eq!(
        h.vms[i].inputs,
        [
            VmInput::Data(b"before".to_vec()),
            VmInput::Break,
            VmInput::Data(b"duringafter".to_vec()),
        ]
    );
    let mut answers = sb(&[105, 5]);
    answers.extend(sb(&[105, 5]));
    answers.extend(sb(&[105, 6]));
    assert_eq!(wire_since(&h, c, mark), answers);
}

#[test]
fn malformed_requests_are_ignored_and_leak_nothing() {
    let mut h = harness();
    let i = h.add_numbered_vm(1);
    let (c, mark) = serial_client(&mut h, Mode::ReadWrite);
    let bad: [&[u8]; 9] = [
        &[],
        &[1, 0, 0],
        &[1, 0, 0, 0, 0, 0],
        &[2],
        &[5, 1, 2],
        &[8, 1],
        &[12, 9],
        &[13, 1],
        &[99],
    ];
    let mut wire = Vec::new();
    for payload in bad {
        wire.extend(sb(payload));
    }
    // Every command with a value one byte too long, and the fixed-length ones one short
    // (an empty NOTIFY-* is a poll, not an error: it is answered).
    let mut generated = 0;
    for code in 1..=12u8 {
        let expected = match code {
            1 => 4,
            8 | 9 => 0,
            _ => 1,
        };
        wire.extend(sb(&[vec![code], vec![0x11; expected + 1]].concat()));
        generated += 1;
        if expected > 0 && !matches!(code, 6 | 7) {
            wire.extend(sb(&[vec![code], vec![0x11; expected - 1]].concat()));
            generated += 1;
        }
    }
    wire.extend_from_slice(b"data");
    h.type_wire(c, &[&wire]);
    assert_eq!(wire_since(&h, c, mark), b"");
    assert_eq!(h.vms[i].received, b"data");
    assert_eq!(
        h.core.counters().com_port_ignored,
        (bad.len() + generated) as u64
    );
}

#[test]
fn purge_and_flow_control_suspend() {
    let mut h = harness();
    let i = h.add_numbered_vm(1);
    let (c, mark) = serial_client(&mut h, Mode::ReadWrite);
    // Suspended, the client's output waits; purging its receive buffer discards it.
    h.type_wire(c, &[&sb(&[8])]);
    h.vm_send(i, b"discarded");
    assert_eq!(h.take_data(c), b"");
    h.type_wire(c, &[&sb(&[12, 1])]);
    h.type_wire(c, &[&sb(&[9])]);
    h.vm_send(i, b"kept");
    assert_eq!(h.take_data(c), b"kept");
    assert_eq!(
        wire_since(&h, c, mark),
        [sb(&[112, 1]), b"kept".to_vec()].concat()
    );
}

#[test]
fn modem_state_follows_the_vm_connection() {
    let mut h = harness();
    let i = h.add_numbered_vm(1);
    let (c, mark) = serial_client(&mut h, Mode::ReadWrite);
    h.set_connected(i, false);
    // Carrier, DSR and CTS drop, with their delta bits.
    assert!(h.client(c).wire[mark..].starts_with(&sb(&[107, 0x08 | 0x02 | 0x01])));
    let mark = h.client(c).wire.len();
    h.set_connected(i, true);
    assert!(
        h.client(c).wire[mark..].starts_with(&sb(&[107, CONNECTED | 0x0b])),
        "{:?}",
        &h.client(c).wire[mark..]
    );
    // A mask hides what the client did not ask for.
    let mark = h.client(c).wire.len();
    h.type_wire(c, &[&sb(&[11, 0x80])]);
    assert_eq!(wire_since(&h, c, mark), sb(&[111, 0x80]));
    let mark = h.client(c).wire.len();
    h.type_wire(c, &[&sb(&[7])]);
    assert_eq!(wire_since(&h, c, mark), sb(&[107, 0x80]));
}

#[test]
fn what_the_vm_reports_is_the_truth() {
    let mut h = harness();
    let i = h.add_numbered_vm(1);
    // ESXi offers WILL COM-PORT after identification, and the concentrator accepts it.
    h.advance(Duration::from_millis(100));
    // The guest programs its UART to 115200 and lowers RTS: ESXi reports it as a client.
    h.emu(i)
        .inject(Fault::Garbage(sb(&[1, 0, 1, 0xc2, 0]).into()))
        .unwrap();
    h.emu(i)
        .inject(Fault::Garbage(sb(&[5, 12]).into()))
        .unwrap();
    h.run();
    let (c, mut mark) = {
        let c = h.connect_client(Transport::Telnet, Some((VmId(1), Mode::ReadWrite)));
        let before = h.client(c).wire.len();
        h.offer_com_port(c);
        let mut expected = vec![0xff, 0xfd, 44];
        expected.extend(sb(&[107, 0x80 | 0x20]));
        assert_eq!(wire_since(&h, c, before), expected);
        (c, h.client(c).wire.len())
    };
    // A read-write client cannot change what the VM reported, only what it did not.
    for (request, answer) in [
        (vec![1, 0, 0, 0x25, 0x80], vec![101, 0, 1, 0xc2, 0]),
        (vec![1, 0, 0, 0, 0], vec![101, 0, 1, 0xc2, 0]),
        (vec![2, 7], vec![102, 7]),
    ] {
        h.type_wire(c, &[&sb(&request)]);
        assert_eq!(wire_since(&h, c, mark), sb(&answer));
        mark = h.client(c).wire.len();
    }
    // The VM raises RTS again: the client's CTS comes up, with its delta.
    h.emu(i)
        .inject(Fault::Garbage(sb(&[5, 11]).into()))
        .unwrap();
    h.run();
    assert_eq!(wire_since(&h, c, mark), sb(&[107, CONNECTED | 0x01]));
}
