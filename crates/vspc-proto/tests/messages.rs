//! Message layer: the vectors of ESXi's captures (docs/esxi-wire.md) and proptest round-trips.
#![allow(clippy::unwrap_used, clippy::panic)]

use bytes::Bytes;
use proptest::prelude::*;
use vspc_proto::{Command, Direction, Message, MessageError, Uuid, VmName, VmUuid, VmotionKey};
use vspc_testkit::hex;

/// Strips `IAC SB 232` / `IAC SE` and unescapes (test helper for single messages).
fn unwire(wire: &[u8]) -> Vec<u8> {
    assert_eq!(&wire[..3], &[0xff, 0xfa, 0xe8]);
    assert_eq!(&wire[wire.len() - 2..], &[0xff, 0xf0]);
    let mut out = Vec::new();
    let mut it = wire[3..wire.len() - 2].iter();
    while let Some(&b) = it.next() {
        if b == 0xff {
            assert_eq!(it.next(), Some(&0xff));
        }
        out.push(b);
    }
    out
}

#[test]
fn esxi_wire_vectors_parse_and_reencode() {
    let cases: Vec<(&str, Message)> = vec![
        (
            "fffae8000001020328292b2c2d2e304647495051545556575253fff0",
            Message::KnownSuboptions1(
                [0u8, 1, 2, 3, 40, 41, 43, 44, 45, 46, 48, 70, 71, 73, 80, 81, 84, 85, 86, 87, 82, 83]
                    .iter()
                    .map(|&c| Command::from(c))
                    .collect(),
            ),
        ),
        (
            "fffae8010001020328292b2c2d2e3046474950515253fff0",
            Message::KnownSuboptions2(
                [0u8, 1, 2, 3, 40, 41, 43, 44, 45, 46, 48, 70, 71, 73, 80, 81, 82, 83]
                    .iter()
                    .map(|&c| Command::from(c))
                    .collect(),
            ),
        ),
        (
            "fffae84653765350432e7079fff0",
            Message::DoProxy {
                direction: Direction::Server,
                service_uri: Bytes::from_static(b"vSPC.py"),
            },
        ),
        ("fffae851fff0", Message::GetVmVcUuid),
        ("fffae853fff0", Message::GetVmName),
        ("fffae847fff0", Message::WillProxy),
        (
            "fffae85030312032332034352036372038392061622063642065662d6665206463206261203938203030203030203030203030fff0",
            Message::VmVcUuid(VmUuid::new(Bytes::from_static(
                b"01 23 45 67 89 ab cd ef-fe dc ba 98 00 00 00 00",
            ))),
        ),
        (
            "fffae852766d2d3030303030fff0",
            Message::VmName(VmName::from("vm-00000")),
        ),
        (
            "fffae82844da87f1fff0",
            Message::VmotionBegin { sequence: Bytes::from(hex("44da87f1")) },
        ),
        (
            "fffae82944da87f13ce64dabfff0",
            Message::VmotionGoahead(VmotionKey::new(&hex("44da87f1"), &hex("3ce64dab"))),
        ),
        (
            "fffae82c44da87f13ce64dabfff0",
            Message::VmotionPeer(VmotionKey::new(&hex("44da87f1"), &hex("3ce64dab"))),
        ),
        (
            "fffae82d44da87f1fff0",
            Message::VmotionPeerOk { sequence: Bytes::from(hex("44da87f1")) },
        ),
        (
            "fffae82e44da87f1fff0",
            Message::VmotionComplete { sequence: Bytes::from(hex("44da87f1")) },
        ),
        (
            "fffae82bcd526755fff0",
            Message::VmotionNotNow { sequence: Bytes::from(hex("cd526755")) },
        ),
        ("fffae830fff0", Message::VmotionAbort),
    ];
    for (wire, expected) in cases {
        let wire = hex(wire);
        let parsed = Message::parse(&unwire(&wire)).unwrap();
        assert_eq!(parsed, expected, "{wire:02x?}");
        assert_eq!(expected.to_wire(), wire);
    }
}

#[test]
fn vc_uuid_forms_from_the_capture() {
    let payload = unwire(&hex(
        "fffae85030312032332034352036372038392061622063642065662d6665206463206261203938203030203030203030203030fff0",
    ));
    let Message::VmVcUuid(id) = Message::parse(&payload).unwrap() else {
        panic!()
    };
    assert_eq!(id.raw(), b"01 23 45 67 89 ab cd ef-fe dc ba 98 00 00 00 00");
    assert_eq!(
        id.canonical().unwrap(),
        "01234567-89ab-cdef-fedc-ba9800000000"
    );
    assert_eq!(id.compact().unwrap(), "0123456789abcdeffedcba9800000000");
    assert_eq!(
        id.uuid().unwrap().to_vmx(),
        "01 23 45 67 89 ab cd ef-fe dc ba 98 00 00 00 00"
    );
}

#[test]
fn vm_name_is_lossy_never_an_error() {
    let Message::VmName(name) = Message::parse(b"\x52caf\xc3\xa9 \xff\xfe").unwrap() else {
        panic!()
    };
    assert_eq!(name.as_str(), "caf\u{e9} \u{fffd}\u{fffd}");
    assert_eq!(name.raw(), b"caf\xc3\xa9 \xff\xfe");
    assert_eq!(Message::VmName(name).to_vec(), b"\x52caf\xc3\xa9 \xff\xfe");
}

#[test]
fn secret_with_iac_and_se_is_escaped() {
    let m = Message::VmotionGoahead(VmotionKey::new(
        &[0xff, 0xf0, 0x00, 0x01],
        &[0xf0, 0xff, 0xff, 0x00],
    ));
    assert_eq!(
        m.to_wire(),
        hex("fffae829 ffff f0 00 01 f0 ffff ffff 00 fff0")
    );
    assert_eq!(Message::parse(&unwire(&m.to_wire())).unwrap(), m);
}

#[test]
fn every_command_with_empty_payload_either_parses_or_is_typed_error() {
    for code in 0..=255u8 {
        match Message::parse(&[code]) {
            Ok(m) => assert_eq!(m.command(), Command::from(code)),
            Err(e) => assert_eq!(e.command(), Some(Command::from(code))),
        }
    }
    assert_eq!(Message::parse(&[]), Err(MessageError::Empty));
}

fn arb_bytes(max: usize) -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

fn arb_nonempty(max: usize) -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 1..max).prop_map(Bytes::from)
}

fn arb_list() -> impl Strategy<Value = Vec<Command>> {
    proptest::collection::vec(any::<u8>().prop_map(Command::from), 0..40)
}

fn arb_uuid() -> impl Strategy<Value = VmUuid> {
    prop_oneof![
        any::<[u8; 16]>().prop_map(|b| VmUuid::from_uuid(Uuid::from_bytes(b))),
        arb_bytes(60).prop_map(VmUuid::new),
    ]
}

fn arb_key() -> impl Strategy<Value = VmotionKey> {
    (arb_nonempty(9), arb_bytes(17)).prop_map(|(s, k)| VmotionKey::new(&s, &k))
}

fn arb_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        arb_list().prop_map(Message::KnownSuboptions1),
        arb_list().prop_map(Message::KnownSuboptions2),
        any::<u8>().prop_map(|c| Message::UnknownSuboptionRcvd1(Command::from(c))),
        any::<u8>().prop_map(|c| Message::UnknownSuboptionRcvd2(Command::from(c))),
        arb_nonempty(9).prop_map(|sequence| Message::VmotionBegin { sequence }),
        arb_key().prop_map(Message::VmotionGoahead),
        arb_nonempty(17).prop_map(|sequence| Message::VmotionNotNow { sequence }),
        arb_key().prop_map(Message::VmotionPeer),
        arb_nonempty(17).prop_map(|sequence| Message::VmotionPeerOk { sequence }),
        arb_nonempty(9).prop_map(|sequence| Message::VmotionComplete { sequence }),
        Just(Message::VmotionAbort),
        (any::<bool>(), arb_bytes(80)).prop_map(|(s, service_uri)| Message::DoProxy {
            direction: if s {
                Direction::Server
            } else {
                Direction::Client
            },
            service_uri,
        }),
        Just(Message::WillProxy),
        Just(Message::WontProxy),
        arb_uuid().prop_map(Message::VmVcUuid),
        Just(Message::GetVmVcUuid),
        arb_bytes(80).prop_map(|b| Message::VmName(VmName::new(b))),
        Just(Message::GetVmName),
        arb_uuid().prop_map(Message::VmBiosUuid),
        Just(Message::GetVmBiosUuid),
        arb_uuid().prop_map(Message::VmLocationUuid),
        Just(Message::GetVmLocationUuid),
        (
            any::<u8>().prop_filter("unassigned", |c| !Command::from(*c).is_known()),
            arb_bytes(40)
        )
            .prop_map(|(command, payload)| Message::Unknown { command, payload }),
    ]
}

proptest! {
    #[test]
    fn round_trip(m in arb_message()) {
        let bytes = m.to_vec();
        prop_assert_eq!(bytes.len(), m.encoded_len());
        prop_assert_eq!(Message::parse(&bytes), Ok(m.clone()));
        prop_assert_eq!(unwire(&m.to_wire()), bytes);
    }

    #[test]
    fn parse_arbitrary_never_panics_and_reencodes(payload in proptest::collection::vec(any::<u8>(), 0..64)) {
        if let Ok(m) = Message::parse(&payload) {
            prop_assert_eq!(m.command(), Command::from(payload[0]));
            let again = m.to_vec();
            prop_assert_eq!(Message::parse(&again), Ok(m));
            // Only commands without payload are lenient about trailing bytes.
            if again != payload {
                prop_assert_eq!(again.len(), 1);
            }
        }
    }

    #[test]
    fn uuid_text_forms_round_trip(b in any::<[u8; 16]>()) {
        let u = Uuid::from_bytes(b);
        prop_assert_eq!(u.to_vmx().parse::<Uuid>(), Ok(u));
        prop_assert_eq!(u.to_canonical().parse::<Uuid>(), Ok(u));
        prop_assert_eq!(u.to_compact().parse::<Uuid>(), Ok(u));
        prop_assert_eq!(u.to_canonical().to_uppercase().parse::<Uuid>(), Ok(u));
    }
}
