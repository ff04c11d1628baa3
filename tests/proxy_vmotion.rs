//! vMotion through the concentrator's coordinator over real sockets, with a client typing
//! through all of it (byte-exact both ways), plus reconnects and impostors.
#![allow(clippy::disallowed_methods)]

mod support;

use std::time::Duration;

use bytes::Bytes;
use support::typing::{key, line, type_and_print, Typed};
use support::*;
use vspc_emulator::{AbortReason, EmulatorConfig, FinOrder, VmotionOutcome, VmotionPlan};
use vspc_server::{Server as Proxy, ServerConfig as Config};

/// Runs one vMotion while a client types and the VM prints; checks every byte both ways.
async fn vmotion_scenario(
    mut config: Config,
    mut vm_config: EmulatorConfig,
    plan: VmotionPlan,
    tweak: impl FnOnce(&mut Config, &mut EmulatorConfig),
) -> (VmotionOutcome, serde_json::Value) {
    tweak(&mut config, &mut vm_config);
    let name = vm_config.identity.name.clone();
    let proxy = Proxy::start(config).await.unwrap();
    let vm = TestVm::start(vm_config, Target::plain(proxy.vm_addrs[0]));
    identified(&proxy, &name).await;
    let mut client = TestClient::connect(proxy.client_addr).await;
    client.select(&name).await;

    let mut done = Typed::default();
    let vmotion = Some((30, plan));
    type_and_print(&vm, &mut client, 0..120, vmotion, key, line, &mut done).await;
    let Typed { mut typed, printed } = done;
    let result = vm.vmotion_outcome().await;
    vm.wait_received(&typed).await;
    client.expect_exact(&printed).await;
    // Clients stay attached through it, and keep working after.
    vm.with(|vm, _| vm.send_serial(b"after\r\n")).unwrap();
    client.expect_exact(b"after\r\n").await;
    client.send(b"end").await;
    typed.extend_from_slice(b"end");
    vm.wait_received(&typed).await;
    let snapshot = proxy.snapshot();
    proxy.shutdown().await;
    (result, snapshot)
}

fn plan(fin_order: FinOrder) -> VmotionPlan {
    let mut plan = VmotionPlan::new(Bytes::from_static(b"\x44\xda\xff\xf1"));
    plan.fin_order = fin_order;
    plan
}

fn single_entry(snapshot: &serde_json::Value) -> serde_json::Value {
    let vms = vms(snapshot);
    assert_eq!(vms.len(), 1, "one VM entry: {snapshot:#}");
    vms[0].clone()
}

#[tokio::test]
async fn vmotion_fin_before_complete_loses_nothing() {
    let (result, snapshot) = vmotion_scenario(
        Config::ephemeral(),
        vm_config(10),
        plan(FinOrder::FinBeforeComplete),
        |_, _| {},
    )
    .await;
    assert!(
        matches!(result, VmotionOutcome::Completed { .. }),
        "{result:?}"
    );
    let entry = single_entry(&snapshot);
    assert_eq!(entry["connections"], 2);
    assert_eq!(entry["clients"].as_array().unwrap().len(), 1);
    let history = entry["vmotions"].to_string();
    assert!(
        history.contains("goahead") && history.contains("complete"),
        "{history}"
    );
}

#[tokio::test]
async fn vmotion_fin_after_complete_loses_nothing() {
    let (result, snapshot) = vmotion_scenario(
        Config::ephemeral(),
        vm_config(11),
        plan(FinOrder::FinAfterComplete),
        |_, _| {},
    )
    .await;
    assert!(
        matches!(result, VmotionOutcome::Completed { .. }),
        "{result:?}"
    );
    assert_eq!(single_entry(&snapshot)["connections"], 2);
}

#[tokio::test]
async fn vmotion_notnow_keeps_the_source() {
    let (result, snapshot) = vmotion_scenario(
        Config::ephemeral(),
        vm_config(12),
        plan(FinOrder::FinBeforeComplete),
        |config, _| config.vmotion.allow = false,
    )
    .await;
    assert_eq!(result, VmotionOutcome::Refused);
    let entry = single_entry(&snapshot);
    assert_eq!(entry["connections"], 1);
    assert!(entry["vmotions"].to_string().contains("notnow"));
}

#[tokio::test]
async fn vmotion_abort_releases_held_input_to_the_source() {
    let mut bad = plan(FinOrder::FinBeforeComplete);
    bad.wrong_secret = Some(Bytes::from_static(b"\xff\x00\xff\x00\xff\x00\xff\x00"));
    let (result, snapshot) =
        vmotion_scenario(Config::ephemeral(), vm_config(13), bad, |_, _| {}).await;
    assert_eq!(
        result,
        VmotionOutcome::Aborted {
            reason: AbortReason::PeerRejected
        }
    );
    let entry = single_entry(&snapshot);
    assert_eq!(entry["connections"], 1);
    assert!(entry["vmotions"].to_string().contains("abort"));
}

#[tokio::test]
async fn vmotion_expiry_releases_held_input_when_the_source_cancels_silently() {
    let (result, snapshot) = vmotion_scenario(
        Config::ephemeral(),
        vm_config(14),
        plan(FinOrder::FinBeforeComplete),
        |config, vm| {
            config.vmotion.timeout_ms = 300;
            // The host gives up before GOAHEAD can arrive: no ABORT is ever sent.
            vm.port.vmotion_limit = Duration::ZERO;
        },
    )
    .await;
    assert_eq!(result, VmotionOutcome::Cancelled);
    let entry = single_entry(&snapshot);
    assert!(
        entry["vmotions"].to_string().contains("expired"),
        "{entry:#}"
    );
}

#[tokio::test]
async fn a_reconnect_keeps_clients_log_and_scrollback() {
    let dir = std::env::temp_dir().join(format!("vspc-proxy-reconnect-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut config = Config::ephemeral();
    config.log.dir = Some(dir.clone());
    config.log.name = "{name}.log".to_owned();
    let proxy = Proxy::start(config).await.unwrap();
    let vm = TestVm::start(vm_config(20), Target::plain(proxy.vm_addrs[0]));
    identified(&proxy, "vm-00020").await;
    let mut client = TestClient::connect(proxy.client_addr).await;
    client.select("vm-00020").await;
    vm.with(|vm, _| vm.send_serial(b"before\r\n")).unwrap();
    client.expect_exact(b"before\r\n").await;

    // connected=true while running: ESXi closes and reopens with the same identity.
    vm.with(|vm, now| vm.set_connected(now, true)).unwrap();
    wait_snapshot(
        "re-attached",
        || proxy.snapshot(),
        |s| vms(s).len() == 1 && vms(s)[0]["connections"] == 2 && vms(s)[0]["state"] == "connected",
    )
    .await;
    vm.with(|vm, _| vm.send_serial(b"after\r\n")).unwrap();
    client.expect_exact(b"after\r\n").await;
    client.send(b"still here").await;
    vm.wait_received(b"still here").await;

    // A new client gets the scrollback of both connections.
    let mut late = TestClient::connect(proxy.client_addr).await;
    late.select("vm-00020 ro").await;
    late.expect_exact(b"before\r\nafter\r\n").await;
    proxy.shutdown().await;
    let log = std::fs::read(dir.join("vm-00020.log")).unwrap();
    assert_eq!(log, b"before\r\nafter\r\n");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn input_typed_while_the_vm_is_away_reaches_it_when_it_returns() {
    let proxy = Proxy::start(Config::ephemeral()).await.unwrap();
    let vm = TestVm::start(vm_config(21), Target::plain(proxy.vm_addrs[0]));
    identified(&proxy, "vm-00021").await;
    let mut client = TestClient::connect(proxy.client_addr).await;
    client.select("vm-00021").await;
    client.send(b"one ").await;
    vm.wait_received(b"one ").await;

    // ReconfigVM_Task with connected=false: the port goes away; the client keeps typing.
    vm.with(|vm, now| vm.set_connected(now, false)).unwrap();
    wait_snapshot(
        "VM away",
        || proxy.snapshot(),
        |s| vms(s).len() == 1 && vms(s)[0]["state"] == "disconnected",
    )
    .await;
    client.send(b"two\xff\r three").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(vm.received(), b"one ");

    // connected=true: the same identity returns and gets what was typed, exactly once.
    vm.with(|vm, now| vm.set_connected(now, true)).unwrap();
    vm.wait_received(b"one two\xff\r three").await;
    client.send(b" four").await;
    vm.wait_received(b"one two\xff\r three four").await;
    assert_eq!(vm.received(), b"one two\xff\r three four");
    let snapshot = proxy.snapshot();
    assert_eq!(vms(&snapshot)[0]["connections"], 2);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_concurrent_impostor_gets_nothing_of_the_original() {
    let proxy = Proxy::start(Config::ephemeral()).await.unwrap();
    let original = TestVm::start(vm_config(21), Target::plain(proxy.vm_addrs[0]));
    identified(&proxy, "vm-00021").await;
    let mut client = TestClient::connect(proxy.client_addr).await;
    client.select("vm-00021").await;

    // Same UUID, same service URI, while the original is live: no vMotion secret.
    let impostor = TestVm::start(vm_config(21), Target::plain(proxy.vm_addrs[0]));
    let snapshot = wait_snapshot(
        "flagged entry",
        || proxy.snapshot(),
        |s| vms(s).iter().any(|v| !v["flagged"].is_null()),
    )
    .await;
    let entries = vms(&snapshot);
    assert_eq!(entries.len(), 2);
    let trusted = entries.iter().find(|v| v["flagged"].is_null()).unwrap();
    assert_eq!(trusted["clients"].as_array().unwrap().len(), 1);
    assert_eq!(trusted["connections"], 1);

    impostor
        .with(|vm, _| vm.send_serial(b"evil output"))
        .unwrap();
    original.with(|vm, _| vm.send_serial(b"good")).unwrap();
    client.expect_exact(b"good").await;
    client.send(b"secret input").await;
    original.wait_received(b"secret input").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(impostor.received().is_empty());
    client.drain(Duration::from_millis(50)).await;
    assert!(client.data.is_empty(), "{:?}", client.data);
    // The name still selects the original.
    let mut other = TestClient::connect(proxy.client_addr).await;
    other.select("vm-00021 ro").await;
    other.expect_exact(b"good").await;
    proxy.shutdown().await;
}
