//! examples/log_collector.rs, run as its binary: emulated VMs log through a vMotion and a
//! reconnect into one file each, named from the VC UUID; a second port of a VM gets a file of
//! its own.
#![allow(clippy::disallowed_methods)]

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use support::*;
use tokio::io::{AsyncBufReadExt, BufReader};
use vspc_emulator::{VmIdentity, VmotionPlan};

fn log_of(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!(
        "{}.log",
        VmIdentity::numbered(n).vc_uuid.to_canonical()
    ))
}

#[tokio::test]
async fn one_file_per_vm_port_across_vmotion_and_reconnect() {
    let dir = std::env::temp_dir().join(format!("vspc-collector-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut child = tokio::process::Command::new(example_binary("log_collector"))
        .arg(&dir)
        .arg("127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr: SocketAddr = line_after(&mut stdout, "vm telnet://")
        .await
        .parse()
        .unwrap();

    let vm = TestVm::start(vm_config(70), Target::plain(addr));
    let mut expected = b"boot: before the vMotion\r\n".to_vec();
    // Output before identification is kept and logged once the port is known.
    vm.wait("connected", |vm, _| vm.current_conn().is_some())
        .await;
    vm.with(|vm, _| vm.send_serial(&expected)).unwrap();
    wait_file(&log_of(&dir, 70), &expected).await;

    // A vMotion: the destination connection carries on into the same file.
    vm.with(|vm, now| vm.start_vmotion(now, VmotionPlan::new(Bytes::from_static(b"\x01\xff"))))
        .unwrap();
    vm.vmotion_outcome().await;
    let after: &[u8] = b"after the vMotion \xff\x00\r\n";
    vm.with(|vm, _| vm.send_serial(after)).unwrap();
    expected.extend_from_slice(after);
    wait_file(&log_of(&dir, 70), &expected).await;

    // A reconnect (connected=true while running: ESXi closes and reopens): same file.
    vm.with(|vm, now| vm.set_connected(now, true)).unwrap();
    let again: &[u8] = b"after the reconnect\r\n";
    while vm.with(|vm, _| vm.send_serial(again)).is_err() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    expected.extend_from_slice(again);
    wait_file(&log_of(&dir, 70), &expected).await;

    // Another VM: a file of its own.
    let other = TestVm::start(vm_config(71), Target::plain(addr));
    other
        .wait("connected", |vm, _| vm.current_conn().is_some())
        .await;
    other.with(|vm, _| vm.send_serial(b"other VM\r\n")).unwrap();
    wait_file(&log_of(&dir, 71), b"other VM\r\n").await;

    signal(child.id().unwrap(), "TERM");
    let exit = tokio::time::timeout(WAIT, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "{exit:?}");
    assert_eq!(std::fs::read(log_of(&dir, 70)).unwrap(), expected);
    let files = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(files, 2, "one file per VM port");
    let _ = std::fs::remove_dir_all(&dir);
}
