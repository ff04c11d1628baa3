//! Chunking invariance: any split of the input gives the same events and the same bytes.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use proptest::prelude::*;
use vspc_proto::*;
use vspc_testkit::pair::{drain_proxy, ProxySeen};

fn run_proxy(chunks: &[&[u8]]) -> (Vec<ProxySeen>, Vec<u8>) {
    let now = t0();
    let mut session = ProxySession::new(SessionId(1), ProxyConfig::default());
    let (mut seen, mut out) = (Vec::new(), Vec::new());
    for chunk in chunks {
        session.handle_input(now, &Bytes::copy_from_slice(chunk));
        drain_proxy(&mut session, &mut seen, &mut out);
    }
    (seen, out)
}

fn cut<'a>(input: &'a [u8], points: &[usize]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = points.iter().map(|p| p % (input.len() + 1)).collect();
    points.sort_unstable();
    let mut chunks = Vec::new();
    let mut last = 0;
    for p in points {
        chunks.push(&input[last..p]);
        last = p;
    }
    chunks.push(&input[last..]);
    chunks
}

/// ESXi's handshake, then a mix of everything a VM may send (no vMotion: its answers come
/// from the coordinator, after the input).
fn rich_stream() -> Vec<u8> {
    let mut s = stream(BLOCK_A, true);
    s.extend(hex("00 11 ffff 0d 0a 0d 00 41"));
    s.extend(
        Message::Unknown {
            command: 0x99,
            payload: Bytes::from_static(b"\xff"),
        }
        .to_wire(),
    );
    s.extend(hex(
        "fff1 fff3 fffb99 fffa180001fff0 fffae8fff0 fffae84658fff0",
    ));
    s.extend(Message::VmName(VmName::new(&b"n\xff\xfe"[..])).to_wire());
    s.extend(hex("fffc e8 fffb e8")); // 232 off and on again: KNOWN-SUBOPTIONS-2 again
    s.extend(b"tail");
    s
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn proxy_session_is_chunking_invariant(points in proptest::collection::vec(any::<usize>(), 0..40)) {
        let input = rich_stream();
        let whole = run_proxy(&[&input]);
        let split = run_proxy(&cut(&input, &points));
        prop_assert_eq!(&whole, &split);
        prop_assert!(whole.0.iter().any(|s| matches!(s, ProxySeen::Other(e) if e.starts_with("Identified("))));
    }

    #[test]
    fn proxy_session_is_chunking_invariant_on_arbitrary_bytes(
        tail in proptest::collection::vec(
            prop_oneof![3 => any::<u8>(), 1 => Just(0xffu8), 1 => Just(0xf0u8), 1 => Just(0xe8u8), 1 => Just(0xfau8)],
            0..300,
        ),
        points in proptest::collection::vec(any::<usize>(), 0..30),
    ) {
        let mut input = stream(BLOCK_A, true);
        input.extend(tail);
        let whole = run_proxy(&[&input]);
        let split = run_proxy(&cut(&input, &points));
        prop_assert_eq!(whole, split);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// The whole system (handshake, identification, data both ways, a vMotion with FIN on
    /// either side of COMPLETE) delivers the same bytes whatever the segment size.
    #[test]
    fn whole_vmotion_is_chunking_invariant(chunk in 1usize..64, fin_first in any::<bool>()) {
        let mut world = World::new(EndpointConfig::default());
        world.chunk = chunk;
        let src = world.connect(source_vm_config());
        world.advance(Duration::from_millis(50));
        world.vm_send(src, b"a\xff\x00");
        world.client_send(b"1\xff\r");
        world.link(src).vm.begin_vmotion(b"\xff\xff\xf0\x00");
        world.run();
        let key = world.link(src).vm_events.iter().find_map(|e| match e {
            VmEvent::VmotionGoahead { key } => Some(key.clone()),
            _ => None,
        }).unwrap();
        world.client_send(b"2\xff");
        let mut config = source_vm_config();
        config.role = VmRole::Destination {
            sequence: Bytes::copy_from_slice(key.sequence().unwrap()),
            secret: Bytes::copy_from_slice(key.secret().unwrap()),
        };
        let dest = world.connect(config);
        world.client_send(b"3");
        if fin_first {
            world.fin(src);
        }
        world.link(dest).vm.complete_vmotion();
        world.run();
        if !fin_first {
            world.fin(src);
        }
        world.client_send(b"4");
        world.vm_send(dest, b"b\xff");
        prop_assert_eq!(&world.link(src).vm_rx[..], b"1\xff\r");
        prop_assert_eq!(&world.link(dest).vm_rx[..], b"2\xff34");
        prop_assert_eq!(&world.app.client_rx[..], b"a\xff\x00b\xff");
    }
}
