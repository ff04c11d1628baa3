//! Two concentrators sharing vMotions through a real `redis-server`: a destination host
//! that reaches the other instance (behind a "virtual IP") is carried back to the instance
//! that holds the vMotion, which completes it with its client typing and nothing lost, in
//! both directions; a forged or replayed PEER is refused on every instance; with Redis
//! gone, vMotions are answered NOTNOW and the VM keeps being served where it is.
#![allow(clippy::disallowed_methods)]

mod support;

use bytes::Bytes;
use support::redis::Redis;
use support::typing::{key, line, type_and_print, Typed};
use support::vip::Vip;
use support::*;
use vspc_emulator::{VmotionOutcome, VmotionPlan};
use vspc_server::{Server as Proxy, ServerConfig as Config};
use vspc_testkit::{esxi, hex};

/// A concentrator sharing vMotions through `redis`, with leases of `lease_ms`.
async fn instance(redis: &Redis, lease_ms: u64) -> Proxy {
    let mut config = Config::ephemeral();
    config.cluster.redis_url = Some(redis.url());
    config.cluster.lease_ms = lease_ms;
    Proxy::start(config).await.unwrap()
}

/// `vm` vMotions while a client of `owner` types and the VM prints; its destination reaches
/// the other instance (the virtual IP's preference), which carries it to `owner`. Every byte
/// both ways arrives exactly, and the client stays attached after.
async fn vmotion_across(owner: &Proxy, vm: &TestVm, name: &str, sequence: &'static [u8]) {
    let mut client = TestClient::connect(owner.client_addr).await;
    client.select(name).await;
    let plan = VmotionPlan::new(Bytes::from_static(sequence));
    let mut done = Typed::default();
    let vmotion = Some((20, plan));
    type_and_print(vm, &mut client, 0..100, vmotion, key, line, &mut done).await;
    let result = vm.vmotion_outcome().await;
    assert!(
        matches!(result, VmotionOutcome::Completed { .. }),
        "{result:?}"
    );
    vm.wait_received(&done.typed).await;
    client.expect_exact(&done.printed).await;
    vm.with(|vm, _| vm.send_serial(b"after\r\n")).unwrap();
    client.expect_exact(b"after\r\n").await;
    client.send(b"end").await;
    done.typed.extend_from_slice(b"end");
    vm.wait_received(&done.typed).await;
}

/// The key (`sequence ++ secret`) of the PEER a destination sent, unescaped.
fn peer_key(wire: &[u8]) -> Option<Vec<u8>> {
    let start = find(wire, &[0xff, 0xfa, 0xe8, 0x2c])? + 4;
    let mut key = Vec::new();
    let mut rest = wire.get(start..)?.iter();
    while let Some(&byte) = rest.next() {
        if byte != 0xff {
            key.push(byte);
            continue;
        }
        match rest.next() {
            Some(0xff) => key.push(0xff),
            Some(0xf0) => return Some(key),
            _ => return None,
        }
    }
    None
}

#[tokio::test]
async fn vmotions_cross_instances_both_ways_and_their_replayed_peers_are_refused_everywhere() {
    let Some(redis) = Redis::start().await else {
        eprintln!("skipped: redis-server is not installed");
        return;
    };
    let a = instance(&redis, 10_000).await;
    let b = instance(&redis, 10_000).await;
    let (to_a, to_b) = (a.vm_addrs[0], b.vm_addrs[0]);
    let vip = Vip::start(&[to_a, to_b]).await;
    let on_a = TestVm::start(vm_config(50), Target::plain(vip.addr));
    identified(&a, "vm-00050").await;
    vip.set_up(to_a, false);
    let on_b = TestVm::start(vm_config(51), Target::plain(vip.addr));
    identified(&b, "vm-00051").await;

    // A's VM: its destination reaches B, which carries it back to A.
    vmotion_across(&a, &on_a, "vm-00050", b"\x44\xda\x87\xf1").await;
    // B's VM: its destination reaches A, which carries it back to B.
    vip.set_up(to_a, true);
    vip.set_up(to_b, false);
    vmotion_across(&b, &on_b, "vm-00051", b"\x44\xda\xff\xf2").await;

    // Each VM stays its instance's, on its second connection (the one the other carried).
    for (proxy, name) in [(&a, "vm-00050"), (&b, "vm-00051")] {
        let listed = vms(&proxy.snapshot());
        assert_eq!(listed.len(), 1, "{listed:#?}");
        assert_eq!(listed[0]["name"], name);
        assert_eq!(listed[0]["connections"], 2, "{:#}", listed[0]);
        assert_eq!(listed[0]["owner"], "held", "{:#}", listed[0]);
        let metrics = proxy.handle().metrics_text();
        assert!(
            metrics.contains("vspc_shared_vmotions_total{event=\"carried\"} 1\n"),
            "{metrics}"
        );
    }
    // The handover records were claimed, and so deleted.
    assert_eq!(
        redis.command(&["KEYS", "vspc:handover:*"]).await.as_deref(),
        Some("*0")
    );

    // Both PEERs, as the virtual IP saw them, replayed to both instances: refused by each
    // (the records are gone; the owners completed their vMotions).
    let keys: Vec<Vec<u8>> = [to_b, to_a]
        .iter()
        .flat_map(|to| vip.sent_to(*to))
        .filter_map(|wire| peer_key(&wire))
        .collect();
    assert_eq!(keys.len(), 2, "one PEER through each instance");
    let replays = keys.iter().flat_map(|key| {
        [to_a, to_b].map(|to| async move {
            let mut replayed = RawClient::connect(to).await;
            replayed.send(&blind_destination(key)).await;
            replayed.read_until(PEER_REFUSED).await;
        })
    });
    futures_util::future::join_all(replays).await;
    for proxy in [&a, &b] {
        assert_eq!(vms(&proxy.snapshot()).len(), 1);
        let metrics = proxy.handle().metrics_text();
        assert!(
            metrics.contains("vspc_shared_vmotions_total{event=\"refused\"} 2\n"),
            "{metrics}"
        );
    }
    a.shutdown().await;
    b.shutdown().await;
}

/// A destination's side of its handshake (the capture's block C), sent blind, with the PEER
/// carrying `key` (`sequence ++ secret`).
fn blind_destination(key: &[u8]) -> Vec<u8> {
    // Block C's first five segments (the negotiation up to WILL 232), then its
    // KNOWN-SUBOPTIONS-1.
    let mut wire = esxi::segments(esxi::BLOCK_C, true)[..5].concat();
    wire.extend(hex(
        "fffae8000001020328292b2c2d2e304647495051545556575253fff0",
    ));
    wire.extend_from_slice(&[0xff, 0xfa, 0xe8, 0x2c]);
    for &byte in key {
        // IAC in a subnegotiation is doubled.
        wire.push(byte);
        if byte == 0xff {
            wire.push(byte);
        }
    }
    wire.extend_from_slice(&[0xff, 0xf0]);
    wire
}

/// UNKNOWN-SUBOPTION-RCVD-2(VMOTION-PEER): how a PEER is refused.
const PEER_REFUSED: &[u8] = &[0xff, 0xfa, 0xe8, 0x03, 0x2c, 0xff, 0xf0];

#[tokio::test]
async fn a_forged_peer_is_refused_and_with_redis_down_vmotions_are_answered_notnow() {
    let Some(redis) = Redis::start().await else {
        eprintln!("skipped: redis-server is not installed");
        return;
    };
    let a = instance(&redis, 1000).await;
    let b = instance(&redis, 1000).await;
    // A PEER no instance issued: refused at B, which has no record of it.
    let mut forged = RawClient::connect(b.vm_addrs[0]).await;
    forged
        .send(&blind_destination(b"\x01\x02\x03\x04\x05\x06\x07\x08"))
        .await;
    forged.read_until(PEER_REFUSED).await;
    assert!(vms(&b.snapshot()).is_empty());
    let metrics = b.handle().metrics_text();
    assert!(
        metrics.contains("vspc_shared_vmotions_total{event=\"refused\"} 1\n"),
        "{metrics}"
    );

    // Redis goes away: a VM on A keeps being served, and once A's renewal finds the store
    // gone, a vMotion is answered NOTNOW (a destination reaching B could not be carried
    // back); the VM stays on A, its client with it.
    let mut redis = redis;
    let vip = Vip::start(&[a.vm_addrs[0], b.vm_addrs[0]]).await;
    let vm = TestVm::start(vm_config(51), Target::plain(vip.addr));
    identified(&a, "vm-00051").await;
    vip.set_up(a.vm_addrs[0], false);
    let mut client = TestClient::connect(a.client_addr).await;
    client.select("vm-00051").await;
    redis.kill();
    let metric = |p: &Proxy, line: &str| p.handle().metrics_text().contains(line);
    wait_snapshot(
        "A's renewal failing",
        || (!metric(&a, "vspc_store_errors_total 0\n")).into(),
        |failing| failing == true,
    )
    .await;
    let plan = VmotionPlan::new(Bytes::from_static(b"\x10\x20\x30\x40"));
    vm.with(|vm, now| vm.start_vmotion(now, plan)).unwrap();
    assert_eq!(vm.vmotion_outcome().await, VmotionOutcome::Refused);
    assert!(metric(&a, "vspc_vmotions_total{event=\"notnow\"} 1\n"));
    vm.with(|vm, _| vm.send_serial(b"still here\r\n")).unwrap();
    client.expect(b"still here\r\n").await;
    client.send(b"typed").await;
    vm.wait_received(b"typed").await;
    assert_eq!(vms(&a.snapshot())[0]["state"], "connected");
    a.shutdown().await;
    b.shutdown().await;
}
