//! The Endpoint against VmSessions on a simulated clock: readiness, whole vMotions in both
//! FIN orders with client data following the VM byte for byte, ABORT, expiry with the source
//! open or closed, answers given by the application (late, never, or after a close), the
//! application's own closes, and calls naming unknown connections. Every step asserts the
//! exact events.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{hex, source_vm_config, t0};
use vspc_proto::*;

const SEQ: &str = "44da87f1";
const SECRET: &str = "3ce64dab9a8b7c6d";
const TIMEOUT: Duration = Duration::from_secs(30);

type Event = EndpointEvent<&'static str>;

/// A VM connection's far end.
struct Vm {
    session: VmSession,
    /// Client data the VM received.
    rx: Vec<u8>,
    events: Vec<VmEvent>,
    /// The VM side has not closed.
    open: bool,
}

/// An endpoint whose connections are labelled, VMs, and a simulated clock.
struct Net {
    now: Instant,
    endpoint: Endpoint<&'static str>,
    vms: BTreeMap<SessionId, Vm>,
    /// Events not taken yet.
    events: Vec<Event>,
}

impl Net {
    fn new(config: EndpointConfig) -> Net {
        let secrets = common::fixed_secrets(vec![hex(SECRET), hex("0102030405060708")]);
        Net {
            now: t0(),
            endpoint: Endpoint::with_secret_source(config, secrets),
            vms: BTreeMap::new(),
            events: Vec::new(),
        }
    }

    fn drain(&mut self) {
        while let Some(event) = self.endpoint.poll_event() {
            self.events.push(event);
        }
    }

    /// A VM connects and runs its handshake.
    fn connect(&mut self, label: &'static str, mut config: VmConfig) -> SessionId {
        config.com_port_delay = None;
        let id = self.endpoint.connect(label);
        let vm = Vm {
            session: VmSession::new(self.now, config),
            rx: Vec::new(),
            events: Vec::new(),
            open: true,
        };
        self.vms.insert(id, vm);
        self.run();
        id
    }

    /// Moves bytes both ways until every open connection is quiet.
    fn run(&mut self) {
        for _ in 0..1000 {
            let mut moved = false;
            for (&id, vm) in self.vms.iter_mut().filter(|(_, vm)| vm.open) {
                while let Some(bytes) = vm.session.poll_transmit() {
                    moved = true;
                    self.endpoint.handle_input(self.now, id, &bytes);
                }
                while let Some(event) = self.endpoint.poll_event() {
                    self.events.push(event);
                }
                while let Some(bytes) = self.endpoint.poll_transmit(id) {
                    moved = true;
                    vm.session.handle_input(self.now, &bytes);
                }
                while let Some(event) = vm.session.poll_event() {
                    if let VmEvent::Data(data) = &event {
                        vm.rx.extend_from_slice(data);
                    }
                    vm.events.push(event);
                }
            }
            // Writes queued on another connection than the one read (a move) go out next.
            if !moved {
                return;
            }
        }
        panic!("no quiescence");
    }

    fn vm(&mut self, id: SessionId) -> &mut Vm {
        self.vms.get_mut(&id).unwrap()
    }

    /// The events since the last call, without the handshake's chatter (option changes,
    /// KNOWN-SUBOPTIONS, DO-PROXY, identification), which other tests check.
    fn take(&mut self) -> Vec<Event> {
        self.drain();
        std::mem::take(&mut self.events)
            .into_iter()
            .filter(|e| {
                !matches!(
                    e,
                    EndpointEvent::OptionChanged { .. }
                        | EndpointEvent::KnownSuboptions { .. }
                        | EndpointEvent::ProxyRequested { .. }
                        | EndpointEvent::Identified { .. }
                )
            })
            .collect()
    }

    /// Advances the clock, firing the endpoint's timers, and runs.
    fn advance(&mut self, by: Duration) {
        self.now += by;
        if self.endpoint.poll_timeout().is_some_and(|t| t <= self.now) {
            self.endpoint.handle_timeout(self.now);
        }
        self.drain();
        self.run();
    }

    /// The VM side of `id` closes (FIN after everything it wrote).
    fn fin(&mut self, id: SessionId) -> Vec<Event> {
        self.run();
        self.vm(id).open = false;
        self.endpoint.handle_close(self.now, id);
        self.run();
        self.take()
    }

    /// `id`'s VM starts a vMotion; returns the events it caused.
    fn begin(&mut self, id: SessionId) -> Vec<Event> {
        self.vm(id).session.begin_vmotion(&hex(SEQ));
        self.run();
        self.take()
    }

    fn goahead_key(&mut self, id: SessionId) -> VmotionKey {
        self.vm(id)
            .events
            .iter()
            .rev()
            .find_map(|e| match e {
                VmEvent::VmotionGoahead { key } => Some(key.clone()),
                _ => None,
            })
            .unwrap()
    }

    /// A source VM, connected and ready.
    fn source(&mut self, label: &'static str) -> SessionId {
        let id = self.connect(label, source_vm_config());
        assert_eq!(self.take(), vec![EndpointEvent::Ready { conn: id }]);
        id
    }
}

fn seq() -> Bytes {
    Bytes::from(hex(SEQ))
}

fn key() -> VmotionKey {
    VmotionKey::new(&hex(SEQ), &hex(SECRET))
}

fn dest_config(key: &VmotionKey) -> VmConfig {
    let mut config = source_vm_config();
    config.role = VmRole::Destination {
        sequence: Bytes::copy_from_slice(key.sequence().unwrap()),
        secret: Bytes::copy_from_slice(key.secret().unwrap()),
    };
    config
}

fn goahead(net: &Net, conn: SessionId) -> Event {
    EndpointEvent::BeginAnswered {
        conn,
        sequence: seq(),
        outcome: BeginOutcome::GoAhead {
            key: key(),
            deadline: net.now + TIMEOUT,
        },
    }
}

fn peer_ok(conn: SessionId, source: SessionId) -> Event {
    EndpointEvent::PeerAnswered {
        conn,
        key: key(),
        outcome: ClaimOutcome::Accepted { source },
    }
}

fn manual(begin: Answer, peer: Answer) -> EndpointConfig {
    EndpointConfig {
        begin,
        peer,
        ..EndpointConfig::default()
    }
}

#[test]
fn ready_once_with_the_vc_uuid_and_an_accepted_do_proxy() {
    let mut net = Net::new(EndpointConfig::default());
    let id = net.connect("vm", source_vm_config());
    net.drain();
    let events: Vec<Event> = std::mem::take(&mut net.events)
        .into_iter()
        .filter(|e| !matches!(e, EndpointEvent::OptionChanged { .. }))
        .collect();
    let uuid = VmUuid::from_uuid(common::capture_uuid());
    let mut identity = Identity {
        vc_uuid: Some(uuid.clone()),
        ..Identity::default()
    };
    let identified = |identity: &Identity| EndpointEvent::Identified {
        conn: id,
        identity: Box::new(identity.clone()),
    };
    let mut expected = vec![
        EndpointEvent::KnownSuboptions {
            conn: id,
            commands: ESXI_KNOWN_SUBOPTIONS.to_vec(),
        },
        EndpointEvent::ProxyRequested {
            conn: id,
            request: ProxyRequest {
                direction: Direction::Server,
                service_uri: Bytes::from_static(b"vSPC.py"),
                accepted: true,
            },
        },
        identified(&identity),
        EndpointEvent::Ready { conn: id },
    ];
    identity.name = Some(VmName::from("vm-00000"));
    expected.push(identified(&identity));
    identity.bios_uuid = Some(uuid.clone());
    expected.push(identified(&identity));
    identity.location_uuid = Some(uuid);
    expected.push(identified(&identity));
    assert_eq!(events, expected);

    // Another DO-PROXY and a rename do not make it ready again.
    net.vm(id)
        .session
        .send_raw_message(&Message::VmName(VmName::from("renamed")));
    net.vm(id).session.send_raw_message(&Message::DoProxy {
        direction: Direction::Server,
        service_uri: Bytes::from_static(b"vSPC.py"),
    });
    net.run();
    assert!(!net
        .take()
        .iter()
        .any(|e| matches!(e, EndpointEvent::Ready { .. })));

    // A refused DO-PROXY never makes a connection ready.
    let mut refused = Net::new(EndpointConfig {
        proxy: std::sync::Arc::new(ProxyConfig {
            service_policy: ServicePolicy::refuse_all(),
            ..ProxyConfig::default()
        }),
        ..EndpointConfig::default()
    });
    refused.connect("refused", source_vm_config());
    assert_eq!(refused.take(), vec![]);
}

/// A whole vMotion: client data typed in every phase reaches the destination byte for byte,
/// in order; the old source id keeps working until the source leaves.
fn vmotion(fin_before_complete: bool) {
    let mut net = Net::new(EndpointConfig::default());
    let src = net.source("src");
    assert_eq!(net.endpoint.send_data(src, b"<before>"), Ok(src));
    assert_eq!(net.begin(src), vec![goahead(&net, src)]);
    assert_eq!(net.goahead_key(src), key());
    // From GOAHEAD on, client data is held (bytes the telnet layer must escape included).
    assert_eq!(net.endpoint.send_data(src, b"<1 \xff\xf0>"), Ok(src));
    let dest = net.connect("dest", dest_config(&key()));
    assert_eq!(net.take(), vec![peer_ok(dest, src)]);
    assert!(net
        .vm(dest)
        .events
        .contains(&VmEvent::PeerAccepted { sequence: seq() }));
    assert_eq!(net.endpoint.send_data(src, b"<2 \r\n\x00>"), Ok(src));
    let mut held = b"<1 \xff\xf0><2 \r\n\x00>".to_vec();
    if fin_before_complete {
        assert_eq!(
            net.fin(src),
            vec![EndpointEvent::SourceClosed {
                conn: src,
                peer: Some(dest)
            }]
        );
        // Kept while the VM is in transit, still holding.
        assert!(net.endpoint.session(src).unwrap().is_closed());
        assert_eq!(net.endpoint.send_data(src, b"<3>"), Ok(src));
        held.extend_from_slice(b"<3>");
    }
    assert!(net.vm(dest).rx.is_empty());
    assert!(net.vm(dest).session.complete_vmotion());
    net.run();
    let moved = EndpointEvent::Moved {
        from: src,
        to: dest,
        sequence: seq(),
        replayed: held.len(),
    };
    let gone = EndpointEvent::Closed {
        conn: src,
        reason: CloseReason::MovedAway { to: dest },
        data: "src",
    };
    if fin_before_complete {
        assert_eq!(net.take(), vec![moved, gone]);
        assert_eq!(
            net.endpoint.send_data(src, b"x"),
            Err(EndpointSendError::UnknownConnection(src))
        );
    } else {
        assert_eq!(net.take(), vec![moved]);
        // The old source id follows the VM to its new connection.
        assert_eq!(net.endpoint.send_data(src, b"<via old id>"), Ok(dest));
        held.extend_from_slice(b"<via old id>");
        net.run();
        assert_eq!(net.fin(src), vec![gone]);
    }
    assert_eq!(net.endpoint.send_data(dest, b"<after>"), Ok(dest));
    held.extend_from_slice(b"<after>");
    net.run();
    assert_eq!(net.vm(dest).rx, held, "held data first, byte for byte");
    assert_eq!(net.vm(src).rx, b"<before>");
    // The VM's output now comes from the destination.
    net.vm(dest).session.send_data(b"out");
    net.run();
    assert_eq!(
        net.take(),
        vec![EndpointEvent::Data {
            conn: dest,
            bytes: Bytes::from_static(b"out")
        }]
    );
    assert_eq!(net.endpoint.coordinator().pending_len(), 0);
    assert_eq!(net.endpoint.len(), 1);
    assert_eq!(net.endpoint.poll_timeout(), None);
    assert_eq!(
        net.endpoint.session(dest).unwrap().migrated_from(),
        Some(src)
    );
}

#[test]
fn vmotion_with_the_source_fin_before_complete() {
    vmotion(true);
}

#[test]
fn vmotion_with_the_source_fin_after_complete() {
    vmotion(false);
}

#[test]
fn abort_releases_held_data_to_the_source_and_forgets_the_key() {
    let mut net = Net::new(EndpointConfig::default());
    let src = net.source("src");
    assert_eq!(net.begin(src), vec![goahead(&net, src)]);
    net.endpoint.send_data(src, b"typed").unwrap();
    net.vm(src).session.abort_vmotion();
    net.run();
    assert_eq!(
        net.take(),
        vec![EndpointEvent::VmotionAborted {
            conn: src,
            sequence: seq(),
            released: 5
        }]
    );
    assert_eq!(net.vm(src).rx, b"typed");
    assert_eq!(net.endpoint.coordinator().pending_len(), 0);
    assert_eq!(net.endpoint.poll_timeout(), None);
    // A destination arriving late is refused.
    let late = net.connect("late", dest_config(&key()));
    assert_eq!(
        net.take(),
        vec![EndpointEvent::PeerAnswered {
            conn: late,
            key: key(),
            outcome: ClaimOutcome::Rejected(RejectReason::UnknownKey)
        }]
    );
    assert!(net.vm(late).events.contains(&VmEvent::PeerRejected));
}

#[test]
fn expiry_with_the_source_open_releases_the_data_to_the_vm() {
    let mut net = Net::new(EndpointConfig::default());
    let src = net.source("src");
    assert_eq!(net.begin(src), vec![goahead(&net, src)]);
    let deadline = net.now + TIMEOUT;
    assert_eq!(net.endpoint.poll_timeout(), Some(deadline));
    net.endpoint.send_data(src, b"wait").unwrap();
    net.advance(TIMEOUT - Duration::from_millis(1));
    assert_eq!(net.take(), vec![]);
    assert!(net.vm(src).rx.is_empty());
    net.advance(Duration::from_millis(1));
    assert_eq!(
        net.take(),
        vec![EndpointEvent::VmotionExpired {
            conn: src,
            sequence: seq(),
            released: 4
        }]
    );
    assert_eq!(net.vm(src).rx, b"wait");
    assert_eq!(net.endpoint.poll_timeout(), None);
    assert_eq!(net.endpoint.send_data(src, b"!"), Ok(src));
    net.run();
    assert_eq!(net.vm(src).rx, b"wait!");
}

#[test]
fn expiry_with_the_source_closed_reports_the_vm_gone() {
    let mut net = Net::new(EndpointConfig::default());
    let src = net.source("src");
    assert_eq!(net.begin(src), vec![goahead(&net, src)]);
    net.endpoint.send_data(src, b"lost").unwrap();
    // A destination claims it, then neither COMPLETE nor ABORT ever comes.
    let dest = net.connect("dest", dest_config(&key()));
    assert_eq!(net.take(), vec![peer_ok(dest, src)]);
    assert_eq!(
        net.fin(src),
        vec![EndpointEvent::SourceClosed {
            conn: src,
            peer: Some(dest)
        }]
    );
    assert_eq!(net.endpoint.len(), 2);
    net.advance(TIMEOUT);
    assert_eq!(
        net.take(),
        vec![
            EndpointEvent::VmotionExpired {
                conn: src,
                sequence: seq(),
                released: 4
            },
            EndpointEvent::Closed {
                conn: src,
                reason: CloseReason::VmotionExpired,
                data: "src"
            }
        ]
    );
    assert!(net.endpoint.session(src).is_none());
    assert_eq!(net.endpoint.coordinator().pending_len(), 0);
    // The destination's COMPLETE now switches nothing, and a second one is out of sequence.
    net.vm(dest).session.complete_vmotion();
    net.run();
    assert_eq!(
        net.take(),
        vec![EndpointEvent::CompleteRefused {
            conn: dest,
            outcome: CompleteOutcome::NotPending
        }]
    );
    net.vm(dest).session.complete_vmotion();
    net.run();
    assert_eq!(
        net.take(),
        vec![EndpointEvent::ProtocolError {
            conn: dest,
            error: ProtocolError::OutOfSequence(Command::VmotionComplete)
        }]
    );
    assert!(net.vm(dest).rx.is_empty());
}

#[test]
fn manual_begin_is_answered_when_the_application_says() {
    let mut net = Net::new(manual(Answer::Manual, Answer::Automatic));
    let src = net.source("src");
    assert_eq!(
        net.begin(src),
        vec![EndpointEvent::BeginRequested {
            conn: src,
            sequence: seq()
        }]
    );
    // Unanswered: nothing sent, nothing held.
    assert!(!net
        .vm(src)
        .events
        .iter()
        .any(|e| matches!(e, VmEvent::VmotionGoahead { .. })));
    net.endpoint.send_data(src, b"now").unwrap();
    net.run();
    assert_eq!(net.vm(src).rx, b"now");
    net.advance(Duration::from_secs(1));
    net.endpoint.answer_begin(net.now, src, true);
    net.run();
    assert_eq!(net.take(), vec![goahead(&net, src)]);
    assert_eq!(net.goahead_key(src), key());
    // A second answer finds no request.
    net.endpoint.answer_begin(net.now, src, true);
    assert_eq!(net.take(), vec![]);
    // The next BEGIN is vetoed by the application.
    net.vm(src).session.begin_vmotion(&hex("01020304"));
    net.run();
    let sequence = Bytes::from(hex("01020304"));
    assert_eq!(
        net.take(),
        vec![EndpointEvent::BeginRequested {
            conn: src,
            sequence: sequence.clone()
        }]
    );
    net.endpoint.answer_begin(net.now, src, false);
    net.run();
    assert_eq!(
        net.take(),
        vec![EndpointEvent::BeginAnswered {
            conn: src,
            sequence: sequence.clone(),
            outcome: BeginOutcome::NotNow(NotNowReason::Vetoed)
        }]
    );
    assert!(net
        .vm(src)
        .events
        .contains(&VmEvent::VmotionNotNow { sequence }));
}

#[test]
fn manual_begin_answered_after_the_source_closed_starts_nothing() {
    let mut net = Net::new(manual(Answer::Manual, Answer::Automatic));
    let src = net.source("src");
    net.begin(src);
    net.endpoint.answer_begin(net.now, src, true);
    assert_eq!(net.take(), vec![goahead(&net, src)]);
    // A second BEGIN, then the source closes before the application answers it.
    net.vm(src).session.begin_vmotion(&hex("01020304"));
    net.run();
    assert_eq!(net.take().len(), 1);
    assert_eq!(
        net.fin(src),
        vec![EndpointEvent::SourceClosed {
            conn: src,
            peer: None
        }]
    );
    net.endpoint.answer_begin(net.now, src, true);
    assert_eq!(net.take(), vec![]);
    // The first vMotion still expires, and the closed source leaves with it.
    net.advance(TIMEOUT);
    assert_eq!(
        net.take(),
        vec![
            EndpointEvent::VmotionExpired {
                conn: src,
                sequence: seq(),
                released: 0
            },
            EndpointEvent::Closed {
                conn: src,
                reason: CloseReason::VmotionExpired,
                data: "src"
            }
        ]
    );
    assert!(net.endpoint.is_empty());
    assert_eq!(net.endpoint.coordinator().pending_len(), 0);
}

#[test]
fn manual_peer_is_answered_when_the_application_says_or_never() {
    let mut net = Net::new(manual(Answer::Automatic, Answer::Manual));
    let src = net.source("src");
    assert_eq!(net.begin(src), vec![goahead(&net, src)]);
    let dest = net.connect("dest", dest_config(&key()));
    assert_eq!(
        net.take(),
        vec![EndpointEvent::PeerRequested {
            conn: dest,
            key: key()
        }]
    );
    assert!(!net
        .vm(dest)
        .events
        .iter()
        .any(|e| matches!(e, VmEvent::PeerAccepted { .. })));
    net.endpoint.answer_peer(net.now, dest);
    net.run();
    assert_eq!(net.take(), vec![peer_ok(dest, src)]);
    assert!(net
        .vm(dest)
        .events
        .contains(&VmEvent::PeerAccepted { sequence: seq() }));
    net.endpoint.answer_peer(net.now, dest);
    assert_eq!(net.take(), vec![]);

    // Never answered: the destination gives up (closes) and the vMotion expires.
    let mut net = Net::new(manual(Answer::Automatic, Answer::Manual));
    let src = net.source("src");
    net.begin(src);
    let dest = net.connect("dest", dest_config(&key()));
    assert_eq!(net.take().len(), 1);
    assert_eq!(
        net.fin(dest),
        vec![EndpointEvent::Closed {
            conn: dest,
            reason: CloseReason::Disconnected,
            data: "dest"
        }]
    );
    net.endpoint.answer_peer(net.now, dest);
    net.advance(TIMEOUT);
    assert_eq!(
        net.take(),
        vec![EndpointEvent::VmotionExpired {
            conn: src,
            sequence: seq(),
            released: 0
        }]
    );
}

#[test]
fn manual_peer_answered_after_an_early_complete_moves_at_once() {
    let mut net = Net::new(manual(Answer::Automatic, Answer::Manual));
    let src = net.source("src");
    assert_eq!(net.begin(src), vec![goahead(&net, src)]);
    net.endpoint.send_data(src, b"held").unwrap();
    let dest = net.connect("dest", dest_config(&key()));
    // COMPLETE pipelined behind PEER, before any PEER-OK.
    net.vm(dest).session.complete_vmotion();
    net.run();
    assert_eq!(
        net.take(),
        vec![EndpointEvent::PeerRequested {
            conn: dest,
            key: key()
        }]
    );
    net.endpoint.answer_peer(net.now, dest);
    net.run();
    assert_eq!(
        net.take(),
        vec![
            peer_ok(dest, src),
            EndpointEvent::Moved {
                from: src,
                to: dest,
                sequence: seq(),
                replayed: 4
            }
        ]
    );
    assert_eq!(net.vm(dest).rx, b"held");
}

#[test]
fn close_waits_for_the_queued_bytes() {
    let mut net = Net::new(EndpointConfig::default());
    let id = net.source("vm");
    assert!(!net.endpoint.wants_close(id));
    net.endpoint.send_data(id, b"bye").unwrap();
    net.endpoint.close(id);
    assert_eq!(net.endpoint.pending_transmit_len(id), 3);
    assert!(!net.endpoint.wants_close(id), "bytes still queued");
    assert_eq!(
        net.endpoint.poll_transmit(id),
        Some(Bytes::from_static(b"bye"))
    );
    assert!(net.endpoint.wants_close(id));
    // The application shuts the socket down and reports it.
    net.vm(id).open = false;
    net.endpoint.handle_close(net.now, id);
    assert_eq!(
        net.take(),
        vec![EndpointEvent::Closed {
            conn: id,
            reason: CloseReason::Disconnected,
            data: "vm"
        }]
    );
    assert!(net.endpoint.wants_close(id), "gone");
    net.endpoint.handle_close(net.now, id);
    assert_eq!(net.take(), vec![]);

    // Closing a vMotion source keeps it in transit.
    let src = net.source("src");
    net.begin(src);
    net.endpoint.close(src);
    assert!(net.endpoint.wants_close(src));
    net.vm(src).open = false;
    net.endpoint.handle_close(net.now, src);
    assert_eq!(
        net.take(),
        vec![EndpointEvent::SourceClosed {
            conn: src,
            peer: None
        }]
    );
    assert!(net.endpoint.wants_close(src), "closed");
    assert_eq!(net.endpoint.data(src), Some(&"src"));
}

#[test]
fn unknown_connection_ids_are_no_ops() {
    let mut net = Net::new(manual(Answer::Manual, Answer::Manual));
    let id = net.source("vm");
    let unknown = SessionId(99);
    let now = net.now;
    let endpoint = &mut net.endpoint;
    endpoint.handle_input(now, unknown, &Bytes::from(hex("fffae82801020304fff0")));
    endpoint.handle_close(now, unknown);
    endpoint.close(unknown);
    endpoint.send_command(unknown, vspc_telnet::Command::Break);
    endpoint.send_com_port(
        unknown,
        &vspc_telnet::comport::ComPortMessage {
            origin: vspc_telnet::comport::Origin::Server,
            command: vspc_telnet::comport::ComPortCommand::SetBaudRate(9600),
        },
    );
    endpoint.answer_begin(now, unknown, true);
    endpoint.answer_peer(now, unknown);
    endpoint.shrink_to_fit(unknown);
    assert_eq!(endpoint.poll_transmit(unknown), None);
    assert_eq!(endpoint.pending_transmit_len(unknown), 0);
    assert!(endpoint.session(unknown).is_none());
    assert!(endpoint.data(unknown).is_none());
    assert!(endpoint.data_mut(unknown).is_none());
    assert!(endpoint.wants_close(unknown));
    assert_eq!(
        endpoint.send_data(unknown, b"x"),
        Err(EndpointSendError::UnknownConnection(unknown))
    );
    endpoint.handle_timeout(now + Duration::from_secs(3600));
    assert_eq!(endpoint.poll_event(), None);
    assert_eq!(endpoint.len(), 1);
    assert_eq!(endpoint.connections().collect::<Vec<_>>(), vec![id]);
    assert_eq!(endpoint.pending_transmit_len(id), 0);
    *endpoint.data_mut(id).unwrap() = "renamed";
    assert_eq!(endpoint.data(id), Some(&"renamed"));
}
