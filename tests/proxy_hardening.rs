//! What hostile or unlucky VMs must not get through: shared or stolen console logs, logs
//! lost in a crash beyond the flush bound, and VM connections from outside `vm.allow`.
#![allow(clippy::disallowed_methods)]

mod support;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use support::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use vspc_server::{Server as Proxy, ServerConfig as Config};

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vspc-hardening-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn files(dir: &PathBuf) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    files.sort();
    files
}

#[tokio::test]
async fn names_that_sanitize_alike_get_files_of_their_own() {
    let dir = temp_dir("names");
    let mut config = Config::ephemeral();
    config.log.dir = Some(dir.clone());
    config.log.name = "{name}.log".to_owned();
    let proxy = Proxy::start(config).await.unwrap();
    let mut slash = vm_config(30);
    slash.identity.name = "coll/x".to_owned();
    let mut underscore = vm_config(31);
    underscore.identity.name = "coll_x".to_owned();
    let a = TestVm::start(slash, Target::plain(proxy.vm_addrs[0]));
    identified(&proxy, "coll/x").await;
    let b = TestVm::start(underscore, Target::plain(proxy.vm_addrs[0]));
    identified(&proxy, "coll_x").await;
    a.with(|vm, _| vm.send_serial(b"from a slash\r\n")).unwrap();
    b.with(|vm, _| vm.send_serial(b"from an underscore\r\n"))
        .unwrap();
    wait_snapshot(
        "both logged",
        || proxy.snapshot(),
        |s| vms(s).iter().all(|v| v["log"].is_string()),
    )
    .await;
    proxy.shutdown().await;
    let files = files(&dir);
    assert_eq!(files.len(), 2, "{files:?}");
    assert_eq!(
        files[0],
        (
            "coll_x-2.log".to_owned(),
            b"from an underscore\r\n".to_vec()
        )
    );
    assert_eq!(
        files[1],
        ("coll_x.log".to_owned(), b"from a slash\r\n".to_vec())
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_impostor_never_writes_into_its_victims_log() {
    let dir = temp_dir("impostor");
    let mut config = Config::ephemeral();
    config.log.dir = Some(dir.clone());
    config.log.name = "{name}.log".to_owned();
    let proxy = Proxy::start(config).await.unwrap();
    let original = TestVm::start(vm_config(32), Target::plain(proxy.vm_addrs[0]));
    identified(&proxy, "vm-00032").await;
    original
        .with(|vm, _| vm.send_serial(b"genuine\r\n"))
        .unwrap();
    let impostor = TestVm::start(vm_config(32), Target::plain(proxy.vm_addrs[0]));
    wait_snapshot(
        "flagged entry",
        || proxy.snapshot(),
        |s| vms(s).iter().any(|v| !v["flagged"].is_null()),
    )
    .await;
    impostor
        .with(|vm, _| vm.send_serial(b"forged\r\n"))
        .unwrap();
    wait_snapshot(
        "both logged",
        || proxy.snapshot(),
        |s| vms(s).len() == 2 && vms(s).iter().all(|v| v["log"].is_string()),
    )
    .await;
    proxy.shutdown().await;
    let files = files(&dir);
    assert_eq!(
        files,
        vec![
            ("FLAGGED-vm-00032.log".to_owned(), b"forged\r\n".to_vec()),
            ("vm-00032.log".to_owned(), b"genuine\r\n".to_vec()),
        ]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn vm_connections_from_outside_the_allowlist_are_refused_and_counted() {
    let mut config = Config::ephemeral();
    config.vm.allow = vec!["192.0.2.0/24".parse().unwrap()];
    let proxy = Proxy::start(config).await.unwrap();
    // Refused before the handshake: the proxy sends nothing and closes.
    let mut stream = tokio::net::TcpStream::connect(proxy.vm_addrs[0])
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(WAIT, stream.read(&mut buf))
        .await
        .unwrap();
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    let metrics = proxy.handle().metrics_text();
    assert!(
        metrics.contains("vspc_vm_connections_denied_total 1\n"),
        "{metrics}"
    );
    assert!(vms(&proxy.snapshot()).is_empty());
    proxy.shutdown().await;

    // Loopback admitted: the same VM is served.
    let mut config = Config::ephemeral();
    config.vm.allow = vec!["127.0.0.0/8".parse().unwrap(), "::1".parse().unwrap()];
    let proxy = Proxy::start(config).await.unwrap();
    let _vm = TestVm::start(vm_config(33), Target::plain(proxy.vm_addrs[0]));
    identified(&proxy, "vm-00033").await;
    proxy.shutdown().await;
}

/// `kill -9` while a VM streams 50 KB/s: what is on disk is a clean prefix, and at most the
/// flush bound (100 ms, plus the timer's wake-up) of console is lost.
#[tokio::test]
async fn a_crash_loses_at_most_the_flush_bound_of_console() {
    let dir = temp_dir("crash");
    let mut child = tokio::process::Command::new(example_binary("proxy"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--client-listen",
            "127.0.0.1:0",
            "--no-admin",
        ])
        .args(["--log-name", "{name}.log", "--log-level", "warn"])
        .arg("--log-dir")
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let vm_addr = loop {
        let line = tokio::time::timeout(WAIT, stdout.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Some(addr) = line.strip_prefix("vm telnet://") {
            break addr.parse().unwrap();
        }
    };
    let vm = TestVm::start(vm_config(34), Target::plain(vm_addr));
    vm.wait("connected", |vm, _| vm.current_conn().is_some())
        .await;
    // 50 KB/s in 1 KB writes for 1.2 s.
    let mut sent = Vec::new();
    let start = Instant::now();
    let mut n = 0u32;
    while start.elapsed() < Duration::from_millis(1200) {
        let line: Vec<u8> = format!("{n:08} ").bytes().cycle().take(1000).collect();
        vm.with(|vm, _| vm.send_serial(&line)).unwrap();
        sent.extend_from_slice(&line);
        n += 1;
        let due = start + Duration::from_millis(20) * n;
        tokio::time::sleep_until(due.into()).await;
    }
    let status = std::process::Command::new("kill")
        .args(["-KILL", &child.id().unwrap().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let _ = child.wait().await;
    let logged = std::fs::read(dir.join("vm-00034.log")).unwrap_or_default();
    assert!(
        sent.starts_with(&logged),
        "the log is a clean prefix of what was sent"
    );
    let lost = sent.len() - logged.len();
    // 100 ms at 50 KB/s is 5,000 bytes; allow the timer and the scheduler as much again.
    assert!(lost <= 10_000, "lost {lost} of {} bytes", sent.len());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A VM looping on VMOTION-BEGIN cannot make the log grow with it: past 20 lines per
/// connection and window the lines are counted, not written.
#[tokio::test]
async fn a_begin_loop_is_answered_but_its_log_lines_are_limited() {
    let proxy = Proxy::start(Config::ephemeral()).await.unwrap();
    let vm = TestVm::start(vm_config(35), Target::plain(proxy.vm_addrs[0]));
    identified(&proxy, "vm-00035").await;
    let metric = |text: &str, name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(0)
    };
    // One BEGIN per read (several in one read are answered once, for the last): each waits
    // for its answer before the next is sent.
    for i in 0..60u8 {
        // IAC SB 232 VMOTION-BEGIN <sequence> IAC SE, each superseding the last.
        let begin = vec![0xff, 0xfa, 0xe8, 0x28, 0x51, i, 0xff, 0xf0];
        vm.with(|vm, _| vm.inject(vspc_emulator::Fault::Garbage(begin.into())))
            .unwrap();
        let deadline = Instant::now() + WAIT;
        loop {
            let text = proxy.handle().metrics_text();
            let answered = metric(&text, "vspc_vmotions_total{event=\"goahead\"}")
                + metric(&text, "vspc_vmotions_total{event=\"notnow\"}");
            if answered == u64::from(i) + 1 {
                break;
            }
            assert!(Instant::now() < deadline, "{text}");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let text = proxy.handle().metrics_text();
    assert_eq!(
        metric(&text, "vspc_log_lines_suppressed_total"),
        40,
        "{text}"
    );
    proxy.shutdown().await;
}
