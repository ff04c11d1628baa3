//! An in-memory concentrator: an Endpoint (its ProxySessions and Coordinator) <-> VmSessions
//! on a simulated clock. Every scenario asserts exact bytes or exact events, and that no client
//! byte is lost or duplicated.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use vspc_proto::vspc_telnet::DecodeError;
use vspc_proto::*;

const SEQ: &str = "44da87f1";
const SECRET: &str = "3ce64dab9a8b7c6d";

fn world_with(secrets: &[&str]) -> World {
    World::with_secrets(EndpointConfig::default(), secrets)
}

fn world() -> World {
    World::new(EndpointConfig::default())
}

fn dest_config(key: &VmotionKey) -> VmConfig {
    let mut config = source_vm_config();
    config.role = VmRole::Destination {
        sequence: Bytes::copy_from_slice(key.sequence().unwrap()),
        secret: Bytes::copy_from_slice(key.secret().unwrap()),
    };
    config
}

fn goahead_key(world: &mut World, id: SessionId) -> VmotionKey {
    world
        .link(id)
        .vm_events
        .iter()
        .rev()
        .find_map(|e| match e {
            VmEvent::VmotionGoahead { key } => Some(key.clone()),
            _ => None,
        })
        .unwrap()
}

/// Proxy output of `id` written by `action`.
fn written(world: &mut World, id: SessionId, action: impl FnOnce(&mut World)) -> Vec<u8> {
    let before = world.link(id).proxy_out.len();
    action(world);
    world.link(id).proxy_out[before..].to_vec()
}

fn identified_source(world: &mut World) -> SessionId {
    let id = world.connect(source_vm_config());
    world.advance(Duration::from_millis(50));
    id
}

#[test]
fn handshake_exact_bytes_both_ways_any_chunking() {
    for chunk in [usize::MAX, 7, 1] {
        let mut world = world();
        world.chunk = chunk;
        let id = identified_source(&mut world);
        let expected_proxy = [
            hex("fffb00fffb03fffb01fffd00fffd03fffde8 fffe25"),
            Message::KnownSuboptions2(Command::ALL.to_vec()).to_wire(),
            hex("fffae851fff0 fffae853fff0 fffae855fff0 fffae857fff0 fffae847fff0 fffe2c"),
        ]
        .concat();
        assert_eq!(world.link(id).proxy_out, expected_proxy, "chunk {chunk}");
        let uuid = VmUuid::from_uuid(capture_uuid());
        let a = stream(BLOCK_A, true);
        let expected_vm = [
            &a[..a.len() - 4],
            &Message::VmBiosUuid(uuid.clone()).to_wire()[..],
            &Message::VmLocationUuid(uuid).to_wire()[..],
            &hex("fffb2c")[..],
        ]
        .concat();
        assert_eq!(world.link(id).vm_out, expected_vm, "chunk {chunk}");
        let session = world.app.session(id);
        assert!(session
            .telnet()
            .is_enabled(vspc_telnet::Side::Remote, vspc_telnet::option::VMWARE_EXT));
        assert!(session
            .telnet()
            .is_enabled(vspc_telnet::Side::Local, vspc_telnet::option::BINARY));
        assert!(!session
            .telnet()
            .is_enabled(vspc_telnet::Side::Remote, vspc_telnet::option::COM_PORT));
    }
}

#[test]
fn identification_events_in_arrival_order() {
    let mut world = world();
    let id = identified_source(&mut world);
    let uuid = VmUuid::from_uuid(capture_uuid());
    let snapshots: Vec<Identity> = world
        .events_of(id)
        .into_iter()
        .filter_map(|e| match e {
            EndpointEvent::Identified { identity, .. } => Some(*identity),
            _ => None,
        })
        .collect();
    let mut expected = Identity {
        vc_uuid: Some(uuid.clone()),
        ..Identity::default()
    };
    let mut all = vec![expected.clone()];
    expected.name = Some(VmName::from("vm-00000"));
    all.push(expected.clone());
    expected.bios_uuid = Some(uuid.clone());
    all.push(expected.clone());
    expected.location_uuid = Some(uuid);
    all.push(expected.clone());
    assert_eq!(snapshots, all);
    let events = world.events_of(id);
    assert!(events.contains(&EndpointEvent::KnownSuboptions {
        conn: id,
        commands: ESXI_KNOWN_SUBOPTIONS.to_vec()
    }));
    assert!(events.contains(&EndpointEvent::ProxyRequested {
        conn: id,
        request: ProxyRequest {
            direction: Direction::Server,
            service_uri: Bytes::from_static(b"vSPC.py"),
            accepted: true,
        }
    }));
    assert!(!events
        .iter()
        .any(|e| matches!(e, EndpointEvent::ProtocolError { .. })));
    // Ready once, with the VC UUID (the first identification) and after DO-PROXY.
    let ready: Vec<usize> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| matches!(e, EndpointEvent::Ready { .. }))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(ready.len(), 1);
    assert!(matches!(
        &events[ready[0] - 1],
        EndpointEvent::Identified { identity, .. } if identity.name.is_none()
    ));
}

#[test]
fn data_both_ways_is_exact_including_nul_dc1_cr_and_iac() {
    for chunk in [usize::MAX, 1] {
        let mut world = world();
        world.chunk = chunk;
        let id = identified_source(&mut world);
        let tricky = b"\x00\x11\xff\r\n\r\x00\xff\xff\rA\xf0\xfa".to_vec();
        world.vm_send(id, &tricky);
        assert_eq!(world.app.client_rx, tricky);
        let out = written(&mut world, id, |w| w.client_send(&tricky));
        assert_eq!(out, hex("00 11 ffff 0d 0a 0d 00 ffff ffff 0d 41 f0 fa"));
        assert_eq!(world.link(id).vm_rx, tricky);
    }
}

#[test]
fn data_before_identification_is_delivered() {
    let mut world = world();
    let id = world.app.connect();
    let mut vm = VmSession::new(world.app.now, source_vm_config());
    vm.send_data(b"early");
    world.links.insert(id, Link::new(vm));
    world.run();
    let events = world.events_of(id);
    let data = events
        .iter()
        .position(|e| {
            *e == EndpointEvent::Data {
                conn: id,
                bytes: Bytes::from_static(b"early"),
            }
        })
        .unwrap();
    let identified = events
        .iter()
        .position(|e| matches!(e, EndpointEvent::Identified { .. }))
        .unwrap();
    assert!(data < identified);
}

/// The whole vMotion, with client data typed in every phase and VM output in every phase.
fn vmotion(fin_before_complete: bool, chunk: usize) {
    let mut world = world_with(&[SECRET]);
    world.chunk = chunk;
    let src = identified_source(&mut world);
    world.vm_send(src, b"[src-before]");
    world.client_send(b"<1 to source>");

    let begun = world.app.now;
    let out = written(&mut world, src, |w| {
        w.link(src).vm.begin_vmotion(&hex(SEQ));
        w.run();
    });
    assert_eq!(out, hex(&format!("fffae829{SEQ}{SECRET}fff0")));
    let key = goahead_key(&mut world, src);
    assert_eq!(key, VmotionKey::new(&hex(SEQ), &hex(SECRET)));
    world.client_send(b"<2 held after GOAHEAD>");
    world.vm_send(src, b"[src-still-running]");

    let dest = world.connect(dest_config(&key));
    let peer_wire = hex(&format!("fffae82c{SEQ}{SECRET}fff0"));
    assert!(world
        .link(dest)
        .vm_out
        .windows(peer_wire.len())
        .any(|w| w == peer_wire));
    let peer_ok = hex(&format!("fffae82d{SEQ}fff0"));
    let o = &world.link(dest).proxy_out;
    assert!(o.windows(peer_ok.len()).any(|w| w == peer_ok));
    assert!(world.link(dest).vm_events.contains(&VmEvent::PeerAccepted {
        sequence: Bytes::from(hex(SEQ))
    }));
    world.client_send(b"<3 held after PEER-OK>");
    assert_eq!(world.app.session(src).held_len(), 44);

    if fin_before_complete {
        assert_eq!(
            world.fin(src),
            vec![EndpointEvent::SourceClosed {
                conn: src,
                peer: Some(dest)
            }]
        );
        // Client data typed while the source is gone is still held in the source session.
        world.client_send(b"<4 after source FIN>");
    }
    let out = written(&mut world, dest, |w| {
        let before = w.link(dest).vm_out.len();
        assert!(w.link(dest).vm.complete_vmotion());
        w.run();
        assert_eq!(
            w.link(dest).vm_out[before..].to_vec(),
            hex(&format!("fffae82e{SEQ}fff0"))
        );
    });
    let mut held = b"<2 held after GOAHEAD><3 held after PEER-OK>".to_vec();
    if fin_before_complete {
        held.extend_from_slice(b"<4 after source FIN>");
    }
    assert_eq!(out, held, "held data goes to the destination first");
    assert_eq!(world.app.current, Some(dest));
    let moved_away = EndpointEvent::Closed {
        conn: src,
        reason: CloseReason::MovedAway { to: dest },
        data: (),
    };
    if !fin_before_complete {
        assert_eq!(world.fin(src), vec![moved_away.clone()]);
    }
    world.client_send(b"<5 to destination>");
    world.vm_send(dest, b"[dest-after]");

    assert_eq!(world.link(src).vm_rx, b"<1 to source>");
    let mut dest_rx = held.clone();
    dest_rx.extend_from_slice(b"<5 to destination>");
    assert_eq!(world.link(dest).vm_rx, dest_rx);
    assert_eq!(
        world.app.client_rx,
        b"[src-before][src-still-running][dest-after]"
    );
    assert_eq!(world.app.endpoint.coordinator().pending_len(), 0);
    assert!(world.app.endpoint.session(src).is_none());
    // Every step of the vMotion, as the endpoint reported it.
    let seq = Bytes::from(hex(SEQ));
    let mut expected = vec![
        EndpointEvent::BeginAnswered {
            conn: src,
            sequence: seq.clone(),
            outcome: BeginOutcome::GoAhead {
                key: key.clone(),
                deadline: begun + Duration::from_secs(30),
            },
        },
        EndpointEvent::PeerAnswered {
            conn: dest,
            key: key.clone(),
            outcome: ClaimOutcome::Accepted { source: src },
        },
    ];
    if fin_before_complete {
        expected.push(EndpointEvent::SourceClosed {
            conn: src,
            peer: Some(dest),
        });
    }
    expected.push(EndpointEvent::Moved {
        from: src,
        to: dest,
        sequence: seq,
        replayed: held.len(),
    });
    expected.push(moved_away);
    assert_eq!(world.app.vmotion_events(), expected);
}

#[test]
fn vmotion_success_fin_before_complete() {
    vmotion(true, usize::MAX);
    vmotion(true, 1);
}

#[test]
fn vmotion_success_fin_after_complete() {
    vmotion(false, usize::MAX);
    vmotion(false, 3);
}

#[test]
fn notnow_when_vetoed_unidentified_or_already_claimed() {
    // Vetoed by the application.
    let mut world = world();
    let src = identified_source(&mut world);
    world.app.endpoint.set_allow_vmotion(false);
    let out = written(&mut world, src, |w| {
        w.link(src).vm.begin_vmotion(&hex("cd526755"));
        w.run();
    });
    assert_eq!(out, hex("fffae82bcd526755fff0"));
    assert!(world
        .link(src)
        .vm_events
        .contains(&VmotionNotNow("cd526755")));
    world.client_send(b"not held");
    assert_eq!(world.link(src).vm_rx, b"not held");

    // Unidentified: BEGIN before VM-VC-UUID.
    let mut app = App::new(EndpointConfig::default());
    let id = app.connect();
    app.transmit(id);
    let sequence = Bytes::from_static(b"\x01\x02\x03\x04");
    let begin = Message::VmotionBegin {
        sequence: sequence.clone(),
    };
    assert_eq!(
        app.input(id, &begin.to_wire()),
        vec![EndpointEvent::BeginAnswered {
            conn: id,
            sequence,
            outcome: BeginOutcome::NotNow(NotNowReason::Unidentified)
        }]
    );
    assert_eq!(app.transmit(id), hex("fffae82b01020304fff0"));

    // Already pending: a destination claimed the first vMotion, then a second BEGIN.
    let mut world = world_with(&[SECRET, "0102030405060708"]);
    let src = identified_source(&mut world);
    world.link(src).vm.begin_vmotion(&hex(SEQ));
    world.run();
    let key = goahead_key(&mut world, src);
    world.client_send(b"held");
    let dest = world.connect(dest_config(&key));
    assert!(world
        .link(dest)
        .vm_events
        .iter()
        .any(|e| matches!(e, VmEvent::PeerAccepted { .. })));
    let out = written(&mut world, src, |w| {
        w.link(src).vm.begin_vmotion(&hex("aabbccdd"));
        w.run();
    });
    assert_eq!(out, hex("fffae82baabbccddfff0"));
    assert_eq!(
        world.app.vmotion_events().last().unwrap(),
        &EndpointEvent::BeginAnswered {
            conn: src,
            sequence: Bytes::from(hex("aabbccdd")),
            outcome: BeginOutcome::NotNow(NotNowReason::AlreadyPending)
        }
    );
    // The claimed vMotion is intact: COMPLETE still switches, with the held data.
    let out = written(&mut world, dest, |w| {
        w.link(dest).vm.complete_vmotion();
        w.run();
    });
    assert_eq!(out, b"held");
}

#[allow(non_snake_case)]
fn VmotionNotNow(seq: &str) -> VmEvent {
    VmEvent::VmotionNotNow {
        sequence: Bytes::from(hex(seq)),
    }
}

#[test]
fn abort_releases_held_data_to_the_source_first_and_complete_then_does_nothing() {
    let mut world = world_with(&[SECRET]);
    let src = identified_source(&mut world);
    world.link(src).vm.begin_vmotion(&hex(SEQ));
    world.run();
    let key = goahead_key(&mut world, src);
    world.client_send(b"one ");
    let dest = world.connect(dest_config(&key));
    world.client_send(b"two ");
    // ABORT on the destination has no effect.
    let out = written(&mut world, dest, |w| {
        w.link(dest).vm.send_raw_message(&Message::VmotionAbort);
        w.run();
    });
    assert!(out.is_empty());
    assert!(world
        .events_of(dest)
        .contains(&EndpointEvent::ProtocolError {
            conn: dest,
            error: ProtocolError::OutOfSequence(Command::VmotionAbort)
        }));
    assert!(world.app.session(src).is_holding());
    // ABORT on the source: held data first, then whatever comes next.
    let out = written(&mut world, src, |w| {
        w.link(src).vm.abort_vmotion();
        w.run();
        w.client_send(b"three");
    });
    assert_eq!(out, b"one two three");
    assert_eq!(world.link(src).vm_rx, b"one two three");
    assert!(world
        .events_of(src)
        .contains(&EndpointEvent::VmotionAborted {
            conn: src,
            sequence: Bytes::from(hex(SEQ)),
            released: 8
        }));
    assert_eq!(world.app.endpoint.coordinator().pending_len(), 0);
    // A late COMPLETE from the destination switches nothing.
    let out = written(&mut world, dest, |w| {
        w.link(dest).vm.complete_vmotion();
        w.run();
    });
    assert!(out.is_empty());
    assert_eq!(
        world.app.vmotion_events().last().unwrap(),
        &EndpointEvent::CompleteRefused {
            conn: dest,
            outcome: CompleteOutcome::NotPending
        }
    );
    assert_eq!(world.app.current, Some(src));
    // COMPLETE on the source has no effect either.
    world
        .link(src)
        .vm
        .send_raw_message(&Message::VmotionComplete {
            sequence: Bytes::from(hex(SEQ)),
        });
    world.run();
    assert!(world
        .events_of(src)
        .contains(&EndpointEvent::ProtocolError {
            conn: src,
            error: ProtocolError::OutOfSequence(Command::VmotionComplete)
        }));
    assert_eq!(world.app.current, Some(src));
}

#[test]
fn goahead_never_used_expires_at_the_deadline_and_a_new_begin_works() {
    let mut world = world_with(&[SECRET, "1111111111111111"]);
    let src = identified_source(&mut world);
    world.link(src).vm.begin_vmotion(&hex(SEQ));
    world.run();
    let deadline = world.app.session(src).poll_timeout().unwrap();
    assert_eq!(
        world.app.endpoint.coordinator().poll_timeout(),
        Some(deadline)
    );
    assert_eq!(world.app.endpoint.poll_timeout(), Some(deadline));
    assert_eq!(deadline - world.app.now, Duration::from_secs(30));
    world.client_send(b"waiting");
    world.advance(Duration::from_secs(30) - Duration::from_millis(1));
    assert!(world.app.session(src).is_holding());
    assert!(world.link(src).vm_rx.is_empty());
    world.advance(Duration::from_millis(1));
    assert!(!world.app.session(src).is_holding());
    assert_eq!(world.link(src).vm_rx, b"waiting");
    // The source is open: the VM stays here and nothing closes.
    assert_eq!(
        world.app.vmotion_events().last().unwrap(),
        &EndpointEvent::VmotionExpired {
            conn: src,
            sequence: Bytes::from(hex(SEQ)),
            released: 7
        }
    );
    assert_eq!(world.app.endpoint.coordinator().poll_timeout(), None);
    assert_eq!(world.app.endpoint.poll_timeout(), None);
    assert_eq!(world.app.current, Some(src));
    // The expired key is unknown to a late destination.
    let old = VmotionKey::new(&hex(SEQ), &hex(SECRET));
    let late = world.connect(dest_config(&old));
    assert!(world.link(late).vm_events.contains(&VmEvent::PeerRejected));
    // A new BEGIN gets a fresh GOAHEAD.
    let out = written(&mut world, src, |w| {
        w.link(src).vm.begin_vmotion(&hex("0a0b0c0d"));
        w.run();
    });
    assert_eq!(out, hex("fffae829 0a0b0c0d 1111111111111111 fff0"));
}

#[test]
fn second_begin_supersedes_an_unclaimed_one() {
    let mut world = world_with(&[SECRET, "2222222222222222"]);
    let src = identified_source(&mut world);
    world.link(src).vm.begin_vmotion(&hex(SEQ));
    world.run();
    world.client_send(b"kept");
    let out = written(&mut world, src, |w| {
        w.link(src).vm.begin_vmotion(&hex("01020304"));
        w.run();
    });
    assert_eq!(out, hex("fffae829 01020304 2222222222222222 fff0"));
    assert_eq!(world.app.endpoint.coordinator().pending_len(), 1);
    let old = VmotionKey::new(&hex(SEQ), &hex(SECRET));
    let stale = world.connect(dest_config(&old));
    assert!(world.link(stale).vm_events.contains(&VmEvent::PeerRejected));
    let new = goahead_key(&mut world, src);
    let dest = world.connect(dest_config(&new));
    let out = written(&mut world, dest, |w| {
        w.link(dest).vm.complete_vmotion();
        w.run();
    });
    assert_eq!(out, b"kept");
}

#[test]
fn expiry_after_the_source_closed_reports_the_vm_gone() {
    let mut world = world_with(&[SECRET]);
    let src = identified_source(&mut world);
    world.link(src).vm.begin_vmotion(&hex(SEQ));
    world.run();
    world.client_send(b"lost");
    assert_eq!(
        world.fin(src),
        vec![EndpointEvent::SourceClosed {
            conn: src,
            peer: None
        }]
    );
    assert!(world.app.endpoint.session(src).is_some(), "kept in transit");
    let before = world.app.events.len();
    world.advance(Duration::from_secs(31));
    assert_eq!(
        world.app.events[before..].to_vec(),
        vec![
            EndpointEvent::VmotionExpired {
                conn: src,
                sequence: Bytes::from(hex(SEQ)),
                released: 4
            },
            EndpointEvent::Closed {
                conn: src,
                reason: CloseReason::VmotionExpired,
                data: ()
            }
        ]
    );
    assert!(world.app.endpoint.session(src).is_none());
    assert_eq!(world.app.current, None);
}

#[test]
fn sequence_and_secret_with_iac_and_se_bytes() {
    let seq = "fff0ff00";
    let secret = "f0ffff f0 ff 00 f0 ff";
    let mut world = world_with(&[secret]);
    for chunk in [usize::MAX, 1] {
        world.chunk = chunk;
        let src = identified_source(&mut world);
        let out = written(&mut world, src, |w| {
            w.link(src).vm.begin_vmotion(&hex(seq));
            w.run();
        });
        assert_eq!(
            out,
            hex("fffae829 fffff0ff ff00 f0ffffffff f0ffff 00 f0ffff fff0")
        );
        let key = goahead_key(&mut world, src);
        assert_eq!(key.sequence(), Some(&hex(seq)[..]));
        assert_eq!(key.secret(), Some(&hex(secret)[..]));
        world.client_send(b"\xff\xf0held\xff");
        let dest = world.connect(dest_config(&key));
        let peer_ok = hex("fffae82d fffff0ffff00 fff0");
        assert!(world
            .link(dest)
            .proxy_out
            .windows(peer_ok.len())
            .any(|w| w == peer_ok));
        let out = written(&mut world, dest, |w| {
            w.link(dest).vm.complete_vmotion();
            w.run();
        });
        assert_eq!(out, hex("fffff0 68656c64 ffff"));
        assert_eq!(world.link(dest).vm_rx, b"\xff\xf0held\xff");
        world.fin(src);
        world.fin(dest);
        assert_eq!(world.app.current, None);
    }
}

#[test]
fn unknown_suboptions_both_ways() {
    let mut world = world();
    let id = identified_source(&mut world);
    // VM -> proxy: an unassigned code, and a proxy-only command.
    let out = written(&mut world, id, |w| {
        w.link(id).vm.send_raw_message(&Message::Unknown {
            command: 0x99,
            payload: Bytes::from_static(b"\x01\xff"),
        });
        w.link(id)
            .vm
            .send_raw_message(&Message::VmotionGoahead(VmotionKey::from_wire(
                Bytes::from_static(b"\x01"),
            )));
        // An UNKNOWN report about ours is never answered (no loops).
        w.link(id)
            .vm
            .send_raw_message(&Message::UnknownSuboptionRcvd2(Command::Unknown(5)));
        w.run();
    });
    assert_eq!(out, hex("fffae80399fff0 fffae80329fff0"));
    assert!(world.events_of(id).contains(&EndpointEvent::ProtocolError {
        conn: id,
        error: ProtocolError::UnexpectedMessage(Command::Unknown(0x99))
    }));
    // Proxy -> VM: the VM answers UNKNOWN-SUBOPTION-RCVD-1, which the proxy reports.
    let now = world.app.now;
    let link = world.link(id);
    link.vm
        .handle_input(now, &Bytes::from(hex("fffae877aafff0")));
    let reply = link.vm.poll_transmit().unwrap();
    assert_eq!(&reply[..], &hex("fffae80277fff0")[..]);
    assert_eq!(
        world.app.input(id, &reply),
        vec![EndpointEvent::UnknownSuboptionReported {
            conn: id,
            command: Command::Unknown(0x77)
        }]
    );
    assert_eq!(world.app.endpoint.poll_transmit(id), None);
}

#[test]
fn garbage_between_messages_is_survived_and_reported() {
    let mut world = world();
    let mut vm_config = source_vm_config();
    vm_config.com_port_delay = None;
    let id = world.connect(vm_config);
    let out = written(&mut world, id, |w| {
        let vm = &mut w.link(id).vm;
        vm.send_raw(&hex("fff1")); // NOP
        vm.send_raw(&hex("fff0")); // stray SE
        vm.send_raw(b"junk");
        vm.send_raw(&hex("fffb99")); // WILL an unknown option
        vm.send_raw(&hex("fffa18 0001 fff0")); // a subnegotiation nobody asked for
        vm.send_raw(&hex("fffae8fff0")); // empty 232 message
        vm.send_raw(&hex("fffae846fff0")); // DO-PROXY without direction
        vm.send_raw(&hex("fffae84658fff0")); // DO-PROXY with direction 'X'
        vm.send_raw(&hex("fffae828fff0")); // BEGIN without sequence
        vm.send_raw(&hex("fffae82cfff0")); // PEER without key
        vm.send_raw(&hex("fffae803fff0")); // UNKNOWN-SUBOPTION-RCVD-2 without code
        vm.send_raw(&hex("fffae852 41 ff 00 fff0")); // SB interrupted by IAC NUL
        vm.send_raw(b"more");
        vm.send_raw_message(&Message::VmName(VmName::from("renamed")));
        w.run();
    });
    assert_eq!(out, hex("fffe99 fffae849fff0 fffae849fff0 fffae8032cfff0"));
    let events = world.events_of(id);
    let tail: Vec<EndpointEvent> = events
        .iter()
        .skip_while(|e| !matches!(e, EndpointEvent::Command { .. }))
        .cloned()
        .collect();
    let command = |code: u8| EndpointEvent::Command {
        conn: id,
        command: vspc_telnet::Command::from_code(code).unwrap(),
    };
    let data = |bytes: &'static [u8]| EndpointEvent::Data {
        conn: id,
        bytes: Bytes::from_static(bytes),
    };
    let error = |error: ProtocolError| EndpointEvent::ProtocolError { conn: id, error };
    let expected = vec![
        command(0xf1),
        command(0xf0),
        data(b"junk"),
        error(ProtocolError::UnexpectedSubnegotiation { option: 0x18 }),
        error(ProtocolError::Message(MessageError::Empty)),
        error(ProtocolError::Message(MessageError::MissingDirection)),
        error(ProtocolError::Message(MessageError::InvalidDirection(b'X'))),
        error(ProtocolError::Message(MessageError::MissingSequence {
            command: Command::VmotionBegin,
        })),
        error(ProtocolError::Message(MessageError::MissingSequence {
            command: Command::VmotionPeer,
        })),
        error(ProtocolError::Message(MessageError::WrongLength {
            command: Command::UnknownSuboptionRcvd2,
            len: 0,
        })),
        error(ProtocolError::Telnet(
            DecodeError::SubnegotiationInterrupted {
                option: 232,
                byte: 0,
            },
        )),
    ];
    assert_eq!(&tail[..expected.len()], &expected[..]);
    // After `IAC NUL` (an unknown command) decoding resumes: the stray SE, data, the message.
    let rest = &tail[expected.len()..];
    assert_eq!(&rest[..3], &[command(0), command(0xf0), data(b"more"),]);
    assert_eq!(
        world
            .app
            .session(id)
            .identity()
            .name
            .as_ref()
            .unwrap()
            .as_str(),
        "renamed"
    );
    assert_eq!(world.app.client_rx, b"junkmore");
}

#[test]
fn oversized_subnegotiation_is_reported_and_discarded() {
    let mut world = World::new(endpoint_config(ProxyConfig {
        max_subnegotiation: 64,
        ..ProxyConfig::default()
    }));
    let mut vm_config = source_vm_config();
    vm_config.com_port_delay = None;
    let id = world.connect(vm_config);
    world
        .link(id)
        .vm
        .send_raw_message(&Message::VmName(VmName::new(vec![b'x'; 1000])));
    world.vm_send(id, b"after");
    assert!(world.events_of(id).contains(&EndpointEvent::ProtocolError {
        conn: id,
        error: ProtocolError::Telnet(DecodeError::SubnegotiationTooLong {
            option: 232,
            limit: 64
        })
    }));
    assert_eq!(world.app.client_rx, b"after");
}

#[test]
fn hold_is_bounded() {
    let config = endpoint_config(ProxyConfig {
        max_held: 10,
        ..ProxyConfig::default()
    });
    let mut world = World::with_secrets(config, &[SECRET]);
    let src = world.connect(source_vm_config());
    world.link(src).vm.begin_vmotion(&hex(SEQ));
    world.run();
    let endpoint = &mut world.app.endpoint;
    assert_eq!(endpoint.send_data(src, b"0123456789"), Ok(src));
    assert_eq!(
        endpoint.send_data(src, b"x"),
        Err(EndpointSendError::Session(SendError::HoldFull {
            held: 10,
            limit: 10
        }))
    );
}

#[test]
fn com_port_accepted_by_policy_surfaces_rfc2217() {
    use vspc_telnet::comport::{ComPortCommand, ComPortMessage, Origin};
    let mut world = World::new(endpoint_config(ProxyConfig {
        com_port: ComPortPolicy::Accept,
        ..ProxyConfig::default()
    }));
    let id = world.connect(source_vm_config());
    world.advance(Duration::from_millis(50));
    assert!(world.link(id).proxy_out.ends_with(&hex("fffd2c")));
    world.link(id).vm.send_raw(&hex("fffa2c 01 00002580 fff0"));
    world.run();
    assert!(world.events_of(id).contains(&EndpointEvent::ComPort {
        conn: id,
        message: ComPortMessage {
            origin: Origin::Client,
            command: ComPortCommand::SetBaudRate(9600)
        }
    }));
}

#[test]
fn service_policy_refuses_with_wont_proxy() {
    let mut world = World::new(endpoint_config(ProxyConfig {
        service_policy: ServicePolicy::from_fn(|d, uri| d == Direction::Client && uri == b"x"),
        ..ProxyConfig::default()
    }));
    let id = world.connect(source_vm_config());
    assert!(world
        .link(id)
        .proxy_out
        .windows(6)
        .any(|w| w == hex("fffae849fff0")));
    assert!(world
        .link(id)
        .vm_events
        .contains(&VmEvent::ProxyAnswered { accepted: false }));
    // Identified but refused: the connection carries no VM port.
    assert!(!world
        .events_of(id)
        .iter()
        .any(|e| matches!(e, EndpointEvent::Ready { .. })));
    assert_eq!(world.app.current, None);
}
