//! The emulator against vspc-proto's Endpoint (its ProxySessions and Coordinator), in
//! memory, on a simulated clock: handshake, identification, exact data both ways, vMotion and its failure paths,
//! the device life cycle and faults.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use vspc_emulator::lab::{BeginAnswer, Lab, LabConfig, Violation};
use vspc_emulator::*;
use vspc_proto::{
    BeginOutcome, ClaimOutcome, CloseReason, Command, Direction, EndpointEvent, ProtocolError,
    ProxyConfig, ProxyRequest, RejectReason,
};

const MS: Duration = Duration::from_millis(1);

#[allow(clippy::disallowed_methods)] // the tests are their own driver: any start will do
fn t0() -> Instant {
    Instant::now()
}

fn vm_config(output_limit: Option<u64>) -> EmulatorConfig {
    let mut config = EmulatorConfig::new(VmIdentity::numbered(42));
    config.output = Some(OutputConfig {
        pattern: Pattern::Noise { seed: 42 },
        rate: Rate::new(16, Duration::from_millis(10)),
        limit: output_limit,
    });
    config
}

fn lab(config: EmulatorConfig, lab: LabConfig) -> Lab {
    let mut lab = Lab::new(t0(), config, lab);
    let now = lab.now();
    lab.vm_mut().power_on(now);
    lab.run();
    lab
}

fn vm_events(lab: &Lab) -> Vec<EmulatorEvent> {
    lab.vm_events().to_vec()
}

fn endpoint_events_of(lab: &Lab, conn: ConnId) -> Vec<EndpointEvent<ConnId>> {
    lab.endpoint_events()
        .iter()
        .filter(|(c, _)| *c == conn)
        .map(|(_, e)| e.clone())
        .collect()
}

/// The vMotion events the endpoint reported (answers, outcomes, closes), in order.
fn vmotion_events(lab: &Lab) -> Vec<EndpointEvent<ConnId>> {
    lab.endpoint_events()
        .iter()
        .map(|(_, e)| e.clone())
        .filter(|e| {
            matches!(
                e,
                EndpointEvent::BeginAnswered { .. }
                    | EndpointEvent::PeerAnswered { .. }
                    | EndpointEvent::Moved { .. }
                    | EndpointEvent::CompleteRefused { .. }
                    | EndpointEvent::VmotionAborted { .. }
                    | EndpointEvent::VmotionExpired { .. }
                    | EndpointEvent::SourceClosed { .. }
                    | EndpointEvent::Closed { .. }
            )
        })
        .collect()
}

/// Sends client data in pieces while time passes, then lets everything settle.
fn traffic(lab: &mut Lab, steps: usize, client_piece: usize) {
    for _ in 0..steps {
        lab.client_send(client_piece);
        lab.advance(7 * MS);
    }
}

fn settle(lab: &mut Lab) {
    lab.advance(Duration::from_secs(1));
    assert_eq!(lab.check(), Ok(()));
}

#[test]
fn handshake_identifies_the_vm_with_every_uuid() {
    let mut config = vm_config(None);
    config.port.direction = Direction::Client;
    config.port.service_uri = Bytes::from_static(b"tcp://10.0.0.5:2377");
    let lab = lab(config, LabConfig::default());
    let conn = lab.vm().current_conn().unwrap();
    let session = lab.session(conn).unwrap();
    let id = VmIdentity::numbered(42);
    let identity = session.identity();
    assert_eq!(identity.vc_uuid.as_ref().unwrap().uuid(), Some(id.vc_uuid));
    assert_eq!(identity.name.as_ref().unwrap().as_str(), "vm-00042");
    assert_eq!(identity.bios_uuid.as_ref().unwrap().uuid(), id.bios_uuid);
    assert_eq!(
        identity.location_uuid.as_ref().unwrap().uuid(),
        id.location_uuid
    );
    assert_eq!(
        session.proxy_request(),
        Some(&ProxyRequest {
            direction: Direction::Client,
            service_uri: Bytes::from_static(b"tcp://10.0.0.5:2377"),
            accepted: true
        })
    );
    assert_eq!(
        vm_events(&lab),
        vec![EmulatorEvent::ProxyAnswered {
            conn,
            accepted: true
        }]
    );
    assert_eq!(lab.current(), Some(conn));
}

#[test]
fn data_both_ways_is_exact_in_any_chunking() {
    for read_chunk in [1, 2, 7, usize::MAX] {
        let config = LabConfig {
            read_chunk,
            client_pattern: Pattern::Ramp,
            ..LabConfig::default()
        };
        let mut vm = vm_config(Some(1000));
        vm.output.as_mut().unwrap().pattern = Pattern::Counter;
        let mut lab = lab(vm, config);
        traffic(&mut lab, 20, 50);
        settle(&mut lab);
        assert_eq!(lab.vm().serial_sent(), 1000);
        assert_eq!(lab.client(0).unwrap().total(), 1000);
        assert_eq!(lab.client(1).unwrap().total(), 1000);
        assert_eq!(lab.vm().recorder().total(), 1000);
        assert_eq!(lab.client_accepted(), 1000);
    }
}

#[test]
fn the_checker_catches_a_lost_byte() {
    // A proxy that is not told about the client data it "took" (accounting off by one) must
    // fail the check: the check is not vacuous.
    let mut lab = lab(vm_config(Some(64)), LabConfig::default());
    lab.client_send(10);
    settle(&mut lab);
    let now = lab.now();
    lab.vm_mut().send_serial(b"\x00").unwrap();
    lab.advance(now - now);
    assert!(matches!(
        lab.check(),
        Err(Violation::VmToClient {
            error: VerifyError::Mismatch { offset: 64, .. },
            ..
        })
    ));
}

fn run_vmotion(fin_order: FinOrder) -> (Lab, ConnId, ConnId) {
    let mut lab = lab(vm_config(None), LabConfig::default());
    traffic(&mut lab, 5, 20);
    let source = lab.vm().current_conn().unwrap();
    let now = lab.now();
    let mut plan = VmotionPlan::new(Bytes::from_static(b"\x44\xda\x87\xff"));
    plan.fin_order = fin_order;
    lab.vm_mut().start_vmotion(now, plan).unwrap();
    // Clients type during the vMotion: held by the proxy from GOAHEAD on.
    lab.client_send(33);
    traffic(&mut lab, 5, 20);
    let dest = lab.vm().current_conn().unwrap();
    (lab, source, dest)
}

#[test]
fn vmotion_completes_with_both_fin_orders_and_loses_nothing() {
    for fin_order in [FinOrder::FinBeforeComplete, FinOrder::FinAfterComplete] {
        let (mut lab, source, dest) = run_vmotion(fin_order);
        assert_ne!(source, dest);
        assert!(
            vm_events(&lab).contains(&EmulatorEvent::Vmotion(VmotionOutcome::Completed {
                from: source,
                to: dest
            }))
        );
        assert_eq!(lab.current(), Some(dest));
        assert!(lab.session(source).is_none(), "source session dropped");
        assert_eq!(lab.coordinator().pending_len(), 0);
        // GOAHEAD, PEER-OK, then the move and the source's close in the host's FIN order.
        let events = vmotion_events(&lab);
        let (src, dst) = (
            events[0].conn(),
            match &events[1] {
                EndpointEvent::PeerAnswered { conn, .. } => *conn,
                other => panic!("{other:?}"),
            },
        );
        assert!(matches!(
            events[0],
            EndpointEvent::BeginAnswered {
                outcome: BeginOutcome::GoAhead { .. },
                ..
            }
        ));
        assert!(matches!(
            events[1],
            EndpointEvent::PeerAnswered {
                outcome: ClaimOutcome::Accepted { source },
                ..
            } if source == src
        ));
        let closed = EndpointEvent::Closed {
            conn: src,
            reason: CloseReason::MovedAway { to: dst },
            data: source,
        };
        let moved = |replayed| EndpointEvent::Moved {
            from: src,
            to: dst,
            sequence: Bytes::from_static(b"\x44\xda\x87\xff"),
            replayed,
        };
        let fin_first = fin_order == FinOrder::FinBeforeComplete;
        let rest: Vec<EndpointEvent<ConnId>> = events[2..].to_vec();
        let replayed = rest
            .iter()
            .find_map(|e| match e {
                EndpointEvent::Moved { replayed, .. } => Some(*replayed),
                _ => None,
            })
            .unwrap();
        assert!(replayed >= 33, "typed during the vMotion, held, replayed");
        if fin_first {
            let in_transit = EndpointEvent::SourceClosed {
                conn: src,
                peer: Some(dst),
            };
            assert_eq!(rest, vec![in_transit, moved(replayed), closed]);
        } else {
            assert_eq!(rest, vec![moved(replayed), closed]);
        }
        // The destination never sent DO-PROXY but identified itself.
        assert!(lab.session(dest).unwrap().proxy_request().is_none());
        traffic(&mut lab, 5, 20);
        settle(&mut lab);
        assert_eq!(lab.vm().recorder().total(), 100 + 33 + 100 + 100);
        assert!(lab.vm().serial_sent() > 100);
    }
}

#[test]
fn notnow_keeps_the_vm_on_the_source() {
    let config = LabConfig {
        begin_answer: BeginAnswer::NotNow,
        ..LabConfig::default()
    };
    let mut lab = lab(vm_config(None), config);
    traffic(&mut lab, 3, 10);
    let source = lab.vm().current_conn().unwrap();
    let now = lab.now();
    lab.vm_mut()
        .start_vmotion(now, VmotionPlan::new(&b"\xcd\x52\x67\x55"[..]))
        .unwrap();
    let sent_before = lab.vm().serial_sent();
    traffic(&mut lab, 3, 10);
    assert!(vm_events(&lab).contains(&EmulatorEvent::Vmotion(VmotionOutcome::Refused)));
    assert!(!lab.vm().is_migrating());
    assert_eq!(lab.vm().current_conn(), Some(source));
    assert!(lab.vm().serial_sent() > sent_before, "output resumed");
    settle(&mut lab);
}

#[test]
fn a_rejected_destination_makes_the_source_abort_and_carry_on() {
    let mut lab = lab(vm_config(None), LabConfig::default());
    traffic(&mut lab, 3, 10);
    let source = lab.vm().current_conn().unwrap();
    let now = lab.now();
    let mut plan = VmotionPlan::new(&b"\x61\xed\x26\xa2"[..]);
    plan.wrong_secret = Some(Bytes::from_static(b"\x00\x00\x00\x00\x00\x00\x00\x00"));
    lab.vm_mut().start_vmotion(now, plan).unwrap();
    lab.client_send(25);
    traffic(&mut lab, 3, 10);
    assert!(
        vm_events(&lab).contains(&EmulatorEvent::Vmotion(VmotionOutcome::Aborted {
            reason: AbortReason::PeerRejected
        }))
    );
    assert!(lab.outcomes().iter().any(|o| o.contains("VmotionAborted")));
    assert!(vmotion_events(&lab).iter().any(|e| matches!(
        e,
        EndpointEvent::PeerAnswered {
            outcome: ClaimOutcome::Rejected(RejectReason::UnknownKey),
            ..
        }
    )));
    assert!(endpoint_events_of(&lab, source)
        .iter()
        .any(|e| matches!(e, EndpointEvent::VmotionAborted { released: 25, .. })));
    assert_eq!(lab.coordinator().pending_len(), 0);
    assert_eq!(lab.vm().current_conn(), Some(source));
    assert_eq!(lab.current(), Some(source));
    settle(&mut lab);
    assert_eq!(lab.vm().recorder().total(), 30 + 25 + 30);
}

#[test]
fn a_late_goahead_is_cancelled_silently_and_the_proxy_expires_it() {
    let config = LabConfig {
        begin_answer: BeginAnswer::Delayed(Duration::from_millis(5_500)),
        ..LabConfig::default()
    };
    let mut lab = lab(vm_config(None), config);
    traffic(&mut lab, 3, 10);
    let source = lab.vm().current_conn().unwrap();
    let now = lab.now();
    lab.vm_mut()
        .start_vmotion(now, VmotionPlan::new(&b"\x01\x02\x03\x04"[..]))
        .unwrap();
    lab.advance(Duration::from_millis(4_999));
    assert!(lab.vm().is_migrating());
    lab.advance(Duration::from_millis(1));
    assert!(vm_events(&lab).contains(&EmulatorEvent::Vmotion(VmotionOutcome::Cancelled)));
    // The proxy answers GOAHEAD at 5.5 s; the VM has moved on and opens no destination.
    lab.advance(Duration::from_millis(600));
    assert!(lab.outcomes().iter().any(|o| o.contains("GoAhead")));
    assert_eq!(lab.vm().destination_conn(), None);
    // Client data is held by the proxy until it expires the vMotion by itself (30 s).
    lab.client_send(40);
    assert!(lab.session(source).unwrap().is_holding());
    let held_at = lab.vm().recorder().total();
    lab.advance(Duration::from_secs(29));
    assert_eq!(lab.vm().recorder().total(), held_at);
    lab.advance(Duration::from_secs(1));
    // The source is open: the VM stays, nothing closes.
    assert!(matches!(
        vmotion_events(&lab).last().unwrap(),
        EndpointEvent::VmotionExpired { released: 40, .. }
    ));
    assert!(endpoint_events_of(&lab, source)
        .iter()
        .any(|e| matches!(e, EndpointEvent::VmotionExpired { released: 40, .. })));
    assert!(!endpoint_events_of(&lab, source).iter().any(|e| matches!(
        e,
        EndpointEvent::VmotionAborted { .. } | EndpointEvent::Closed { .. }
    )));
    assert_eq!(lab.current(), Some(source));
    settle(&mut lab);
    assert_eq!(lab.vm().recorder().total(), 30 + 40);
}

#[test]
fn destination_timeout_aborts_when_peer_ok_never_comes() {
    let config = LabConfig {
        answer_peer: false,
        ..LabConfig::default()
    };
    let mut lab = lab(vm_config(None), config);
    let source = lab.vm().current_conn().unwrap();
    let now = lab.now();
    lab.vm_mut()
        .start_vmotion(now, VmotionPlan::new(&b"\x09\x09\x09\x09"[..]))
        .unwrap();
    lab.run();
    let dest = lab.vm().destination_conn().unwrap();
    assert!(endpoint_events_of(&lab, dest)
        .iter()
        .any(|e| matches!(e, EndpointEvent::PeerRequested { .. })));
    assert!(!endpoint_events_of(&lab, dest)
        .iter()
        .any(|e| matches!(e, EndpointEvent::PeerAnswered { .. })));
    lab.client_send(12);
    lab.advance(Duration::from_millis(4_990));
    assert!(lab.vm().is_migrating());
    lab.advance(Duration::from_millis(20));
    assert!(
        vm_events(&lab).contains(&EmulatorEvent::Vmotion(VmotionOutcome::Aborted {
            reason: AbortReason::PeerTimeout
        }))
    );
    assert!(
        lab.session(dest).is_none(),
        "the destination connection was closed"
    );
    assert!(endpoint_events_of(&lab, source)
        .iter()
        .any(|e| matches!(e, EndpointEvent::VmotionAborted { released: 12, .. })));
    assert!(endpoint_events_of(&lab, dest).iter().any(|e| matches!(
        e,
        EndpointEvent::Closed {
            reason: CloseReason::Disconnected,
            data,
            ..
        } if *data == dest
    )));
    settle(&mut lab);
    assert_eq!(lab.vm().recorder().total(), 12);
}

#[test]
fn reconfigure_connected_true_reconnects_with_the_same_identity() {
    let mut lab = lab(vm_config(None), LabConfig::default());
    traffic(&mut lab, 3, 10);
    let first = lab.vm().current_conn().unwrap();
    let now = lab.now();
    lab.vm_mut().set_connected(now, true).unwrap();
    lab.run();
    let second = lab.vm().current_conn().unwrap();
    assert_ne!(first, second);
    assert!(lab.session(first).is_none(), "old connection closed");
    assert_eq!(lab.current(), Some(second));
    let identity = lab.session(second).unwrap().identity().clone();
    assert_eq!(
        identity.vc_uuid.unwrap().uuid(),
        Some(VmIdentity::numbered(42).vc_uuid)
    );
    assert!(lab.session(second).unwrap().proxy_request().is_some());
    traffic(&mut lab, 3, 10);
    settle(&mut lab);
    assert_eq!(lab.vm().stats().connections, 2);

    let now = lab.now();
    lab.vm_mut().set_connected(now, false).unwrap();
    lab.run();
    assert_eq!(lab.vm().current_conn(), None);
    assert_eq!(lab.current(), None);
    let sent = lab.vm().serial_sent();
    lab.advance(Duration::from_secs(1));
    assert_eq!(lab.vm().serial_sent(), sent, "no output while disconnected");
    assert_eq!(lab.check(), Ok(()));
}

#[test]
fn power_on_connects_only_with_start_connected() {
    let mut config = vm_config(None);
    config.port.start_connected = false;
    let mut lab = lab(config, LabConfig::default());
    assert!(lab.vm().is_powered_on());
    assert!(!lab.vm().is_connected());
    assert_eq!(lab.vm().current_conn(), None);
    assert_eq!(lab.vm().stats().connections, 0);
    let now = lab.now();
    lab.vm_mut().set_connected(now, true).unwrap();
    lab.run();
    assert!(lab.vm().current_conn().is_some());
    lab.vm_mut().power_off();
    lab.run();
    assert_eq!(lab.current(), None);
    assert_eq!(
        lab.vm_mut().set_connected(now, true),
        Err(EmulatorError::PoweredOff)
    );
}

#[test]
fn proxy_close_reconnects_after_the_configured_delay() {
    let mut config = vm_config(None);
    config.reconnect_after = Some(Duration::from_secs(2));
    let mut lab = lab(config, LabConfig::default());
    let first = lab.vm().current_conn().unwrap();
    lab.proxy_close(first);
    assert!(vm_events(&lab).contains(&EmulatorEvent::Disconnected { conn: first }));
    lab.advance(Duration::from_millis(1_999));
    assert_eq!(lab.vm().current_conn(), None);
    lab.advance(MS);
    let second = lab.vm().current_conn().unwrap();
    assert_eq!(lab.current(), Some(second));
    assert_eq!(
        SerialPortConfig::default().keep_idle.detection_bound(),
        Duration::from_secs(315)
    );
}

#[test]
fn unknown_suboption_is_answered_and_the_session_carries_on() {
    let mut lab = lab(vm_config(None), LabConfig::default());
    lab.vm_mut()
        .inject(Fault::UnknownSuboption {
            code: 99,
            payload: Bytes::from_static(b"\xff\x00"),
        })
        .unwrap();
    lab.run();
    let conn = lab.vm().current_conn().unwrap();
    assert!(
        vm_events(&lab).contains(&EmulatorEvent::UnknownSuboptionReported {
            conn,
            command: Command::from_code(99)
        })
    );
    traffic(&mut lab, 3, 10);
    settle(&mut lab);
}

#[test]
fn oversized_subnegotiation_and_telnet_noise_leave_the_data_intact() {
    let config = LabConfig {
        proxy: ProxyConfig {
            max_subnegotiation: 256,
            ..ProxyConfig::default()
        },
        read_chunk: 5,
        ..LabConfig::default()
    };
    let mut lab = lab(vm_config(None), config);
    traffic(&mut lab, 2, 10);
    lab.vm_mut()
        .inject(Fault::OversizedSubnegotiation { len: 1000 })
        .unwrap();
    lab.vm_mut().inject(Fault::TelnetNoise).unwrap();
    traffic(&mut lab, 2, 10);
    let conn = lab.vm().current_conn().unwrap();
    assert!(endpoint_events_of(&lab, conn).iter().any(|e| matches!(
        e,
        EndpointEvent::ProtocolError {
            error: ProtocolError::Telnet(_),
            ..
        }
    )));
    settle(&mut lab);
}

#[test]
fn every_segmentation_gives_the_same_exact_streams() {
    for segmentation in [
        Segmentation::EveryByte,
        Segmentation::Random { seed: 9, max: 3 },
    ] {
        let mut config = vm_config(Some(300));
        config.segmentation = segmentation;
        let mut lab = lab(config, LabConfig::default());
        traffic(&mut lab, 4, 10);
        let now = lab.now();
        lab.vm_mut()
            .start_vmotion(now, VmotionPlan::new(&b"\xff\xff\x00\x01"[..]))
            .unwrap();
        traffic(&mut lab, 4, 10);
        assert_eq!(lab.vm().stats().vmotions_completed, 1);
        settle(&mut lab);
    }
}

#[test]
fn abrupt_close_and_silence_are_survived_by_the_proxy() {
    let mut lab = lab(vm_config(None), LabConfig::default());
    let first = lab.vm().current_conn().unwrap();
    lab.vm_mut().inject(Fault::AbruptClose).unwrap();
    lab.run();
    assert!(
        lab.session(first).is_none(),
        "the proxy saw EOF and dropped it"
    );
    assert_eq!(lab.current(), None);
    let now = lab.now();
    lab.vm_mut().set_connected(now, true).unwrap();
    lab.run();
    let second = lab.vm().current_conn().unwrap();
    lab.vm_mut().inject(Fault::Silence).unwrap();
    lab.client_send(10);
    lab.advance(Duration::from_secs(1));
    assert_eq!(
        lab.vm().recorder().total(),
        0,
        "a silent host reads nothing"
    );
    assert!(lab.session(second).is_some(), "and never closes");
    lab.vm_mut()
        .inject(Fault::Garbage(Bytes::from_static(
            b"\xff\xfa\xe8\x52 no SE",
        )))
        .unwrap();
    lab.run();
}

#[test]
fn a_slow_reader_gets_everything_eventually() {
    let config = LabConfig {
        vm_read_budget: Some((8, MS)),
        ..LabConfig::default()
    };
    let mut lab = lab(vm_config(Some(0)), config);
    lab.advance(Duration::from_secs(1));
    assert!(lab.current().is_some(), "handshake done at 8 bytes per ms");
    lab.client_send(200);
    lab.advance(10 * MS);
    let early = lab.vm().recorder().total();
    assert!((70..=90).contains(&early), "read {early} in 10 ms");
    lab.advance(20 * MS);
    assert_eq!(lab.vm().recorder().total(), 200);
    assert_eq!(lab.check(), Ok(()));
}
