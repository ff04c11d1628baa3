//! The blocks A to E of ESXi's captures (docs/esxi-wire.md) replayed against an Endpoint's
//! ProxySession split at every byte, and the VmSession checked against the captured VM side.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use vspc_proto::*;

const KS2_CAPTURED: &str = "fffae8010001020328292b2c2d2e3046474950515253fff0";

fn our_ks2_wire() -> Vec<u8> {
    Message::KnownSuboptions2(PROXY_KNOWN_SUBOPTIONS.to_vec()).to_wire()
}

/// Replaces our KNOWN-SUBOPTIONS-2 (which also lists 84-87) by the captured proxy's.
fn normalize_ks2(out: &[u8]) -> Vec<u8> {
    let ours = our_ks2_wire();
    let theirs = hex(KS2_CAPTURED);
    let mut result = Vec::new();
    let mut i = 0;
    while i < out.len() {
        if out[i..].starts_with(&ours) {
            result.extend_from_slice(&theirs);
            i += ours.len();
        } else {
            result.push(out[i]);
            i += 1;
        }
    }
    result
}

/// Splits of `input`: whole, every two-way split, and one byte at a time.
fn splits(input: &[u8]) -> Vec<Vec<&[u8]>> {
    let mut all = vec![vec![input]];
    for k in 1..input.len() {
        all.push(vec![&input[..k], &input[k..]]);
    }
    all.push(input.chunks(1).collect());
    all
}

/// Feeds `chunks` to connection `id`, processing events after each; returns what it wrote.
fn feed(app: &mut App, id: SessionId, chunks: &[&[u8]]) -> Vec<u8> {
    app.process();
    let mut out = app.transmit(id);
    for chunk in chunks {
        app.input(id, chunk);
        out.extend(app.transmit(id));
    }
    out
}

/// Secrets of 4 bytes, as in the capture.
fn config(proxy: ProxyConfig) -> EndpointConfig {
    EndpointConfig {
        proxy: Arc::new(proxy),
        coordinator: CoordinatorConfig {
            secret_len: 4,
            ..CoordinatorConfig::default()
        },
        ..EndpointConfig::default()
    }
}

/// An application with one connection, its coordinator handing out `secrets` (the OS's
/// when empty).
fn app_with_session(proxy: ProxyConfig, secrets: &[&str]) -> (App, SessionId) {
    let mut app = if secrets.is_empty() {
        App::new(config(proxy))
    } else {
        App::with_secrets(config(proxy), secrets)
    };
    let id = app.connect();
    (app, id)
}

fn data_of(app: &App, id: SessionId) -> Vec<u8> {
    app.events
        .iter()
        .filter_map(|e| match e {
            EndpointEvent::Data { conn, bytes } if *conn == id => Some(bytes.to_vec()),
            _ => None,
        })
        .flatten()
        .collect()
}

#[test]
fn block_a_exact_replies_at_every_split() {
    let input = stream(BLOCK_A, true);
    let expected = stream(BLOCK_A, false);
    for chunks in splits(&input) {
        let (mut app, id) = app_with_session(capture_proxy_config(), &[]);
        let out = feed(&mut app, id, &chunks);
        // Byte for byte what the captured proxy sent, but for our longer KNOWN-SUBOPTIONS-2.
        assert_eq!(normalize_ks2(&out), expected, "split {:?}", chunks.len());
        let identity = app.session(id).identity().clone();
        assert_eq!(identity.vc_uuid.unwrap().raw(), UUID_VMX.as_bytes());
        assert_eq!(identity.name.unwrap().as_str(), "vm-00000");
        assert_eq!(
            app.session(id).proxy_request(),
            Some(&ProxyRequest {
                direction: Direction::Server,
                service_uri: Bytes::from_static(b"vSPC.py"),
                accepted: true
            })
        );
        assert_eq!(data_of(&app, id), b" ");
        assert!(!app
            .events
            .iter()
            .any(|e| matches!(e, EndpointEvent::ProtocolError { .. })));
    }
}

#[test]
fn block_a_default_config_also_asks_bios_and_location() {
    let input = stream(BLOCK_A, true);
    let (mut app, id) = app_with_session(ProxyConfig::default(), &[]);
    let out = feed(&mut app, id, &[&input]);
    let msgs = messages(&out);
    assert_eq!(
        msgs,
        vec![
            Message::KnownSuboptions2(PROXY_KNOWN_SUBOPTIONS.to_vec()),
            Message::GetVmVcUuid,
            Message::GetVmName,
            Message::GetVmBiosUuid,
            Message::GetVmLocationUuid,
            Message::WillProxy,
        ]
    );
    // Our list is a superset of the captured proxy's.
    let Message::KnownSuboptions2(theirs) = messages(&hex(KS2_CAPTURED)).remove(0) else {
        panic!()
    };
    assert!(theirs.iter().all(|c| PROXY_KNOWN_SUBOPTIONS.contains(c)));
}

#[test]
fn block_b_goahead_exact_at_every_split() {
    let input = [stream(BLOCK_A, true), stream(BLOCK_B, true)].concat();
    let expected = [stream(BLOCK_A, false), stream(BLOCK_B, false)].concat();
    for chunks in splits(&input) {
        let (mut app, id) = app_with_session(capture_proxy_config(), &["3ce64dab"]);
        let out = feed(&mut app, id, &chunks);
        assert_eq!(normalize_ks2(&out), expected);
        assert!(app.session(id).is_holding());
        assert!(app.endpoint.coordinator().is_pending(id));
    }
}

#[test]
fn block_c_destination_accepted_and_completed_at_every_split() {
    let source_input = [stream(BLOCK_A, true), stream(BLOCK_B, true)].concat();
    let input = stream(BLOCK_C, true);
    let expected = stream(BLOCK_C, false);
    for (n, chunks) in splits(&input).into_iter().enumerate() {
        let (mut app, src) = app_with_session(capture_proxy_config(), &["3ce64dab"]);
        feed(&mut app, src, &[&source_input]);
        // A client types while the VM moves: held from GOAHEAD on.
        app.client_send(b"held");
        assert_eq!(app.session(src).held_len(), 4);
        // In block C the source's FIN comes before COMPLETE; alternate both orders.
        let fin_first = n % 2 == 0;
        if fin_first {
            assert_eq!(
                app.close(src),
                vec![EndpointEvent::SourceClosed {
                    conn: src,
                    peer: None
                }]
            );
        }
        let dest = app.connect();
        let out = feed(&mut app, dest, &chunks);
        // Semantically the captured replies: same negotiation (any order), same messages in
        // the same order, then the held client data first.
        let (out, held) = out.split_at(out.len() - 4);
        assert_eq!(held, b"held");
        let ours = items(&normalize_ks2(out));
        let theirs = items(&expected);
        let msgs = |v: &[Item]| -> Vec<Item> {
            v.iter()
                .filter(|i| matches!(i, Item::Msg(_)))
                .cloned()
                .collect()
        };
        let negs = |v: &[Item]| -> Vec<String> {
            let mut n: Vec<String> = v
                .iter()
                .filter(|i| !matches!(i, Item::Msg(_)))
                .map(|i| format!("{i:?}"))
                .collect();
            n.sort();
            n
        };
        assert_eq!(msgs(&ours), msgs(&theirs));
        assert_eq!(negs(&ours), negs(&theirs));
        let sequence = Bytes::from(hex("44da87f1"));
        let key = VmotionKey::new(&sequence, &hex("3ce64dab"));
        let moved_away = EndpointEvent::Closed {
            conn: src,
            reason: CloseReason::MovedAway { to: dest },
            data: (),
        };
        let mut expected = vec![EndpointEvent::BeginAnswered {
            conn: src,
            sequence: sequence.clone(),
            outcome: BeginOutcome::GoAhead {
                key: key.clone(),
                deadline: app.now + Duration::from_secs(30),
            },
        }];
        if fin_first {
            expected.push(EndpointEvent::SourceClosed {
                conn: src,
                peer: None,
            });
        }
        expected.push(EndpointEvent::PeerAnswered {
            conn: dest,
            key,
            outcome: ClaimOutcome::Accepted { source: src },
        });
        expected.push(EndpointEvent::Moved {
            from: src,
            to: dest,
            sequence,
            replayed: 4,
        });
        if fin_first {
            expected.push(moved_away.clone());
        }
        assert_eq!(app.vmotion_events(), expected);
        assert_eq!(app.current, Some(dest));
        assert_eq!(data_of(&app, dest), b"9");
        if !fin_first {
            assert_eq!(app.close(src), vec![moved_away]);
        }
        assert_eq!(app.endpoint.coordinator().pending_len(), 0);
        assert!(app.endpoint.session(src).is_none());
        // Client data now goes to the destination.
        app.client_send(b"!");
        assert_eq!(app.transmit(dest), b"!");
    }
}

#[test]
fn block_d_notnow_exact_and_data_carries_on_at_every_split() {
    let input = [stream(BLOCK_A, true), stream(BLOCK_D, true)].concat();
    let expected = [stream(BLOCK_A, false), stream(BLOCK_D, false)].concat();
    for chunks in splits(&input) {
        let (mut app, id) = app_with_session(capture_proxy_config(), &[]);
        app.endpoint.set_allow_vmotion(false);
        let out = feed(&mut app, id, &chunks);
        assert_eq!(normalize_ks2(&out), expected);
        assert_eq!(data_of(&app, id), b" fg");
        assert_eq!(
            app.vmotion_events(),
            vec![EndpointEvent::BeginAnswered {
                conn: id,
                sequence: Bytes::from(hex("cd526755")),
                outcome: BeginOutcome::NotNow(NotNowReason::Vetoed)
            }]
        );
        assert!(!app.session(id).is_holding());
    }
}

#[test]
fn block_e_goahead_abort_held_data_to_source_first_at_every_split() {
    let a = stream(BLOCK_A, true);
    let e = stream(BLOCK_E, true);
    let begin_end = hex("fffae82861ed26a2fff0").len();
    let before = [a.clone(), e[..begin_end].to_vec()].concat();
    let after = e[begin_end..].to_vec();
    let goahead = hex("fffae82961ed26a2aeec483ffff0");
    for chunks in splits(&before) {
        for k in [0, 1, 3, 5, after.len() - 1, after.len()] {
            let (mut app, id) = app_with_session(capture_proxy_config(), &["aeec483f"]);
            let out = feed(&mut app, id, &chunks);
            assert_eq!(
                normalize_ks2(&out),
                [stream(BLOCK_A, false), goahead.clone()].concat()
            );
            app.client_send(b"typed during vMotion");
            let out = feed(&mut app, id, &[&after[..k], &after[k..]]);
            // ABORT: the held data goes to the source first; nothing else is sent.
            assert_eq!(out, b"typed during vMotion");
            assert_eq!(data_of(&app, id), b" |}~ ");
            assert_eq!(
                app.vmotion_events().last().unwrap(),
                &EndpointEvent::VmotionAborted {
                    conn: id,
                    sequence: Bytes::from(hex("61ed26a2")),
                    released: 20
                }
            );
            assert_eq!(app.endpoint.coordinator().pending_len(), 0);
            app.client_send(b"x");
            assert_eq!(app.transmit(id), b"x");
        }
    }
}

/// Drives a VmSession with the captured proxy side on the captured clock; the VM's own
/// commands (data, BEGIN, ABORT, COMPLETE) are issued where the capture shows them.
fn emulate(vm: &mut VmSession, start: Instant, block: &[Line], events: &mut Vec<VmEvent>) {
    for &(ms, vm_to_proxy, bytes) in block {
        let now = start + Duration::from_micros((ms * 1000.0) as u64);
        if vm.poll_timeout().is_some_and(|t| t <= now) {
            vm.handle_timeout(now);
        }
        let bytes = hex(bytes);
        if bytes.is_empty() {
            continue; // FIN
        }
        if vm_to_proxy {
            if bytes[0] != 0xff {
                vm.send_data(&bytes);
            } else if bytes.starts_with(&[0xff, 0xfa, 0xe8, 0x28]) {
                vm.begin_vmotion(&bytes[4..bytes.len() - 2]);
            } else if bytes.starts_with(&[0xff, 0xfa, 0xe8, 0x30]) {
                vm.abort_vmotion();
            } else if bytes.starts_with(&[0xff, 0xfa, 0xe8, 0x2e]) {
                assert!(vm.complete_vmotion());
            }
        } else {
            vm.handle_input(now, &Bytes::from(bytes));
            while let Some(e) = vm.poll_event() {
                events.push(e);
            }
        }
    }
}

fn drain(vm: &mut VmSession) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(b) = vm.poll_transmit() {
        out.extend_from_slice(&b);
    }
    out
}

#[test]
fn vm_session_reproduces_the_captured_vm_side_of_a_b_d_e() {
    let start = t0();
    let mut vm = VmSession::new(start, source_vm_config());
    let mut events = Vec::new();
    let mut out = Vec::new();
    emulate(&mut vm, start, BLOCK_A, &mut events);
    out.extend(drain(&mut vm));
    assert_eq!(out, stream(BLOCK_A, true));
    assert!(events.contains(&VmEvent::ProxyAnswered { accepted: true }));

    let later = start + Duration::from_secs(10);
    emulate(&mut vm, later, BLOCK_D, &mut events);
    assert_eq!(drain(&mut vm), stream(BLOCK_D, true));
    assert!(events.contains(&VmEvent::VmotionNotNow {
        sequence: Bytes::from(hex("cd526755"))
    }));

    let later = start + Duration::from_secs(20);
    emulate(&mut vm, later, BLOCK_E, &mut events);
    assert_eq!(drain(&mut vm), stream(BLOCK_E, true));

    let later = start + Duration::from_secs(30);
    emulate(&mut vm, later, BLOCK_B, &mut events);
    assert_eq!(drain(&mut vm), stream(BLOCK_B, true));
    assert!(events.contains(&VmEvent::VmotionGoahead {
        key: VmotionKey::new(&hex("44da87f1"), &hex("3ce64dab"))
    }));
    assert!(!events.iter().any(|e| matches!(e, VmEvent::Error(_))));
}

#[test]
fn vm_session_reproduces_the_captured_destination_side_c() {
    let start = t0();
    let mut config = source_vm_config();
    config.role = VmRole::Destination {
        sequence: Bytes::from(hex("44da87f1")),
        secret: Bytes::from(hex("3ce64dab")),
    };
    let mut vm = VmSession::new(start, config);
    let mut events = Vec::new();
    emulate(&mut vm, start, BLOCK_C, &mut events);
    assert_eq!(drain(&mut vm), stream(BLOCK_C, true));
    assert!(events.contains(&VmEvent::PeerAccepted {
        sequence: Bytes::from(hex("44da87f1"))
    }));
}

/// The VM emulator talking to our proxy produces exactly the captured VM side: our replies
/// make ESXi proceed as it did in the capture.
#[test]
fn our_replies_make_the_vm_proceed_as_captured_a_and_c() {
    let mut world = World::with_secrets(config(capture_proxy_config()), &["3ce64dab"]);
    let src = world.connect(source_vm_config());
    world.advance(Duration::from_millis(46));
    world.vm_send(src, b" ");
    assert_eq!(world.link(src).vm_out, stream(BLOCK_A, true));

    world.link(src).vm.begin_vmotion(&hex("44da87f1"));
    world.run();
    let key = world
        .link(src)
        .vm_events
        .iter()
        .find_map(|e| match e {
            VmEvent::VmotionGoahead { key } => Some(key.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(key.secret(), Some(&hex("3ce64dab")[..]));
    let mut config = source_vm_config();
    config.role = VmRole::Destination {
        sequence: Bytes::copy_from_slice(key.sequence().unwrap()),
        secret: Bytes::copy_from_slice(key.secret().unwrap()),
    };
    let dest = world.connect(config);
    assert!(world.link(dest).vm_events.contains(&VmEvent::PeerAccepted {
        sequence: Bytes::from(hex("44da87f1"))
    }));
    assert!(world.link(dest).vm.complete_vmotion());
    world.run();
    world.fin(src);
    world.vm_send(dest, b"9");
    assert_eq!(world.link(dest).vm_out, stream(BLOCK_C, true));
    assert_eq!(world.app.client_rx, b" 9");
}

#[test]
fn default_proxy_gets_bios_and_location_answers_in_place() {
    let mut world = World::new(EndpointConfig::default());
    let id = world.connect(source_vm_config());
    world.advance(Duration::from_millis(46));
    world.vm_send(id, b" ");
    let uuid = VmUuid::from_uuid(capture_uuid());
    let extra = [
        Message::VmBiosUuid(uuid.clone()).to_wire(),
        Message::VmLocationUuid(uuid).to_wire(),
    ]
    .concat();
    let a = stream(BLOCK_A, true);
    let name = hex("fffae852766d2d3030303030fff0");
    let at = a.windows(name.len()).position(|w| w == name).unwrap() + name.len();
    let expected = [&a[..at], &extra[..], &a[at..]].concat();
    assert_eq!(world.link(id).vm_out, expected);
    let identity = world.app.session(id).identity().clone();
    assert_eq!(identity.bios_uuid.unwrap().uuid(), Some(capture_uuid()));
    assert_eq!(identity.location_uuid.unwrap().uuid(), Some(capture_uuid()));
}
