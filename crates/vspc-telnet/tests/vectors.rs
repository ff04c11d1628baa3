//! Exact byte vectors for the decoder and the encoder, ESXi's captured segments among them
//! (from the workspace's test kit, so this file is left out of the package).

mod support;

use support::{decode_chunks, decode_whole, split_at, Owned};
use vspc_telnet::consts::{IAC, SB, SE};
use vspc_telnet::{
    encode_command, encode_data, encode_negotiation, encode_subnegotiation, option, Command,
    DecodeError, Decoder, Verb,
};
use vspc_testkit::{esxi, hex};

fn every_command() -> Vec<(Vec<u8>, Vec<Owned>)> {
    let mut cases = Vec::new();
    for code in 0..=255u8 {
        if let Some(command) = Command::from_code(code) {
            cases.push((vec![IAC, code], vec![Owned::Command(command)]));
        }
    }
    for verb in [Verb::Will, Verb::Wont, Verb::Do, Verb::Dont] {
        for option in [0u8, 1, 3, 37, 44, 232, 255] {
            cases.push((
                vec![IAC, verb.code(), option],
                vec![Owned::Negotiation(verb, option)],
            ));
        }
    }
    cases.push((
        hex("fffae8 51 fff0"),
        vec![Owned::Subnegotiation(232, vec![0x51])],
    ));
    cases.push((hex("fffae8 fff0"), vec![Owned::Subnegotiation(232, vec![])]));
    cases.push((
        hex("fffae8 29 44da87f1 ffff f0 fff0"),
        vec![Owned::Subnegotiation(232, hex("29 44da87f1 ff f0"))],
    ));
    cases.push((hex("ffff"), vec![Owned::Data(vec![0xff])]));
    cases
}

#[test]
fn every_command_decodes_exactly_when_split_at_every_byte_position() {
    for (wire, expected) in every_command() {
        // Surround with data so that splits inside the command also split data runs.
        let mut input = b"ab".to_vec();
        input.extend_from_slice(&wire);
        input.extend_from_slice(b"cd");
        let mut framed = vec![Owned::Data(b"ab".to_vec())];
        framed.extend(expected.iter().cloned());
        framed.push(Owned::Data(b"cd".to_vec()));
        if let [Owned::Data(only)] = &expected[..] {
            framed = vec![Owned::Data([b"ab", &only[..], b"cd"].concat())];
        }
        for binary in [false, true] {
            assert_eq!(decode_whole(&input, binary), framed, "whole {input:02x?}");
            for cut in 0..=input.len() {
                let mut decoder = Decoder::new();
                decoder.set_binary(binary);
                let events = decode_chunks(&mut decoder, split_at(&input, &[cut]));
                assert_eq!(events, framed, "{input:02x?} split at {cut}");
            }
            let mut decoder = Decoder::new();
            decoder.set_binary(binary);
            let one_byte_chunks: Vec<&[u8]> = input.chunks(1).collect();
            assert_eq!(decode_chunks(&mut decoder, one_byte_chunks), framed);
        }
    }
}

#[test]
fn esxi_block_a_vm_side_decodes_to_exactly_the_captured_negotiation() {
    // Every vm>px segment of block A, in capture order.
    let wire = esxi::segments(esxi::BLOCK_A, true);
    let mut decoder = Decoder::new();
    decoder.set_binary(true);
    let events = decode_chunks(&mut decoder, wire.iter().map(Vec::as_slice));
    let will = |option| Owned::Negotiation(Verb::Will, option);
    let r#do = |option| Owned::Negotiation(Verb::Do, option);
    assert_eq!(
        events,
        vec![
            will(option::AUTHENTICATION),
            r#do(option::BINARY),
            r#do(option::SGA),
            r#do(option::ECHO),
            will(option::BINARY),
            will(option::SGA),
            will(option::VMWARE_EXT),
            Owned::Subnegotiation(232, hex("00 0001020328292b2c2d2e304647495051545556575253")),
            Owned::Subnegotiation(232, b"\x46SvSPC.py".to_vec()),
            Owned::Subnegotiation(
                232,
                [
                    &b"\x50"[..],
                    b"01 23 45 67 89 ab cd ef-fe dc ba 98 00 00 00 00"
                ]
                .concat()
            ),
            Owned::Subnegotiation(232, b"\x52vm-00000".to_vec()),
            will(option::COM_PORT),
            Owned::Data(vec![0x20]),
        ]
    );
    // The same stream split at every byte gives the same events.
    let whole = wire.concat();
    for cut in 0..=whole.len() {
        let mut decoder = Decoder::new();
        decoder.set_binary(true);
        assert_eq!(
            decode_chunks(&mut decoder, split_at(&whole, &[cut])),
            events
        );
    }
}

#[test]
fn esxi_block_a_proxy_side_decodes_to_the_captured_offers() {
    let wire = hex(
        "fffb00 fffb03 fffb01 fffd00 fffd03 fffde8 fffe25
         fffae8010001020328292b2c2d2e3046474950515253fff0 fffae851fff0fffae853fff0 fffae847fff0 fffe2c",
    );
    let events = decode_whole(&wire, false);
    assert_eq!(events.len(), 12);
    assert_eq!(events[0], Owned::Negotiation(Verb::Will, option::BINARY));
    assert_eq!(
        events[6],
        Owned::Negotiation(Verb::Dont, option::AUTHENTICATION)
    );
    assert_eq!(events[8], Owned::Subnegotiation(232, vec![0x51]));
    assert_eq!(events[9], Owned::Subnegotiation(232, vec![0x53]));
    assert_eq!(events[11], Owned::Negotiation(Verb::Dont, option::COM_PORT));
}

#[test]
fn nul_and_dc1_are_data_in_both_modes() {
    for binary in [false, true] {
        assert_eq!(
            decode_whole(b"a\0b\x11c\0", binary),
            vec![Owned::Data(b"a\0b\x11c\0".to_vec())]
        );
    }
}

#[test]
fn nvt_mode_drops_the_nul_after_cr_and_keeps_cr_lf() {
    assert_eq!(
        decode_whole(b"a\r\0b\r\nc\r\r\0d\rx", false),
        vec![Owned::Data(b"a\rb\r\nc\r\rd\rx".to_vec())]
    );
    // Split between CR and NUL.
    let mut decoder = Decoder::new();
    let events = decode_chunks(&mut decoder, [&b"a\r"[..], b"\0b"]);
    assert_eq!(events, vec![Owned::Data(b"a\rb".to_vec())]);
}

#[test]
fn binary_mode_keeps_cr_nul() {
    assert_eq!(
        decode_whole(b"a\r\0b", true),
        vec![Owned::Data(b"a\r\0b".to_vec())]
    );
}

#[test]
fn cr_before_a_command_is_kept_and_the_command_decoded() {
    assert_eq!(
        decode_whole(b"a\r\xff\xf1\0", false),
        vec![
            Owned::Data(b"a\r".to_vec()),
            Owned::Command(Command::Nop),
            Owned::Data(b"\0".to_vec())
        ]
    );
}

#[test]
fn data_events_borrow_the_input_without_copying() {
    let input = b"hello\xff\xffworld".to_vec();
    let mut decoder = Decoder::new();
    let mut rest: &[u8] = &input;
    let mut spans = Vec::new();
    while let Some(vspc_telnet::Event::Data(data)) = decoder.next_event(&mut rest) {
        spans.push((data.as_ptr() as usize - input.as_ptr() as usize, data.len()));
    }
    // "hello" and the first 0xFF in one slice, then "world": both point into the input.
    assert_eq!(spans, vec![(0, 6), (7, 5)]);
}

#[test]
fn oversized_subnegotiation_is_an_error_and_nothing_leaks_into_data() {
    let mut payload = vec![0x52];
    payload.extend(std::iter::repeat_n(b'x', 100));
    let mut wire = b"before".to_vec();
    encode_subnegotiation(232, &payload, &mut wire);
    wire.extend_from_slice(b"after");
    let expected = vec![
        Owned::Data(b"before".to_vec()),
        Owned::Error(DecodeError::SubnegotiationTooLong {
            option: 232,
            limit: 64,
        }),
        Owned::Data(b"after".to_vec()),
    ];
    for cut in 0..=wire.len() {
        let mut decoder = Decoder::with_max_subnegotiation(64);
        assert_eq!(
            decode_chunks(&mut decoder, split_at(&wire, &[cut])),
            expected
        );
    }
    // Exactly at the limit is fine.
    let mut wire = Vec::new();
    encode_subnegotiation(232, &payload[..64], &mut wire);
    let mut decoder = Decoder::with_max_subnegotiation(64);
    assert_eq!(
        decode_chunks(&mut decoder, [&wire[..]]),
        vec![Owned::Subnegotiation(232, payload[..64].to_vec())]
    );
}

#[test]
fn oversized_subnegotiation_counts_escaped_bytes_once() {
    let payload = [0xffu8; 64];
    let mut wire = Vec::new();
    encode_subnegotiation(44, &payload, &mut wire);
    for cut in 0..=wire.len() {
        let mut decoder = Decoder::with_max_subnegotiation(64);
        assert_eq!(
            decode_chunks(&mut decoder, split_at(&wire, &[cut])),
            vec![Owned::Subnegotiation(44, payload.to_vec())]
        );
    }
}

#[test]
fn iac_with_an_unexpected_byte_inside_sb_ends_it_and_is_decoded_as_a_command() {
    // IAC SB 232 'P' 'x' IAC WILL 44 ... : the WILL is a real negotiation.
    let wire = [IAC, SB, 232, 0x50, b'x', IAC, 251, 44, b'z'];
    let expected = vec![
        Owned::Error(DecodeError::SubnegotiationInterrupted {
            option: 232,
            byte: 251,
        }),
        Owned::Negotiation(Verb::Will, 44),
        Owned::Data(b"z".to_vec()),
    ];
    for cut in 0..=wire.len() {
        let mut decoder = Decoder::new();
        assert_eq!(
            decode_chunks(&mut decoder, split_at(&wire, &[cut])),
            expected
        );
    }
}

#[test]
fn stray_se_outside_sb_is_an_unknown_command() {
    let events = decode_whole(&[b'a', IAC, SE, b'b'], true);
    assert_eq!(events[1], Owned::Command(Command::from_code(SE).unwrap()));
    assert_eq!(events.len(), 3);
}

#[test]
fn encoder_vectors() {
    let mut out = Vec::new();
    encode_data(b"\xff\r\n\r\rx\r", false, &mut out);
    assert_eq!(out, b"\xff\xff\r\n\r\0\r\0x\r\0");
    out.clear();
    encode_data(b"\xff\r\0\r", true, &mut out);
    assert_eq!(out, b"\xff\xff\r\0\r");
    out.clear();
    encode_command(Command::AreYouThere, &mut out);
    encode_negotiation(Verb::Dont, option::AUTHENTICATION, &mut out);
    assert_eq!(out, hex("fff6 fffe25"));
    out.clear();
    // GOAHEAD with a secret holding IAC and SE bytes, as block B's shape.
    encode_subnegotiation(232, &hex("29 44da87f1 3cff4df0"), &mut out);
    assert_eq!(out, hex("fffae8 29 44da87f1 3cffff4df0 fff0"));
    // A BytesMut works as well as a Vec.
    let mut buf = bytes::BytesMut::new();
    encode_subnegotiation(232, &[0x51], &mut buf);
    assert_eq!(&buf[..], hex("fffae851fff0"));
}
