//! Property tests: chunking invariance, encode/decode round-trip, negotiation settles.

mod support;

use proptest::prelude::*;
use support::{decode_chunks, decode_whole, feed, own_telnet, push, split_at, Owned};
use vspc_telnet::consts::IAC;
use vspc_telnet::{
    encode_command, encode_data, encode_negotiation, encode_subnegotiation, Command, Decoder,
    OptionState, Policy, Side, Telnet, TelnetConfig, Verb,
};

/// Bytes rich in the values that matter to the state machine.
fn telnet_bytes() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        4 => any::<u8>(),
        2 => Just(IAC),
        1 => prop::sample::select(vec![0u8, 13, 10, 0x11, 240, 241, 250, 251, 252, 253, 254, 232]),
    ];
    prop::collection::vec(byte, 0..300)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn chunking_never_changes_the_events(
        input in telnet_bytes(),
        cuts in prop::collection::vec(0usize..300, 0..40),
        binary in any::<bool>(),
        limit in prop::sample::select(vec![0usize, 1, 3, 16, 16 * 1024]),
    ) {
        let mut whole = Decoder::with_max_subnegotiation(limit);
        whole.set_binary(binary);
        let expected = decode_chunks(&mut whole, [&input[..]]);
        let mut chunked = Decoder::with_max_subnegotiation(limit);
        chunked.set_binary(binary);
        prop_assert_eq!(&decode_chunks(&mut chunked, split_at(&input, &cuts)), &expected);
        let mut bytewise = Decoder::with_max_subnegotiation(limit);
        bytewise.set_binary(binary);
        prop_assert_eq!(&decode_chunks(&mut bytewise, input.chunks(1)), &expected);
    }

    #[test]
    fn data_never_contains_subnegotiation_bytes(payload in prop::collection::vec(any::<u8>(), 0..200)) {
        // Whatever the payload and the limit, data events only ever show the data around it.
        let mut wire = b"<".to_vec();
        encode_subnegotiation(232, &payload, &mut wire);
        wire.extend_from_slice(b">");
        for limit in [0, 10, 100, 1000] {
            let events = decode_chunks(&mut Decoder::with_max_subnegotiation(limit), [&wire[..]]);
            let data: Vec<u8> = events.iter().flat_map(|event| match event {
                Owned::Data(data) => data.clone(),
                _ => Vec::new(),
            }).collect();
            prop_assert_eq!(data, b"<>".to_vec());
        }
    }

    #[test]
    fn decode_of_encode_is_identity(items in prop::collection::vec(item(), 0..40), binary in any::<bool>()) {
        let mut wire = Vec::new();
        let mut expected = Vec::new();
        for item in &items {
            match item {
                Owned::Data(data) => encode_data(data, binary, &mut wire),
                Owned::Command(command) => encode_command(*command, &mut wire),
                Owned::Negotiation(verb, option) => encode_negotiation(*verb, *option, &mut wire),
                Owned::Subnegotiation(option, payload) => encode_subnegotiation(*option, payload, &mut wire),
                _ => unreachable!(),
            }
            if !matches!(item, Owned::Data(data) if data.is_empty()) {
                push(&mut expected, item.clone());
            }
        }
        prop_assert_eq!(decode_whole(&wire, binary), expected);
    }
}

fn item() -> impl Strategy<Value = Owned> {
    let verb = prop::sample::select(vec![Verb::Will, Verb::Wont, Verb::Do, Verb::Dont]);
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..50).prop_map(Owned::Data),
        any::<u8>()
            .prop_filter_map("structural byte", Command::from_code)
            .prop_map(Owned::Command),
        (verb, any::<u8>()).prop_map(|(verb, option)| Owned::Negotiation(verb, option)),
        (any::<u8>(), prop::collection::vec(any::<u8>(), 0..50))
            .prop_map(|(option, payload)| Owned::Subnegotiation(option, payload)),
    ]
}

#[derive(Debug, Clone)]
enum Action {
    Request {
        a_side: bool,
        side: Side,
        option: u8,
        enable: bool,
    },
    Deliver {
        to_a: bool,
        cut: usize,
    },
}

fn action() -> impl Strategy<Value = Action> {
    let side = prop::sample::select(vec![Side::Local, Side::Remote]);
    prop_oneof![
        (any::<bool>(), side, 0u8..4, any::<bool>()).prop_map(|(a_side, side, option, enable)| {
            Action::Request {
                a_side,
                side,
                option,
                enable,
            }
        }),
        (any::<bool>(), 0usize..8).prop_map(|(to_a, cut)| Action::Deliver { to_a, cut }),
    ]
}

fn policy(bits: u8) -> Policy {
    (0u8..4).fold(Policy::new(), |policy, option| {
        let policy = if bits & (1 << option) != 0 {
            policy.accept_local(option)
        } else {
            policy
        };
        if bits & (16 << option) != 0 {
            policy.accept_remote(option)
        } else {
            policy
        }
    })
}

/// Moves everything `from` has queued into the link toward the other side.
fn pump(from: &mut Telnet, link: &mut Vec<u8>) {
    while let Some(bytes) = from.poll_transmit() {
        link.extend_from_slice(&bytes);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Two endpoints with arbitrary (conflicting) policies, requests fired at arbitrary times and
    /// bytes delivered in arbitrary pieces: the exchange always settles within a bound, both
    /// agree on every option, and negotiation bytes stay proportional to the requests made.
    #[test]
    fn negotiation_settles_and_both_sides_agree(
        policy_a in any::<u8>(),
        policy_b in any::<u8>(),
        actions in prop::collection::vec(action(), 0..60),
    ) {
        let mut a = Telnet::new(TelnetConfig { policy: policy(policy_a), ..TelnetConfig::default() });
        let mut b = Telnet::new(TelnetConfig { policy: policy(policy_b), ..TelnetConfig::default() });
        let (mut a_to_b, mut b_to_a) = (Vec::new(), Vec::new());
        let mut requests = 0usize;
        let mut sink = Vec::new();
        for action in &actions {
            match action {
                Action::Request { a_side, side, option, enable } => {
                    requests += 1;
                    if *a_side { a.request(*side, *option, *enable) } else { b.request(*side, *option, *enable) }
                }
                Action::Deliver { to_a, cut } => {
                    let (link, endpoint) = if *to_a { (&mut b_to_a, &mut a) } else { (&mut a_to_b, &mut b) };
                    let cut = (*cut).min(link.len());
                    let chunk: Vec<u8> = link.drain(..cut).collect();
                    feed(endpoint, &chunk, &mut sink);
                }
            }
            pump(&mut a, &mut a_to_b);
            pump(&mut b, &mut b_to_a);
        }
        // Drain both links until quiet; every round must shrink the remaining work.
        let mut total = 0usize;
        for _round in 0..64 {
            if a_to_b.is_empty() && b_to_a.is_empty() {
                break;
            }
            total += a_to_b.len() + b_to_a.len();
            let to_b: Vec<u8> = std::mem::take(&mut a_to_b);
            let to_a: Vec<u8> = std::mem::take(&mut b_to_a);
            feed(&mut b, &to_b, &mut sink);
            feed(&mut a, &to_a, &mut sink);
            pump(&mut a, &mut a_to_b);
            pump(&mut b, &mut b_to_a);
        }
        prop_assert!(a_to_b.is_empty() && b_to_a.is_empty(), "negotiation did not settle");
        // Each request causes at most a request, a reply, a queued reverse and its reply.
        prop_assert!(total <= 3 * 4 * (requests + 1), "{total} bytes for {requests} requests");
        for option in 0u8..4 {
            for (side, other) in [(Side::Local, Side::Remote), (Side::Remote, Side::Local)] {
                let state_a = a.option_state(side, option);
                let state_b = b.option_state(other, option);
                prop_assert!(matches!(state_a, OptionState::Yes | OptionState::No), "{state_a:?}");
                prop_assert_eq!(state_a, state_b, "option {} {:?}", option, side);
            }
        }
        prop_assert!(sink.iter().all(|event| matches!(event, Owned::OptionChanged(..))));
    }
}

#[test]
fn binary_switches_at_the_exact_byte_where_it_was_negotiated() {
    let policy = Policy::new().accept_remote(0);
    let mut telnet = Telnet::new(TelnetConfig {
        policy,
        ..TelnetConfig::default()
    });
    let mut events = Vec::new();
    // Before WILL BINARY a CR NUL is NVT padding; after it, data.
    feed(&mut telnet, b"a\r\0\xff\xfb\x00b\r\0", &mut events);
    assert_eq!(
        events,
        vec![
            Owned::Data(b"a\r".to_vec()),
            Owned::OptionChanged(Side::Remote, 0, true),
            Owned::Data(b"b\r\0".to_vec()),
        ]
    );
    // WONT BINARY: back to NVT for the rest of the same chunk.
    let mut events = Vec::new();
    feed(&mut telnet, b"\xff\xfc\x00c\r\0", &mut events);
    assert_eq!(
        events,
        vec![
            Owned::OptionChanged(Side::Remote, 0, false),
            Owned::Data(b"c\r".to_vec())
        ]
    );
    assert_eq!(
        telnet.poll_transmit().as_deref(),
        Some(&b"\xff\xfd\x00\xff\xfe\x00"[..])
    );
}

#[test]
fn send_data_uses_nvt_rules_until_we_perform_binary() {
    let policy = Policy::new().accept_local(0);
    let mut telnet = Telnet::new(TelnetConfig {
        policy,
        ..TelnetConfig::default()
    });
    telnet.send_data(b"\r\xff");
    assert_eq!(
        telnet.poll_transmit().as_deref(),
        Some(&b"\r\0\xff\xff"[..])
    );
    telnet.decode(b"\xff\xfd\x00", |event| {
        assert_eq!(
            own_telnet(event),
            Owned::OptionChanged(Side::Local, 0, true)
        );
    });
    telnet.send_data(b"\r\xff");
    assert_eq!(
        telnet.poll_transmit().as_deref(),
        Some(&b"\xff\xfb\x00\r\xff\xff"[..])
    );
}

/// RFC 1143 section 7's table for one option on the remote side: after the setup steps
/// (their output discarded), the last step must leave this state and send exactly these bytes.
#[test]
fn q_method_transitions_for_the_remote_side() {
    #[derive(Clone, Copy, Debug)]
    enum Step {
        Will,
        Wont,
        Request(bool),
    }
    use OptionState::{No, WantNo, WantYes, Yes};
    use Step::{Request, Will, Wont};
    const DO: &[u8] = &[IAC, 253, 7];
    const DONT: &[u8] = &[IAC, 254, 7];
    const NOTHING: &[u8] = &[];
    /// (policy accepts, setup, last step, state after, bytes sent by the last step)
    type Row = (bool, &'static [Step], Step, OptionState, &'static [u8]);
    let rows: &[Row] = &[
        (true, &[], Will, Yes, DO),
        (false, &[], Will, No, DONT),
        (false, &[Will], Wont, No, NOTHING),
        (true, &[Will], Will, Yes, NOTHING),
        (true, &[Will], Wont, No, DONT),
        (false, &[], Request(true), WantYes, DO),
        (false, &[Request(true)], Will, Yes, NOTHING),
        (false, &[Request(true)], Wont, No, NOTHING),
        (false, &[Request(true)], Request(false), WantYes, NOTHING),
        (false, &[Request(true), Request(false)], Will, WantNo, DONT),
        (
            false,
            &[Request(true), Request(false), Will],
            Wont,
            No,
            NOTHING,
        ),
        (true, &[Will], Request(false), WantNo, DONT),
        (true, &[Will, Request(false)], Wont, No, NOTHING),
        (true, &[Will, Request(false)], Will, No, NOTHING),
        (
            true,
            &[Will, Request(false)],
            Request(true),
            WantNo,
            NOTHING,
        ),
        (
            true,
            &[Will, Request(false), Request(true)],
            Wont,
            WantYes,
            DO,
        ),
        (
            true,
            &[Will, Request(false), Request(true)],
            Will,
            Yes,
            NOTHING,
        ),
        (true, &[], Request(false), No, NOTHING),
        (true, &[Will], Request(true), Yes, NOTHING),
    ];
    for &(accepts, setup, last, state, bytes) in rows {
        let policy = if accepts {
            Policy::new().accept_remote(7)
        } else {
            Policy::new()
        };
        let mut telnet = Telnet::new(TelnetConfig {
            policy,
            ..TelnetConfig::default()
        });
        let mut run = |step: Step| {
            match step {
                Will => feed(&mut telnet, &[IAC, 251, 7], &mut Vec::new()),
                Wont => feed(&mut telnet, &[IAC, 252, 7], &mut Vec::new()),
                Request(enable) => telnet.request(Side::Remote, 7, enable),
            }
            telnet
                .poll_transmit()
                .map(|b| b.to_vec())
                .unwrap_or_default()
        };
        for &step in setup {
            run(step);
        }
        let sent = run(last);
        let row = format!("accepts={accepts} setup={setup:?} last={last:?}");
        assert_eq!(telnet.option_state(Side::Remote, 7), state, "{row}");
        assert_eq!(sent, bytes, "{row}");
    }
}

#[test]
fn local_side_answers_do_and_dont_by_policy() {
    let mut t = Telnet::new(TelnetConfig {
        policy: Policy::new().accept_local(3),
        ..TelnetConfig::default()
    });
    let mut events = Vec::new();
    feed(&mut t, b"\xff\xfd\x03\xff\xfd\x25\xff\xfe\x03", &mut events);
    assert_eq!(
        events,
        vec![
            Owned::OptionChanged(Side::Local, 3, true),
            Owned::OptionChanged(Side::Local, 3, false)
        ]
    );
    assert_eq!(
        t.poll_transmit().as_deref(),
        Some(&b"\xff\xfb\x03\xff\xfc\x25\xff\xfc\x03"[..])
    );
}

/// A peer as most pre-RFC 1143 ones are: it follows RFC 854 (answers only what would change
/// an option's state, by its policy, and tracks what it believes is in effect) but has no
/// queue and no WANT states.
struct Rfc854Peer {
    local: [bool; 4],
    remote: [bool; 4],
    accept: u8,
}

impl Rfc854Peer {
    fn answer(&mut self, input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        Decoder::new().decode(input, |event| {
            let vspc_telnet::Event::Negotiation { verb, option } = event else {
                return;
            };
            let index = usize::from(option);
            let (state, positive, accepted, yes, no) = match verb {
                Verb::Do => (
                    &mut self.local[index],
                    true,
                    self.accept & (1 << option) != 0,
                    Verb::Will,
                    Verb::Wont,
                ),
                Verb::Dont => (&mut self.local[index], false, false, Verb::Will, Verb::Wont),
                Verb::Will => (
                    &mut self.remote[index],
                    true,
                    self.accept & (16 << option) != 0,
                    Verb::Do,
                    Verb::Dont,
                ),
                Verb::Wont => (&mut self.remote[index], false, false, Verb::Do, Verb::Dont),
            };
            if *state == positive {
                return;
            }
            if positive && !accepted {
                encode_negotiation(no, option, &mut out);
                return;
            }
            *state = positive;
            encode_negotiation(if positive { yes } else { no }, option, &mut out);
        });
        out
    }
}

fn verb() -> impl Strategy<Value = Verb> {
    prop::sample::select(vec![Verb::Will, Verb::Wont, Verb::Do, Verb::Dont])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// The RFC 1143 guarantee, checked on every step of an arbitrary (hostile) stream of verbs
    /// and application requests: a verb that confirms what we already hold, or answers what we
    /// asked, gets no reply. Replies to replies are what makes negotiation loop.
    #[test]
    fn never_answers_an_answer(
        ours in any::<u8>(),
        steps in prop::collection::vec(
            prop_oneof![
                (verb(), 0u8..4).prop_map(|(verb, option)| (Some(verb), option, Side::Local, false)),
                (prop::sample::select(vec![Side::Local, Side::Remote]), 0u8..4, any::<bool>())
                    .prop_map(|(side, option, enable)| (None, option, side, enable)),
            ],
            0..80,
        ),
    ) {
        let mut telnet = Telnet::new(TelnetConfig { policy: policy(ours), ..TelnetConfig::default() });
        for (verb, option, side, enable) in steps {
            let Some(verb) = verb else {
                telnet.request(side, option, enable);
                telnet.poll_transmit();
                continue;
            };
            let (side, positive) = match verb {
                Verb::Will => (Side::Remote, true),
                Verb::Wont => (Side::Remote, false),
                Verb::Do => (Side::Local, true),
                Verb::Dont => (Side::Local, false),
            };
            let before = telnet.option_state(side, option);
            let queued_reverse = {
                // Only WANT states with the opposite bit set may answer an answer, by sending
                // the queued reverse request; they are recognisable by the reply's direction.
                matches!(before, OptionState::WantYes | OptionState::WantNo)
            };
            feed(&mut telnet, &[IAC, verb.code(), option], &mut Vec::new());
            let sent = telnet.poll_transmit().map(|b| b.to_vec()).unwrap_or_default();
            let confirms = matches!(
                (before, positive),
                (OptionState::Yes, true) | (OptionState::No, false)
            );
            if confirms {
                prop_assert!(sent.is_empty(), "{before:?} answered {verb:?} with {sent:02x?}");
            }
            if queued_reverse && !sent.is_empty() {
                // The queued reverse: the opposite of what the peer just said.
                let reply = Verb::from_code(sent[1]).unwrap();
                let reply_positive = matches!(reply, Verb::Will | Verb::Do);
                prop_assert_eq!(reply_positive, !positive);
                prop_assert!(matches!(telnet.option_state(side, option), OptionState::WantYes | OptionState::WantNo));
            }
            prop_assert!(sent.len() <= 3);
        }
    }

    /// Against a peer without the Q method, with unsolicited opening offers and our own
    /// requests in flight, the exchange settles.
    #[test]
    fn negotiation_with_an_rfc854_peer_settles(
        ours in any::<u8>(),
        theirs in any::<u8>(),
        requests in prop::collection::vec((prop::sample::select(vec![Side::Local, Side::Remote]), 0u8..4, any::<bool>()), 0..20),
        opening in prop::collection::vec((verb(), 0u8..4), 0..10),
    ) {
        let mut telnet = Telnet::new(TelnetConfig { policy: policy(ours), ..TelnetConfig::default() });
        let mut peer = Rfc854Peer { local: [false; 4], remote: [false; 4], accept: theirs };
        let mut to_us = Vec::new();
        // An RFC 854 peer has no WANT states, so it cannot retract a request before the
        // answer without inviting a loop (RFC 1143 section 5 shows it): one verb per option
        // and side in its opening.
        let mut seen = std::collections::HashSet::new();
        let opening: Vec<_> = opening
            .into_iter()
            .filter(|(verb, option)| seen.insert((matches!(verb, Verb::Will | Verb::Wont), *option)))
            .collect();
        for (verb, option) in &opening {
            encode_negotiation(*verb, *option, &mut to_us);
            let index = usize::from(*option);
            match verb {
                Verb::Will => peer.local[index] = true,
                Verb::Wont => peer.local[index] = false,
                Verb::Do => peer.remote[index] = true,
                Verb::Dont => peer.remote[index] = false,
            }
        }
        for (side, option, enable) in &requests {
            telnet.request(*side, *option, *enable);
        }
        let mut rounds = 0;
        loop {
            let mut to_peer = Vec::new();
            feed(&mut telnet, &to_us, &mut Vec::new());
            pump(&mut telnet, &mut to_peer);
            if to_peer.is_empty() {
                break;
            }
            to_us = peer.answer(&to_peer);
            rounds += 1;
            prop_assert!(rounds < 16, "negotiation with an RFC 854 peer loops");
        }
    }
}

/// Two endpoints: `a` offers BINARY, `b` accepts or refuses. Returns them with `a`'s offer
/// delivered and `b`'s answer still in flight.
fn offer_binary(b_accepts: bool) -> (Telnet, Telnet, Vec<u8>) {
    let mut a = Telnet::new(TelnetConfig::default());
    let policy = if b_accepts {
        Policy::new().accept_remote(0)
    } else {
        Policy::new()
    };
    let mut b = Telnet::new(TelnetConfig {
        policy,
        ..TelnetConfig::default()
    });
    a.request(Side::Local, 0, true);
    let mut offer = Vec::new();
    pump(&mut a, &mut offer);
    feed(&mut b, &offer, &mut Vec::new());
    let mut answer = Vec::new();
    pump(&mut b, &mut answer);
    (a, b, answer)
}

#[test]
fn data_sent_while_our_binary_offer_is_unanswered_arrives_exactly() {
    for b_accepts in [true, false] {
        let (mut a, mut b, answer) = offer_binary(b_accepts);
        // The peer already decodes in its new mode; our data and a command cross its answer.
        a.send_data(b"a\rb\xff");
        a.send_command(Command::Nop);
        a.send_subnegotiation(232, &[0x51]);
        let mut early = Vec::new();
        pump(&mut a, &mut early);
        assert!(early.is_empty(), "sent before BINARY settled: {early:02x?}");
        feed(&mut a, &answer, &mut Vec::new());
        let mut late = Vec::new();
        pump(&mut a, &mut late);
        let mut events = Vec::new();
        feed(&mut b, &late, &mut events);
        assert_eq!(
            events,
            vec![
                Owned::Data(b"a\rb\xff".to_vec()),
                Owned::Command(Command::Nop),
                Owned::Subnegotiation(232, vec![0x51]),
            ],
            "peer accepts BINARY: {b_accepts}"
        );
    }
}

#[test]
fn an_application_can_stop_waiting_for_a_peer_that_never_answers() {
    let mut a = Telnet::new(TelnetConfig::default());
    a.request(Side::Local, 0, true);
    a.poll_transmit();
    a.send_data(b"menu\r\n");
    assert_eq!(a.poll_transmit(), None);
    assert_eq!(a.deferred_len(), 6);
    a.stop_waiting_for_binary();
    assert_eq!(a.poll_transmit().as_deref(), Some(&b"menu\r\n"[..]));
    a.send_data(b"x\r");
    assert_eq!(a.poll_transmit().as_deref(), Some(&b"x\r\0"[..]));
}
