//! The `vm` example against the `proxy` example, both as users run them, over loopback: it
//! connects over telnets with exactly the proxyURI the proxy printed (verified by its
//! thumbprint, as ESXi does), says why when the thumbprint is wrong, and vMotions on a timer
//! while a telnet client types and reads, losing no byte either way.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod support;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use support::*;
use tokio::io::{AsyncBufReadExt, BufReader};
use vspc_emulator::Pattern;

/// What the proxy example printed at start-up.
struct Started {
    _child: tokio::process::Child,
    _lines: StartupLines,
    vm: String,
    telnets: Option<String>,
    clients: SocketAddr,
    admin: SocketAddr,
}

async fn start_proxy(dir: &std::path::Path, tls: bool) -> Started {
    let mut command = proxy_example_with_admin(dir, "warn");
    if tls {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, certified.cert.pem()).unwrap();
        std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
        command.args(["--tls-listen", "127.0.0.1:0"]);
        command.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    let mut child = command.stderr(Stdio::inherit()).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let vm = format!("telnet://{}", line_after(&mut lines, "vm telnet://").await);
    let telnets = match tls {
        true => {
            let line = line_after(&mut lines, "vm telnets ").await;
            Some(line.split_once("proxyURI ").unwrap().1.to_owned())
        }
        false => None,
    };
    let (clients, admin) = clients_and_admin(&mut lines).await;
    Started {
        _child: child,
        _lines: lines,
        vm,
        telnets,
        clients,
        admin,
    }
}

fn vm_example(args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(example_binary("vm"));
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

async fn run(command: &mut tokio::process::Command) -> (bool, String, String) {
    let output = tokio::time::timeout(Duration::from_secs(30), command.output())
        .await
        .expect("the vm example ends")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status.success(), stdout, stderr)
}

/// A number the example's report printed (`field: N,`).
fn reported(stdout: &str, field: &str) -> u64 {
    let at = stdout.find(&format!("{field}: ")).expect(field) + field.len() + 2;
    let digits: String = stdout[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().unwrap()
}

#[tokio::test]
async fn the_vm_example_connects_with_the_printed_telnets_uri_and_says_why_not_on_a_wrong_thumbprint(
) {
    let dir = temp_dir("vm-example-tls");
    let proxy = start_proxy(&dir, true).await;
    let uri = proxy.telnets.clone().unwrap();
    let (right, _) = uri
        .split_once("#thumbprint=")
        .map(|(_, t)| (t.to_owned(), ()))
        .unwrap();

    let (ok, stdout, stderr) = run(&mut vm_example(&[&uri, "1", "1"])).await;
    assert!(ok, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("vm-00000 conn 1: connected (telnets, proxy verified)\n"),
        "{stdout}"
    );
    assert!(stdout.contains("vm-00000 conn 1: identified\n"), "{stdout}");
    assert_eq!(reported(&stdout, "errors"), 0, "{stdout}");

    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let wrong = vspc_backing::Thumbprint::sha1_of_der(other.cert.der()).to_string();
    let wrong_uri = uri.replace(&right, &wrong);
    let (ok, stdout, stderr) = run(&mut vm_example(&[&wrong_uri, "1", "1"])).await;
    assert!(!ok, "{stdout}");
    assert!(
        stderr.contains(&format!(
            "vm-00000 conn 1: connect failed: TLS: the proxy's certificate was refused: \
             thumbprint mismatch: expected {wrong}, got {right}\n"
        )),
        "{stderr}"
    );
    assert_eq!(reported(&stdout, "identified"), 0, "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_vm_example_vmotions_every_interval_and_no_client_loses_a_byte() {
    let dir = temp_dir("vm-example-vmotion");
    let proxy = start_proxy(&dir, false).await;
    let mut vm = vm_example(&[
        &proxy.vm,
        "1",
        "4",
        "--vmotion-every",
        "600ms",
        "--expect-typed",
    ])
    .spawn()
    .unwrap();
    let stdout = vm.stdout.take().unwrap();
    let stderr = vm.stderr.take().unwrap();
    let collect = |pipe: Box<dyn tokio::io::AsyncRead + Unpin + Send>| {
        tokio::spawn(async move {
            let mut text = String::new();
            let mut reader = BufReader::new(pipe);
            let _ = tokio::io::AsyncReadExt::read_to_string(&mut reader, &mut text).await;
            text
        })
    };
    let (stdout, stderr) = (collect(Box::new(stdout)), collect(Box::new(stderr)));

    wait_until_listed(proxy.admin, "vm-00000").await;
    let mut client = TestClient::connect(proxy.clients).await;
    // What follows the banner stays in `client.data`, where the rest accumulates.
    client.select("vm-00000").await;
    // Type the pattern the VM expects, in pieces, across the vMotions.
    let typed_pattern = Pattern::Noise { seed: 0 };
    let mut typed = 0u64;
    for _ in 0..20 {
        let mut piece = Vec::new();
        typed_pattern.extend(typed, 97, &mut piece);
        client.send(&piece).await;
        typed += piece.len() as u64;
        client.drain(Duration::from_millis(100)).await;
    }
    let status = tokio::time::timeout(Duration::from_secs(30), vm.wait())
        .await
        .unwrap()
        .unwrap();
    let (stdout, stderr) = (stdout.await.unwrap(), stderr.await.unwrap());
    assert!(status.success(), "{stdout}\n{stderr}");
    client.drain(Duration::from_millis(300)).await;
    let seen = &client.data;

    // The VM got every typed byte, in order (its verifier checks the pattern).
    assert_eq!(reported(&stdout, "client_received"), typed, "{stdout}");
    assert_eq!(reported(&stdout, "client_mismatches"), 0, "{stdout}");
    // The client got the VM's whole console stream, byte for byte.
    let sent = reported(&stdout, "serial_sent");
    let mut expected = Vec::new();
    Pattern::Lines {
        tag: b"vm-00000".to_vec(),
    }
    .extend(0, sent as usize, &mut expected);
    assert!(
        *seen == expected,
        "client got {} bytes, the VM sent {sent}:\n{}\n{stdout}",
        seen.len(),
        String::from_utf8_lossy(seen)
    );
    // The vMotions happened, and the proxy lists them.
    let vmotions = reported(&stdout, "vmotions");
    assert!(vmotions >= 4, "{stdout}");
    assert_eq!(reported(&stdout, "vmotions_failed"), 0, "{stdout}");
    assert_eq!(
        stdout.matches("vMotion completed").count() as u64,
        vmotions,
        "{stdout}"
    );
    let (_, body) = http_get(proxy.admin, "/vms").await;
    let listing: serde_json::Value = serde_json::from_str(&body).unwrap();
    let entry = vms(&listing)
        .into_iter()
        .find(|v| v["name"] == "vm-00000")
        .unwrap();
    // Each completed one, by the sequence the VM sent in VMOTION-BEGIN (1, 2, ...).
    let completed: Vec<&str> = entry["vmotions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["event"].as_str().unwrap().starts_with("complete"))
        .map(|r| r["sequence"].as_str().unwrap())
        .collect();
    let sequences: Vec<String> = (1..=vmotions).map(|n| format!("{n:08x}")).collect();
    assert_eq!(completed, sequences, "{entry:#}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Waits (bounded) until the admin listing shows `name` connected.
async fn wait_until_listed(admin: SocketAddr, name: &str) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (_, body) = http_get(admin, "/vms").await;
        let listing: serde_json::Value = serde_json::from_str(&body).unwrap();
        if has_vm(&listing, name) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name} not listed: {listing:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
