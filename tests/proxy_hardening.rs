//! What hostile or unlucky VMs and clients must not get through: shared or stolen console
//! logs, logs lost in a crash beyond the flush bound, VM connections from outside
//! `vm.allow`, vMotion slots and log lines claimed by the untrusted, idle clients locking
//! others out, terminal escapes in VM names, and unbounded queues behind a peer that never
//! reads (a VM's answers, a client's input).
#![allow(clippy::disallowed_methods)]

mod support;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use support::*;
use tokio::io::{AsyncBufReadExt, BufReader};
use vspc_server::{Server as Proxy, ServerConfig as Config};
use vspc_testkit::esxi;

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
    let mut refused = RawClient::connect(proxy.vm_addrs[0]).await;
    assert_eq!(refused.expect_closed().await, b"");
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
/// flush bound (100 ms, plus the timer's wake-up on a loaded machine) of console is lost.
#[tokio::test]
async fn a_crash_loses_at_most_the_flush_bound_of_console() {
    let dir = temp_dir("crash");
    let mut child = proxy_example(&dir, "warn")
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let vm_addr: std::net::SocketAddr = line_after(&mut stdout, "vm telnet://")
        .await
        .parse()
        .unwrap();
    let vm = TestVm::start(vm_config(34), Target::plain(vm_addr));
    vm.wait("connected", |vm, _| vm.current_conn().is_some())
        .await;
    // 50 KB/s in 1 KB writes for 2 s.
    let mut sent = Vec::new();
    let start = Instant::now();
    let mut n = 0u32;
    while start.elapsed() < Duration::from_millis(2000) {
        let line: Vec<u8> = format!("{n:08} ").bytes().cycle().take(1000).collect();
        vm.with(|vm, _| vm.send_serial(&line)).unwrap();
        sent.extend_from_slice(&line);
        n += 1;
        let due = start + Duration::from_millis(20) * n;
        tokio::time::sleep_until(due.into()).await;
    }
    signal(child.id().unwrap(), "KILL");
    let _ = child.wait().await;
    let logged = std::fs::read(dir.join("vm-00034.log")).unwrap_or_default();
    assert!(
        sent.starts_with(&logged),
        "the log is a clean prefix of what was sent"
    );
    let lost = sent.len() - logged.len();
    // 100 ms at 50 KB/s is 5,000 bytes; the timer and a loaded scheduler get 300 ms more
    // (the old once-a-second flush lost up to 50,000).
    assert!(lost <= 20_000, "lost {lost} of {} bytes", sent.len());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A VM looping on VMOTION-BEGIN cannot make the log grow with it: past 20 lines per
/// connection and window the lines are counted, not written.
#[tokio::test]
async fn a_begin_loop_is_answered_but_its_log_lines_are_limited() {
    let proxy = Proxy::start(Config::ephemeral()).await.unwrap();
    let vm = TestVm::start(vm_config(35), Target::plain(proxy.vm_addrs[0]));
    identified(&proxy, "vm-00035").await;
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

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_client_that_never_chooses_is_timed_out_and_idle_ones_cannot_lock_others_out() {
    let mut config = Config::ephemeral();
    config.client.select_timeout_secs = 1;
    config.client.max_clients = 4;
    config.client.max_selecting = 2;
    let proxy = Proxy::start(config).await.unwrap();
    let _vm = TestVm::start(vm_config(36), Target::plain(proxy.vm_addrs[0]));
    identified(&proxy, "vm-00036").await;
    let mut attached = TestClient::connect(proxy.client_addr).await;
    attached.select("vm-00036").await;

    // Three idle connections: the one choosing longest makes room for the third.
    let mut idle = Vec::new();
    for _ in 0..3 {
        let mut client = TestClient::connect(proxy.client_addr).await;
        client.expect(b"ro or excl: ").await;
        idle.push(client);
    }
    idle[0].expect(b"too many clients are choosing").await;
    idle[0].expect_closed().await;
    // A client that selects still gets in (choosing, it crowds out the next idle one), and
    // the attached one was never touched.
    let mut late = TestClient::connect(proxy.client_addr).await;
    late.select("vm-00036 ro").await;
    idle[1].expect(b"too many clients are choosing").await;
    idle[1].expect_closed().await;
    // The last one times out.
    idle[2].expect(b"no VM chosen in time").await;
    idle[2].expect_closed().await;
    let text = proxy.handle().metrics_text();
    assert_eq!(
        metric(&text, "vspc_clients_dropped_selecting_total"),
        3,
        "{text}"
    );
    let snapshot = proxy.snapshot();
    assert_eq!(vms(&snapshot)[0]["clients"].as_array().unwrap().len(), 2);
    proxy.shutdown().await;
}

#[tokio::test]
async fn selection_lines_are_taken_in_turn_whatever_the_segmentation() {
    let proxy = Proxy::start(Config::ephemeral()).await.unwrap();
    let vm = TestVm::start(vm_config(37), Target::plain(proxy.vm_addrs[0]));
    identified(&proxy, "vm-00037").await;

    // A bad line then a good one, in one write: the second attaches.
    let mut pipelined = TestClient::connect(proxy.client_addr).await;
    pipelined.expect(b"ro or excl: ").await;
    pipelined.send(b"no-such-vm\r\nvm-00037\r\n").await;
    pipelined.expect(b"no VM matches").await;
    pipelined
        .expect(b"[vspc: attached to vm-00037 (rw)]\r\n")
        .await;

    // CR and LF of the line in separate segments: the LF never reaches the VM.
    let mut split = TestClient::connect(proxy.client_addr).await;
    split.expect(b"ro or excl: ").await;
    split.send(b"vm-00037\r").await;
    split.expect(b")]\r\n").await;
    split.send(b"\n").await;
    split.send(b"typed").await;
    vm.wait_received(b"typed").await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn vm_chosen_names_cannot_reach_a_terminal_raw() {
    let proxy = Proxy::start(Config::ephemeral()).await.unwrap();
    let mut config = vm_config(38);
    config.identity.name = "evil\x1b[2J\x1b]0;owned\x07".to_owned();
    let _vm = TestVm::start(config, Target::plain(proxy.vm_addrs[0]));
    wait_snapshot("the VM", || proxy.snapshot(), |s| vms(s).len() == 1).await;
    let mut client = TestClient::connect(proxy.client_addr).await;
    client.expect(b"ro or excl: ").await;
    let menu = client.menu_seen();
    assert!(
        find(&menu, b"evil\\x1b[2J\\x1b]0;owned").is_some(),
        "{:?}",
        String::from_utf8_lossy(&menu)
    );
    assert!(!menu.contains(&0x1b) && !menu.contains(&0x07), "{menu:?}");
    client.send(b"1\r\n").await;
    client.expect(b")]\r\n").await;
    let banner = client.menu_seen();
    assert!(
        find(&banner, b"attached to evil\\x1b[2J").is_some(),
        "{banner:?}"
    );
    assert!(!banner.contains(&0x1b), "{banner:?}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_vm_connection_that_never_identifies_is_closed() {
    let mut config = Config::ephemeral();
    config.vm.identify_timeout_secs = 1;
    let proxy = Proxy::start(config).await.unwrap();
    let mut silent = RawClient::connect(proxy.vm_addrs[0]).await;
    let started = Instant::now();
    // The proxy's opening negotiation, then the close.
    silent.expect_closed().await;
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(900), "{waited:?}");
    let text = proxy.handle().metrics_text();
    assert_eq!(
        metric(&text, "vspc_vm_identify_timeouts_total"),
        1,
        "{text}"
    );
    // An identified VM is not affected.
    let _vm = TestVm::start(vm_config(39), Target::plain(proxy.vm_addrs[0]));
    identified(&proxy, "vm-00039").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(vms(&proxy.snapshot())[0]["state"], "connected");
    proxy.shutdown().await;
}

#[tokio::test]
async fn only_a_trusted_vm_connection_may_start_a_vmotion() {
    let proxy = Proxy::start(Config::ephemeral()).await.unwrap();
    let original = TestVm::start(vm_config(41), Target::plain(proxy.vm_addrs[0]));
    identified(&proxy, "vm-00041").await;
    let impostor = TestVm::start(vm_config(41), Target::plain(proxy.vm_addrs[0]));
    wait_snapshot(
        "flagged entry",
        || proxy.snapshot(),
        |s| vms(s).iter().any(|v| !v["flagged"].is_null()),
    )
    .await;
    let begin = vec![0xff, 0xfa, 0xe8, 0x28, 0x51, 0x01, 0xff, 0xf0];
    impostor
        .with(|vm, _| vm.inject(vspc_emulator::Fault::Garbage(begin.clone().into())))
        .unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let text = proxy.handle().metrics_text();
        if metric(&text, "vspc_vmotions_total{event=\"notnow\"}") == 1 {
            assert_eq!(metric(&text, "vspc_vmotions_pending"), 0, "{text}");
            break;
        }
        assert!(Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    original
        .with(|vm, _| vm.inject(vspc_emulator::Fault::Garbage(begin.into())))
        .unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let text = proxy.handle().metrics_text();
        if metric(&text, "vspc_vmotions_total{event=\"goahead\"}") == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn lingering_entries_are_capped_oldest_first() {
    let mut config = Config::ephemeral();
    config.vm.max_lingering = 2;
    let proxy = Proxy::start(config).await.unwrap();
    for n in 50..54 {
        let vm = TestVm::start(vm_config(n), Target::plain(proxy.vm_addrs[0]));
        identified(&proxy, &format!("vm-{n:05}")).await;
        drop(vm);
        wait_snapshot(
            "gone",
            || proxy.snapshot(),
            |s| vms(s).iter().all(|v| v["state"] != "connected"),
        )
        .await;
    }
    let snapshot = proxy.snapshot();
    let names: Vec<String> = vms(&snapshot)
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["vm-00052", "vm-00053"]);
    let text = proxy.handle().metrics_text();
    assert_eq!(metric(&text, "vspc_lingering_evicted_total"), 2, "{text}");
    proxy.shutdown().await;
}

/// Writes `total` bytes of `block` repeated as fast as the socket takes them, and returns
/// how many it took before it stopped taking any for `stall`.
async fn write_until_stalled(
    stream: &tokio::net::TcpStream,
    block: &[u8],
    total: usize,
    stall: Duration,
) -> usize {
    let mut sent = 0;
    let mut progress = Instant::now();
    while sent < total && progress.elapsed() < stall {
        match stream.try_write(block) {
            Ok(n) => {
                sent += n;
                progress = Instant::now();
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let _ = tokio::time::timeout(Duration::from_millis(50), stream.writable()).await;
            }
            Err(e) => panic!("write failed after {sent} bytes: {e}"),
        }
    }
    sent
}

/// A socket with small kernel buffers, so that what the kernel absorbs is small beside what
/// the test writes.
async fn small_buffered(addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.set_send_buffer_size(64 * 1024).unwrap();
    socket.connect(addr).await.unwrap()
}

#[tokio::test]
async fn a_vm_that_never_reads_its_answers_is_not_read_either() {
    let proxy = Proxy::start(Config::ephemeral()).await.unwrap();
    let hostile = small_buffered(proxy.vm_addrs[0]).await;
    // DO ECHO, DONT ECHO: every one answered (WILL/WONT), and this connection never reads.
    let block: Vec<u8> = [0xff, 0xfd, 0x01, 0xff, 0xfe, 0x01].repeat(64 * 1024 / 6);
    let total = 48 << 20;
    let sent = write_until_stalled(&hostile, &block, total, Duration::from_secs(1)).await;
    // Kernel buffers on both sides and the proxy's backlog bound take a few MiB; a proxy
    // that kept reading would have taken all 48 MiB (and queued 48 MiB of answers).
    assert!(sent < 20 << 20, "the proxy read {sent} bytes of toggles");
    // Everyone else is served.
    let _vm = TestVm::start(vm_config(43), Target::plain(proxy.vm_addrs[0]));
    identified(&proxy, "vm-00043").await;
    drop(hostile);
    proxy.shutdown().await;
}

/// ESXi's side of its handshake (the capture's block A, `docs/esxi-wire.md`) up to its
/// name, without the COM-PORT offer and the serial byte that follow: sent blind, the proxy
/// identifies `vm-00000` without this connection ever reading.
fn blind_handshake() -> Vec<u8> {
    esxi::segments(esxi::BLOCK_A, true)[..8].concat()
}

#[tokio::test]
async fn client_input_to_a_vm_that_never_reads_is_held_back_at_the_client() {
    let proxy = Proxy::start(Config::ephemeral()).await.unwrap();
    let mut deaf = small_buffered(proxy.vm_addrs[0]).await;
    tokio::io::AsyncWriteExt::write_all(&mut deaf, &blind_handshake())
        .await
        .unwrap();
    identified(&proxy, "vm-00000").await;
    let mut flooder = RawClient::from_stream(small_buffered(proxy.client_addr).await);
    flooder.send(b"vm-00000\r\n").await;
    flooder.read_until(b")]\r\n").await;
    let block = vec![b'a'; 64 * 1024];
    let total = 64 << 20;
    let sent = write_until_stalled(flooder.stream(), &block, total, Duration::from_secs(1)).await;
    // What waits is bounded by kernel buffers and the proxy's per-client and per-VM caps;
    // without backpressure the proxy would have taken all 64 MiB.
    assert!(
        sent < 24 << 20,
        "the proxy took {sent} bytes for a VM that reads nothing"
    );
    // Another client and VM are served meanwhile.
    let other = TestVm::start(vm_config(45), Target::plain(proxy.vm_addrs[0]));
    identified(&proxy, "vm-00045").await;
    let mut client = TestClient::connect(proxy.client_addr).await;
    client.select("vm-00045").await;
    client.send(b"hello").await;
    other.wait_received(b"hello").await;
    drop((flooder, deaf));
    proxy.shutdown().await;
}
