//! Two concentrators sharing vMotions through a real `redis-server`: a destination host
//! that reaches the other instance (behind a round-robin "virtual IP") is carried back to
//! the instance that holds the vMotion, which completes it with its client typing and
//! nothing lost; a forged PEER is refused; with Redis gone, a cross-instance vMotion is
//! refused and the VM keeps being served where it is.
#![allow(clippy::disallowed_methods)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use support::redis::Redis;
use support::*;
use tokio::net::{TcpListener, TcpStream};
use vspc_emulator::{VmotionOutcome, VmotionPlan};
use vspc_server::{Server as Proxy, ServerConfig as Config};
use vspc_testkit::{esxi, hex};

/// A concentrator sharing vMotions through `redis`.
async fn instance(redis: &Redis) -> Proxy {
    let mut config = Config::ephemeral();
    config.cluster.redis_url = Some(redis.url());
    Proxy::start(config).await.unwrap()
}

/// A round-robin "virtual IP": the first connection goes to `first`, every later one to
/// `rest`, byte for byte both ways.
async fn virtual_ip(first: SocketAddr, rest: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut count = 0;
        while let Ok((mut inbound, _)) = listener.accept().await {
            let target = if count == 0 { first } else { rest };
            count += 1;
            tokio::spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_destination_reaching_another_instance_is_carried_back_and_nothing_is_lost() {
    let Some(redis) = Redis::start().await else {
        eprintln!("skipped: redis-server is not installed");
        return;
    };
    let a = instance(&redis).await;
    let b = instance(&redis).await;
    let vip = virtual_ip(a.vm_addrs[0], b.vm_addrs[0]).await;
    let vm = TestVm::start(vm_config(50), Target::plain(vip));
    identified(&a, "vm-00050").await;
    let mut client = TestClient::connect(a.client_addr).await;
    client.select("vm-00050").await;

    let mut typed = Vec::new();
    let mut printed = Vec::new();
    for i in 0..100u32 {
        let mut key = format!("k{i:03}\r").into_bytes();
        key.push(0xff);
        client.send(&key).await;
        typed.extend_from_slice(&key);
        if !vm.with(|vm, _| vm.is_migrating()) {
            let line = format!("o{i:03}\n");
            if vm.with(|vm, _| vm.send_serial(line.as_bytes())).is_ok() {
                printed.extend_from_slice(line.as_bytes());
            }
        }
        if i == 20 {
            let plan = VmotionPlan::new(Bytes::from_static(b"\x44\xda\x87\xf1"));
            vm.with(|vm, now| vm.start_vmotion(now, plan)).unwrap();
        }
        client.drain(Duration::from_millis(2)).await;
    }
    let result = vm.vmotion_outcome().await;
    assert!(
        matches!(result, VmotionOutcome::Completed { .. }),
        "{result:?}"
    );
    vm.wait_received(&typed).await;
    client.expect_exact(&printed).await;
    vm.with(|vm, _| vm.send_serial(b"after\r\n")).unwrap();
    client.expect_exact(b"after\r\n").await;

    // The VM is A's, on its second connection (the one B carried); B holds nothing.
    let entry = vms(&a.snapshot())[0].clone();
    assert_eq!(entry["connections"], 2, "{entry:#}");
    assert_eq!(entry["clients"].as_array().unwrap().len(), 1);
    assert!(vms(&b.snapshot()).is_empty(), "{:#}", b.snapshot());
    // The handover record was claimed, and so deleted; B counted the destination it carried.
    assert_eq!(
        redis.command(&["KEYS", "vspc:handover:*"]).await.as_deref(),
        Some("*0")
    );
    let metrics = b.handle().metrics_text();
    assert!(
        metrics.contains("vspc_shared_vmotions_total{event=\"carried\"} 1\n"),
        "{metrics}"
    );
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
    wire.extend_from_slice(key);
    wire.extend_from_slice(&[0xff, 0xf0]);
    wire
}

/// UNKNOWN-SUBOPTION-RCVD-2(VMOTION-PEER): how a PEER is refused.
const PEER_REFUSED: &[u8] = &[0xff, 0xfa, 0xe8, 0x03, 0x2c, 0xff, 0xf0];

#[tokio::test]
async fn a_forged_peer_is_refused_and_redis_down_refuses_only_cross_instance_vmotions() {
    let Some(redis) = Redis::start().await else {
        eprintln!("skipped: redis-server is not installed");
        return;
    };
    let a = instance(&redis).await;
    let b = instance(&redis).await;
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

    // Redis goes away: a VM on A keeps being served, and a vMotion whose destination lands
    // on B is refused (B cannot find where it belongs); the VM stays on A, its client with it.
    let vip = virtual_ip(a.vm_addrs[0], b.vm_addrs[0]).await;
    let vm = TestVm::start(vm_config(51), Target::plain(vip));
    identified(&a, "vm-00051").await;
    let mut client = TestClient::connect(a.client_addr).await;
    client.select("vm-00051").await;
    drop(redis);
    let plan = VmotionPlan::new(Bytes::from_static(b"\x10\x20\x30\x40"));
    vm.with(|vm, now| vm.start_vmotion(now, plan)).unwrap();
    let result = vm.vmotion_outcome().await;
    assert!(
        !matches!(result, VmotionOutcome::Completed { .. }),
        "{result:?}"
    );
    vm.with(|vm, _| vm.send_serial(b"still here\r\n")).unwrap();
    client.expect(b"still here\r\n").await;
    client.send(b"typed").await;
    vm.wait_received(b"typed").await;
    assert_eq!(vms(&a.snapshot())[0]["state"], "connected");
    // A could not record the GOAHEAD, or B could not reach the store (or both).
    let unavailable = |p: &Proxy, event: &str| {
        p.handle().metrics_text().contains(&format!(
            "vspc_shared_vmotions_total{{event=\"{event}\"}} 1\n"
        ))
    };
    assert!(unavailable(&a, "unshared") || unavailable(&b, "store_unavailable"));
    a.shutdown().await;
    b.shutdown().await;
}
