//! The SSH listener with the real OpenSSH client (`ssh -tt`, keys made by `ssh-keygen`):
//! attach by name, modes and grants, kick, the in-band escape, byte-exact transfer of every
//! byte value both ways, a vMotion and a reconnect under an attached session, and bad input.
//! Skipped, saying so, only where `ssh` or `ssh-keygen` is not installed.
#![allow(clippy::disallowed_methods)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use support::typing::{key, line, type_and_print, Typed, Typist};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;
use vspc_emulator::{EmulatorEvent, FinOrder, VmotionOutcome, VmotionPlan};
use vspc_server::{Server, ServerConfig};

/// Whether OpenSSH's client and key generator are installed; says why a test skips.
fn have_openssh() -> bool {
    let found = |tool: &str| {
        std::process::Command::new(tool)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    };
    let ok = found("ssh") && found("ssh-keygen");
    if !ok {
        eprintln!("SKIPPED: OpenSSH's ssh and ssh-keygen are not installed (.ci/run installs openssh-client)");
    }
    ok
}

/// A temp dir with keys for alice (read-write on vm-00001, watch everything), bob (watch
/// vm-00001 only), root (everything, kick included) and a stranger not in
/// `authorized_keys`.
struct Keys {
    dir: PathBuf,
}

impl Keys {
    fn new(tag: &str) -> Keys {
        let dir = temp_dir(tag);
        let mut authorized = String::new();
        for (name, options) in [
            ("alice", "console=\"vm-00001:rw,excl\",console=\"*:ro\""),
            ("bob", "console=\"vm-00001:ro\""),
            ("root", "console=\"*:all\""),
            ("stranger", ""),
        ] {
            let key = dir.join(name);
            let status = std::process::Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C"])
                .arg(format!("{name}@test"))
                .arg("-f")
                .arg(&key)
                .status()
                .unwrap();
            assert!(status.success());
            if name != "stranger" {
                let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
                authorized.push_str(&format!("{options} {public}"));
            }
        }
        std::fs::write(dir.join("authorized_keys"), authorized).unwrap();
        Keys { dir }
    }

    fn config(&self) -> ServerConfig {
        let mut config = ServerConfig::ephemeral();
        config.ssh.listen = Some("127.0.0.1:0".parse().unwrap());
        config.ssh.host_key = self.dir.join("host_key");
        config.ssh.authorized_keys = self.dir.join("authorized_keys");
        config.log.audit = Some(self.dir.join("audit.log"));
        config
    }

    fn audit(&self) -> String {
        std::fs::read_to_string(self.dir.join("audit.log")).unwrap_or_default()
    }
}

impl Drop for Keys {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `ssh -tt` as a person would run it, its terminal replaced by pipes.
struct Ssh {
    child: Child,
    stdin: Option<ChildStdin>,
    rx: mpsc::UnboundedReceiver<Bytes>,
    data: Vec<u8>,
    stderr: tokio::task::JoinHandle<String>,
    closed: bool,
}

impl Typist for Ssh {
    async fn type_keys(&mut self, keys: &[u8]) {
        self.send(keys).await;
    }

    async fn pause(&mut self) {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

impl Ssh {
    fn spawn(server: &Server, key: &Path, login: &str, command: Option<&str>) -> Ssh {
        let port = server.ssh_addr.unwrap().port().to_string();
        let mut cmd = Command::new("ssh");
        cmd.args(["-tt", "-p", &port, "-i"])
            .arg(key)
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "BatchMode=yes",
                "-o",
                "LogLevel=ERROR",
                // ssh's own ~ escapes off: every byte is the console's.
                "-e",
                "none",
                "-l",
                login,
                "127.0.0.1",
            ])
            .args(command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn ssh");
        let stdin = child.stdin.take();
        let mut stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            while let Ok(n) = stdout.read(&mut buf).await {
                if n == 0 || tx.send(Bytes::copy_from_slice(&buf[..n])).is_err() {
                    break;
                }
            }
        });
        let stderr = tokio::spawn(async move {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text).await;
            text
        });
        Ssh {
            child,
            stdin,
            rx,
            data: Vec::new(),
            stderr,
            closed: false,
        }
    }

    /// Reads until `needle` appears; returns everything up to and including it, consumed.
    async fn expect(&mut self, needle: &[u8]) -> Vec<u8> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(at) = find(&self.data, needle) {
                return self.data.drain(..at + needle.len()).collect();
            }
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(bytes)) => self.data.extend_from_slice(&bytes),
                Ok(None) => {
                    self.closed = true;
                    panic!(
                        "ssh closed before {:?}; got {:?}",
                        String::from_utf8_lossy(needle),
                        String::from_utf8_lossy(&self.data)
                    );
                }
                Err(_) => panic!(
                    "timed out waiting for {:?}; got {:?}",
                    String::from_utf8_lossy(needle),
                    String::from_utf8_lossy(&self.data)
                ),
            }
        }
    }

    /// Reads exactly `expected` next.
    async fn expect_exact(&mut self, expected: &[u8]) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.data.len() < expected.len() {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(bytes)) => self.data.extend_from_slice(&bytes),
                _ => break,
            }
        }
        let got: Vec<u8> = self
            .data
            .drain(..expected.len().min(self.data.len()))
            .collect();
        assert_eq!(got, expected);
    }

    /// Reads what comes within `limit`.
    async fn drain(&mut self, limit: Duration) -> Vec<u8> {
        let deadline = tokio::time::Instant::now() + limit;
        while let Ok(Some(bytes)) = tokio::time::timeout_at(deadline, self.rx.recv()).await {
            self.data.extend_from_slice(&bytes);
        }
        std::mem::take(&mut self.data)
    }

    async fn send(&mut self, data: &[u8]) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(data).await.unwrap();
        stdin.flush().await.unwrap();
    }

    /// Waits for ssh to exit; its status and stderr.
    async fn exit(mut self) -> (std::process::ExitStatus, String) {
        drop(self.stdin.take());
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("ssh exits")
            .unwrap();
        let stderr = tokio::time::timeout(WAIT, self.stderr)
            .await
            .unwrap()
            .unwrap();
        (status, stderr)
    }
}

fn banner(name: &str, mode: &str) -> Vec<u8> {
    format!("\r\n[vspc: attached to {name} ({mode})]\r\n").into_bytes()
}

async fn proxy_with_vms(keys: &Keys, count: u64) -> (Server, Vec<TestVm>) {
    let server = Server::start(keys.config()).await.unwrap();
    let mut vms = Vec::new();
    for n in 1..=count {
        vms.push(TestVm::start(
            vm_config(n),
            Target::plain(server.vm_addrs[0]),
        ));
        identified(&server, &format!("vm-{n:05}")).await;
    }
    (server, vms)
}

#[tokio::test]
async fn attach_by_name_and_every_byte_value_both_ways() {
    if !have_openssh() {
        return;
    }
    let keys = Keys::new("ssh-bytes");
    let (server, vms) = proxy_with_vms(&keys, 1).await;
    let fingerprint = server.ssh_fingerprint.clone().unwrap();
    assert!(fingerprint.starts_with("SHA256:"), "{fingerprint}");
    let mode = std::fs::metadata(keys.dir.join("host_key")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );
    let mut ssh = Ssh::spawn(&server, &keys.dir.join("alice"), "vm-00001", None);
    ssh.expect_exact(&banner("vm-00001", "rw")).await;

    // VM to client: all 256 values, twice, as one write.
    let all: Vec<u8> = (0..=255u8).chain(0..=255u8).collect();
    vms[0].with(|vm, _| vm.send_serial(&all)).unwrap();
    ssh.expect_exact(&all).await;

    // Client to VM: all 256 values; Ctrl-] (0x1d) is doubled to pass literally.
    let mut typed = Vec::new();
    for b in 0..=255u8 {
        typed.push(b);
        if b == 0x1d {
            typed.push(b);
        }
    }
    ssh.send(&typed).await;
    let expected: Vec<u8> = (0..=255u8).collect();
    vms[0].wait_received(&expected).await;
    assert_eq!(vms[0].received(), expected);

    // The admin listing names the attached user.
    let vm = &vms_of(&server)[0];
    assert_eq!(vm["clients"][0]["user"], "alice@test");
    assert_eq!(vm["clients"][0]["mode"], "read-write");

    // Ctrl-] b is a serial break; Ctrl-] d detaches and ssh exits.
    ssh.send(b"\x1db").await;
    vms[0]
        .wait("a serial break", |_, seen| {
            seen.events
                .iter()
                .any(|e| matches!(e, EmulatorEvent::SerialBreak { .. }))
        })
        .await;
    ssh.send(b"\x1dd").await;
    ssh.expect_exact(b"\r\n[vspc: detached]\r\n").await;
    let (status, stderr) = ssh.exit().await;
    assert!(status.success(), "{status} {stderr} {}", keys.audit());
    assert_eq!(vms[0].received(), expected, "the escapes reach no VM");

    let audit = keys.audit();
    for needle in [
        " connect peer=127.0.0.1:",
        " auth-ok peer=127.0.0.1:",
        " login=vm-00001 key=SHA256:",
        " user=alice@test",
        " attach client=1 user=alice@test peer=127.0.0.1:",
        " vm=1 name=vm-00001 mode=rw",
        " break client=1 user=alice@test",
        " dropped client=1 user=alice@test",
        " reason=Detached",
        " detach client=1 user=alice@test",
        " bytes_in=256 bytes_out=",
        " disconnect peer=127.0.0.1:",
    ] {
        assert!(audit.contains(needle), "{needle:?} not in {audit}");
    }
    server.shutdown().await;
}

fn vms_of(server: &Server) -> Vec<serde_json::Value> {
    vms(&server.snapshot())
}

#[tokio::test]
async fn grants_decide_modes_and_kick_moves_the_write_lock() {
    if !have_openssh() {
        return;
    }
    let keys = Keys::new("ssh-grants");
    let (server, vms) = proxy_with_vms(&keys, 2).await;

    // bob may only watch: attached read-only by default, his typing goes nowhere.
    let mut bob = Ssh::spawn(&server, &keys.dir.join("bob"), "vm-00001", None);
    bob.expect_exact(&banner("vm-00001", "ro")).await;
    bob.send(b"bob types").await;
    // A rule for that VM in no mode: refused with why, then the menu of what he may use.
    let mut refused = Ssh::spawn(&server, &keys.dir.join("bob"), "vm-00002", None);
    refused
        .expect(b"vspc: bob@test may not attach to vm-00002 as rw (allowed there: nothing)\r\n")
        .await;
    let menu = refused.expect(b"select by number").await;
    assert!(find(&menu, b"vm-00001/").is_some() && find(&menu, b"vm-00002/").is_none());
    drop(refused);
    // Asking for more than the grant: refused the same way.
    let mut bob_rw = Ssh::spawn(&server, &keys.dir.join("bob"), "vm-00001+rw", None);
    bob_rw
        .expect(b"may not attach to vm-00001 as rw (allowed there: ro)")
        .await;
    drop(bob_rw);

    // alice holds vm-00001 exclusively (named through the command, `ssh -t host NAME`).
    let mut alice = Ssh::spawn(
        &server,
        &keys.dir.join("alice"),
        "ignored",
        Some("vm-00001+excl"),
    );
    alice.expect_exact(&banner("vm-00001", "excl")).await;
    let mut second = Ssh::spawn(&server, &keys.dir.join("alice"), "vm-00001", None);
    second
        .expect(b"vspc: vm-00001 is held exclusively by another client")
        .await;
    drop(second);
    alice.send(b"alice1").await;
    vms[0].wait_received(b"alice1").await;

    // alice has no kick right; root does: the lock moves and alice is told by whom.
    let mut no_kick = Ssh::spawn(&server, &keys.dir.join("alice"), "vm-00001+kick", None);
    no_kick.expect(b"may not attach to vm-00001 as kick").await;
    drop(no_kick);
    let mut root = Ssh::spawn(&server, &keys.dir.join("root"), "vm-00001+kick", None);
    root.expect_exact(&banner("vm-00001", "excl")).await;
    alice.expect(b"[vspc: root@test (127.0.0.1:").await;
    alice
        .expect(b") took the write lock on vm-00001; you are read-only now]\r\n")
        .await;
    alice.send(b"alice2").await;
    root.send(b"root1").await;
    vms[0].wait_received(b"alice1root1").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(vms[0].received(), b"alice1root1");

    let vm = &vms_of(&server)[0];
    assert_eq!(vm["exclusive"], vm["clients"][2]["id"], "{vm:#}");
    let users: Vec<(String, String)> = vm["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["user"].to_string(), c["mode"].to_string()))
        .collect();
    assert_eq!(
        users,
        [
            ("\"bob@test\"".into(), "\"read-only\"".into()),
            ("\"alice@test\"".into(), "\"read-only\"".into()),
            ("\"root@test\"".into(), "\"exclusive\"".into()),
        ]
    );
    let audit = keys.audit();
    assert!(audit.contains(" kick client="), "{audit}");
    assert!(audit.contains(" user=alice@test"), "{audit}");
    assert!(audit.contains(" by_user=root@test"), "{audit}");
    drop((bob, alice, root));
    server.shutdown().await;
}

#[tokio::test]
async fn unknown_keys_are_refused_and_audited() {
    if !have_openssh() {
        return;
    }
    let keys = Keys::new("ssh-unknown");
    let (server, _vms) = proxy_with_vms(&keys, 1).await;
    let ssh = Ssh::spawn(&server, &keys.dir.join("stranger"), "vm-00001", None);
    let (status, stderr) = ssh.exit().await;
    assert!(!status.success());
    assert!(stderr.contains("Permission denied (publickey)"), "{stderr}");
    let fingerprint = std::process::Command::new("ssh-keygen")
        .arg("-lf")
        .arg(keys.dir.join("stranger.pub"))
        .output()
        .unwrap();
    let fingerprint = String::from_utf8(fingerprint.stdout).unwrap();
    let fingerprint = fingerprint.split_whitespace().nth(1).unwrap().to_owned();
    let audit = keys.audit();
    assert!(
        audit.contains(" auth-fail peer=127.0.0.1:")
            && audit.contains(&format!("key={fingerprint} reason=\"unknown key\"")),
        "{audit}"
    );
    assert!(!audit.contains(" auth-ok "), "{audit}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_session_stays_attached_across_a_vmotion_and_a_reconnect() {
    if !have_openssh() {
        return;
    }
    let keys = Keys::new("ssh-vmotion");
    let (server, test_vms) = proxy_with_vms(&keys, 1).await;
    let vm = &test_vms[0];
    let mut ssh = Ssh::spawn(&server, &keys.dir.join("root"), "vm-00001", None);
    ssh.expect_exact(&banner("vm-00001", "rw")).await;

    let mut plan = VmotionPlan::new(Bytes::from_static(b"\x44\xda\xff\xf1"));
    plan.fin_order = FinOrder::FinBeforeComplete;
    let mut done = Typed::default();
    let vmotion = Some((20, plan));
    type_and_print(vm, &mut ssh, 0..60, vmotion, key, line, &mut done).await;
    let Typed { mut typed, printed } = done;
    vm.wait("the vMotion's end", |_, seen| {
        seen.events
            .iter()
            .any(|e| matches!(e, EmulatorEvent::Vmotion(_)))
    })
    .await;
    let outcome = vm.seen(|s| {
        s.events.iter().find_map(|e| match e {
            EmulatorEvent::Vmotion(outcome) => Some(outcome.clone()),
            _ => None,
        })
    });
    assert!(
        matches!(outcome, Some(VmotionOutcome::Completed { .. })),
        "{outcome:?}"
    );
    vm.wait_received(&typed).await;
    ssh.expect_exact(&printed).await;

    // The VM's port reconnects (ESXi closes and reopens it): same entry, same session.
    vm.with(|vm, now| vm.set_connected(now, true)).unwrap();
    wait_snapshot(
        "re-attached",
        || server.snapshot(),
        |s| vms(s)[0]["connections"] == 3 && vms(s)[0]["state"] == "connected",
    )
    .await;
    vm.with(|vm, _| vm.send_serial(b"after\r\n")).unwrap();
    ssh.expect_exact(b"after\r\n").await;
    ssh.send(b"still here").await;
    typed.extend_from_slice(b"still here");
    vm.wait_received(&typed).await;
    assert_eq!(vm.received(), typed);
    drop(ssh);
    server.shutdown().await;
}

#[tokio::test]
async fn garbage_on_the_ssh_port_is_closed_and_the_listener_keeps_serving() {
    if !have_openssh() {
        return;
    }
    let keys = Keys::new("ssh-garbage");
    let mut config = keys.config();
    // A connection that starts a packet and never finishes it is cut at this deadline.
    config.ssh.auth_timeout_secs = 2;
    let server = Server::start(config).await.unwrap();
    let _vm = TestVm::start(vm_config(1), Target::plain(server.vm_addrs[0]));
    identified(&server, "vm-00001").await;
    for garbage in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &b"SSH-2.0-x\r\n\x00\x00\xff\xff\xff\xff\x00garbage"[..],
        &[0xffu8; 70_000][..],
    ] {
        let mut stream = tokio::net::TcpStream::connect(server.ssh_addr.unwrap())
            .await
            .unwrap();
        let _ = stream.write_all(garbage).await;
        let mut buf = vec![0u8; 4096];
        let closed = tokio::time::timeout(WAIT, async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(
            closed.is_ok(),
            "the server closes a connection sending {:?}",
            &garbage[..8]
        );
    }
    let mut ssh = Ssh::spawn(&server, &keys.dir.join("root"), "vm-00001", None);
    ssh.expect_exact(&banner("vm-00001", "rw")).await;
    drop(ssh);
    server.shutdown().await;
}

#[tokio::test]
async fn a_session_that_stops_reading_is_dropped_and_the_vm_goes_on() {
    if !have_openssh() {
        return;
    }
    let keys = Keys::new("ssh-stalled");
    let mut config = keys.config();
    config.client.output_budget = 64 * 1024;
    let server = Server::start(config).await.unwrap();
    let vm = TestVm::start(vm_config(1), Target::plain(server.vm_addrs[0]));
    identified(&server, "vm-00001").await;
    let mut stalled = Ssh::spawn(&server, &keys.dir.join("root"), "vm-00001+ro", None);
    stalled.expect_exact(&banner("vm-00001", "ro")).await;
    let mut watcher = Ssh::spawn(&server, &keys.dir.join("alice"), "vm-00001", None);
    watcher.expect_exact(&banner("vm-00001", "rw")).await;
    signal(stalled.child.id().unwrap(), "STOP");

    // The VM floods; the stalled session falls a whole budget behind and is dropped, while
    // the other keeps up.
    let chunk = vec![b'x'; 16 * 1024];
    let mut sent = 0usize;
    let deadline = tokio::time::Instant::now() + WAIT;
    while !keys.audit().contains("reason=TooSlow") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never dropped: {}",
            keys.audit()
        );
        if vm.with(|vm, _| vm.send_serial(&chunk)).is_ok() {
            sent += chunk.len();
        }
        let got = watcher.drain(Duration::from_millis(5)).await;
        assert!(got.iter().all(|b| *b == b'x'));
    }
    assert!(keys.audit().contains("user=root@test"), "{}", keys.audit());
    wait_snapshot(
        "one client left",
        || server.snapshot(),
        |s| {
            vms(s)[0]["clients"]
                .as_array()
                .is_some_and(|c| c.len() == 1)
        },
    )
    .await;
    signal(stalled.child.id().unwrap(), "CONT");
    // Its connection is cut: ssh exits (what it had buffered before is all it gets).
    let (_, _) = stalled.exit().await;
    vm.with(|vm, _| vm.send_serial(b"end")).unwrap();
    watcher.expect(b"end").await;
    assert!(sent > 64 * 1024);
    drop(watcher);
    server.shutdown().await;
}

/// An in-process SSH client (russh) that trusts any host key.
struct Trusting;

impl russh::client::Handler for Trusting {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        _key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

/// Opens a session as `login` with `key`, the way `ssh -tt` does (pty, then shell).
async fn russh_session(
    addr: std::net::SocketAddr,
    key: &std::sync::Arc<russh::keys::PrivateKey>,
    login: &str,
) -> (
    russh::client::Handle<Trusting>,
    russh::Channel<russh::client::Msg>,
) {
    let config = std::sync::Arc::new(russh::client::Config::default());
    let mut session = russh::client::connect(config, addr, Trusting)
        .await
        .unwrap();
    let auth = session
        .authenticate_publickey(
            login,
            russh::keys::PrivateKeyWithHashAlg::new(key.clone(), None),
        )
        .await
        .unwrap();
    assert!(auth.success());
    let channel = session.channel_open_session().await.unwrap();
    channel
        .request_pty(false, "xterm", 80, 24, 0, 0, &[])
        .await
        .unwrap();
    channel.request_shell(false).await.unwrap();
    (session, channel)
}

/// Reads a channel until `want` bytes came (bounded); what came.
async fn read_channel(channel: &mut russh::Channel<russh::client::Msg>, want: usize) -> Vec<u8> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while got.len() < want {
        match tokio::time::timeout_at(deadline, channel.wait()).await {
            Ok(Some(russh::ChannelMsg::Data { data })) => got.extend_from_slice(&data),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    got
}

#[tokio::test]
async fn many_sessions_on_one_vm_all_get_the_same_bytes() {
    if !have_openssh() {
        return;
    }
    const SESSIONS: usize = 100;
    let keys = Keys::new("ssh-many");
    let (server, vms) = proxy_with_vms(&keys, 1).await;
    let addr = server.ssh_addr.unwrap();
    let key =
        std::sync::Arc::new(russh::keys::load_secret_key(keys.dir.join("root"), None).unwrap());
    let mut opening = tokio::task::JoinSet::new();
    for _ in 0..SESSIONS {
        let key = key.clone();
        opening.spawn(async move {
            let (session, mut channel) = russh_session(addr, &key, "vm-00001+ro").await;
            let expected = banner("vm-00001", "ro");
            assert_eq!(read_channel(&mut channel, expected.len()).await, expected);
            (session, channel)
        });
    }
    let mut sessions = Vec::new();
    while let Some(opened) = opening.join_next().await {
        sessions.push(opened.unwrap());
    }
    assert_eq!(
        vms_of(&server)[0]["clients"].as_array().unwrap().len(),
        SESSIONS
    );

    let pattern: Vec<u8> = (0..64 * 1024u32).map(|i| (i * 7 % 251) as u8).collect();
    vms[0].with(|vm, _| vm.send_serial(&pattern)).unwrap();
    let mut reading = tokio::task::JoinSet::new();
    for (session, mut channel) in sessions {
        let len = pattern.len();
        reading.spawn(async move {
            let got = read_channel(&mut channel, len).await;
            drop(session);
            got
        });
    }
    while let Some(got) = reading.join_next().await {
        assert!(got.unwrap() == pattern, "a session got other bytes");
    }
    server.shutdown().await;
}
