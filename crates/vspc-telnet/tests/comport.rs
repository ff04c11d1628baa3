//! RFC 2217 messages: exact payloads for every sub-command, errors, round-trips.

use proptest::prelude::*;
use vspc_telnet::comport::{
    ComPortCommand as C, ComPortError, ComPortMessage, Control, LineState, ModemState, Origin,
    Parity, Purge, StopSize,
};

fn message(origin: Origin, command: C) -> ComPortMessage {
    ComPortMessage { origin, command }
}

#[test]
fn every_sub_command_has_its_rfc_2217_payload() {
    let cases: Vec<(C, Vec<u8>)> = vec![
        (
            C::Signature(b"ESXi".to_vec()),
            vec![0, b'E', b'S', b'X', b'i'],
        ),
        (C::SetBaudRate(115_200), vec![1, 0x00, 0x01, 0xc2, 0x00]),
        (C::SetDataSize(8), vec![2, 8]),
        (C::SetParity(Parity::Even), vec![3, 3]),
        (C::SetStopSize(StopSize::OneAndHalf), vec![4, 3]),
        (C::SetControl(Control::HardwareFlowControl), vec![5, 3]),
        (C::SetControl(Control::DsrFlowControl), vec![5, 19]),
        (
            C::NotifyLineState(LineState(LineState::BREAK_DETECT | LineState::DATA_READY)),
            vec![6, 17],
        ),
        (
            C::NotifyModemState(ModemState(ModemState::CARRIER_DETECT)),
            vec![7, 128],
        ),
        (C::FlowControlSuspend, vec![8]),
        (C::FlowControlResume, vec![9]),
        (C::SetLineStateMask(LineState(0xff)), vec![10, 0xff]),
        (C::SetModemStateMask(ModemState(0x30)), vec![11, 0x30]),
        (C::PurgeData(Purge::Both), vec![12, 3]),
    ];
    for (command, client_payload) in cases {
        for (origin, offset) in [(Origin::Client, 0), (Origin::Server, 100)] {
            let mut payload = client_payload.clone();
            payload[0] += offset;
            let expected = message(origin, command.clone());
            assert_eq!(ComPortMessage::parse(&payload), Ok(expected.clone()));
            let mut encoded = Vec::new();
            expected.encode(&mut encoded);
            assert_eq!(encoded, payload);
        }
    }
}

#[test]
fn malformed_payloads_are_typed_errors() {
    assert_eq!(ComPortMessage::parse(&[]), Err(ComPortError::Empty));
    assert_eq!(
        ComPortMessage::parse(&[13]),
        Err(ComPortError::UnknownCommand(13))
    );
    assert_eq!(
        ComPortMessage::parse(&[99, 1]),
        Err(ComPortError::UnknownCommand(99))
    );
    assert_eq!(
        ComPortMessage::parse(&[101, 0, 0]),
        Err(ComPortError::BadLength {
            code: 101,
            len: 2,
            expected: 4
        })
    );
    assert_eq!(
        ComPortMessage::parse(&[2]),
        Err(ComPortError::BadLength {
            code: 2,
            len: 0,
            expected: 1
        })
    );
    assert_eq!(
        ComPortMessage::parse(&[8, 0]),
        Err(ComPortError::BadLength {
            code: 8,
            len: 1,
            expected: 0
        })
    );
}

#[test]
fn undefined_values_are_kept() {
    assert_eq!(
        ComPortMessage::parse(&[3, 9]),
        Ok(message(Origin::Client, C::SetParity(Parity::Other(9))))
    );
    let acknowledgement = message(Origin::Client, C::SetBaudRate(9600)).acknowledgement();
    assert_eq!(
        acknowledgement,
        Some(message(Origin::Server, C::SetBaudRate(9600)))
    );
    assert_eq!(
        message(Origin::Server, C::FlowControlResume).acknowledgement(),
        None
    );
}

proptest! {
    #[test]
    fn parse_never_panics_and_what_parses_encodes_back(payload in prop::collection::vec(any::<u8>(), 0..8)) {
        if let Ok(message) = ComPortMessage::parse(&payload) {
            let mut encoded = Vec::new();
            message.encode(&mut encoded);
            prop_assert_eq!(encoded, payload);
        }
    }
}
