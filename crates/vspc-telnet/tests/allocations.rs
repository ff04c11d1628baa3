//! Steady-state decoding and encoding allocate nothing (a target of docs/performance.md: no heap
//! allocation per event). Counted with a global allocator that counts, in a test binary of its own.

use vspc_telnet::{
    encode_command, encode_data, encode_subnegotiation, option, Command, Policy, Telnet,
    TelnetConfig, TelnetEvent,
};

fn chatty_session() -> Vec<u8> {
    let mut wire = Vec::new();
    for i in 0..200u32 {
        encode_data(
            format!("line {i} of console output\r\n").as_bytes(),
            true,
            &mut wire,
        );
        encode_command(Command::Nop, &mut wire);
        let mut begin = vec![0x28];
        begin.extend_from_slice(&(i.wrapping_mul(0x0101_01ff)).to_be_bytes());
        encode_subnegotiation(option::VMWARE_EXT, &begin, &mut wire);
        encode_data(&[0xff, 0x00, 0x11, b'\r'], true, &mut wire);
    }
    wire
}

#[test]
fn decoding_in_steady_state_allocates_nothing() {
    let wire = chatty_session();
    let policy = Policy::new().accept_both(option::BINARY);
    let mut telnet = Telnet::new(TelnetConfig {
        policy,
        ..TelnetConfig::default()
    });
    let mut seen = 0usize;
    let decode_all = |telnet: &mut Telnet, seen: &mut usize| {
        for chunk in wire.chunks(7) {
            let mut rest = chunk;
            while let Some(event) = telnet.next_event(&mut rest) {
                *seen += match event {
                    TelnetEvent::Data(data) => data.len(),
                    TelnetEvent::Subnegotiation { payload, .. } => payload.len(),
                    _ => 1,
                };
            }
        }
    };
    // Warm-up: BINARY negotiated, the subnegotiation buffer grown to its working size.
    telnet.decode(b"\xff\xfb\x00", |_| {});
    telnet.poll_transmit();
    decode_all(&mut telnet, &mut seen);
    let counted = allocation_counter::measure(|| decode_all(&mut telnet, &mut seen));
    assert_eq!(
        counted.count_total, 0,
        "allocations while decoding: {counted:?}"
    );
    assert!(seen > 10_000, "decoded only {seen} units");
}

#[test]
fn encoding_into_a_buffer_with_room_allocates_nothing() {
    let mut out = Vec::with_capacity(64 * 1024);
    let counted = allocation_counter::measure(|| {
        for i in 0..500u32 {
            encode_data(b"console \xff line\r\n", false, &mut out);
            encode_subnegotiation(option::VMWARE_EXT, &i.to_be_bytes(), &mut out);
            encode_command(Command::Nop, &mut out);
        }
    });
    assert_eq!(
        counted.count_total, 0,
        "allocations while encoding: {counted:?}"
    );
    assert!(out.len() > 10_000);
}
