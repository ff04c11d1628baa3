//! A real RFC 2217 client, pyserial's `rfc2217://`, against the concentrator's client ports:
//! it opens a VM's console at one baud rate, changes it, sends a break, and writes and reads
//! all 256 byte values exactly; a read-only client's changes are refused. pyserial comes from
//! PyPI into a virtual environment of the test's own (or `VSPC_PYTHON`, which `.ci/run` sets).
#![allow(clippy::disallowed_methods)]

mod support;

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;

use support::*;
use vspc_emulator::EmulatorEvent;
use vspc_server::{Server as Proxy, ServerConfig as Config};

/// A Python with pyserial: `VSPC_PYTHON`, or a virtual environment made once under the
/// test's target directory. `None` (the test says it skipped) only without `python3`.
fn pyserial_python() -> Option<PathBuf> {
    static PYTHON: OnceLock<Option<PathBuf>> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            if let Ok(python) = std::env::var("VSPC_PYTHON") {
                return Some(PathBuf::from(python));
            }
            let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("pyserial-venv");
            let python = venv.join("bin/python");
            let has_pyserial = |python: &PathBuf| {
                std::process::Command::new(python)
                    .args(["-c", "import serial.rfc2217"])
                    .status()
                    .is_ok_and(|s| s.success())
            };
            if has_pyserial(&python) {
                return Some(python);
            }
            let made = std::process::Command::new("python3")
                .args(["-m", "venv"])
                .arg(&venv)
                .status();
            match made {
                Err(_) => return None,
                Ok(status) => assert!(status.success(), "python3 -m venv failed"),
            }
            let pip = std::process::Command::new(venv.join("bin/pip"))
                .args(["install", "-q", "pyserial==3.5"])
                .status()
                .unwrap();
            assert!(pip.success(), "pip install pyserial failed");
            assert!(has_pyserial(&python));
            Some(python)
        })
        .clone()
}

/// Starts `script` with the port's URL as its argument.
fn run_python(python: &PathBuf, script: &str, url: &str) -> tokio::process::Child {
    tokio::process::Command::new(python)
        .args(["-c", script, url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// The script's stdout once it exits, asserting success.
async fn finished(child: tokio::process::Child) -> String {
    let output = tokio::time::timeout(WAIT * 3, child.wait_with_output())
        .await
        .expect("pyserial script timed out")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "pyserial script failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Opens at 115200 (opening purges its input: the attach banner), changes to 57600, sends a
/// break, writes all 256 byte values, then reads them back reversed from the VM.
const READ_WRITE: &str = r#"
import sys, serial
s = serial.serial_for_url(sys.argv[1], baudrate=115200, timeout=10)
assert s.baudrate == 115200
s.baudrate = 57600
s.send_break(0.1)
s.write(bytes(range(256)))
s.flush()
got = s.read(256)
assert got == bytes(reversed(range(256))), got
s.close()
print("ok")
"#;

#[tokio::test]
async fn pyserial_opens_a_console_changes_the_baud_rate_sends_a_break_and_moves_every_byte() {
    let Some(python) = pyserial_python() else {
        eprintln!("skipped: no python3 to run pyserial with");
        return;
    };
    let mut config = Config::ephemeral();
    config.client.sticky_ports = true;
    let proxy = Proxy::start(config).await.unwrap();
    let vm = TestVm::start(vm_config(46), Target::plain(proxy.vm_addrs[0]));
    identified(&proxy, "vm-00046").await;
    let sticky = wait_for_sticky(&proxy, "vm-00046").await;
    let mut script = run_python(&python, READ_WRITE, &format!("rfc2217://{sticky}"));
    let all: Vec<u8> = (0..=255).collect();
    let deadline = std::time::Instant::now() + WAIT;
    while vm.received() != all {
        if script.try_wait().unwrap().is_some() || std::time::Instant::now() > deadline {
            let _ = script.start_kill();
            let out = script.wait_with_output().await.unwrap();
            panic!(
                "the VM got {:?}; pyserial: {}{}",
                vm.received(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // The break came first, then every byte, in order.
    vm.seen(|seen| {
        let first_break = seen
            .events
            .iter()
            .position(|e| matches!(e, EmulatorEvent::SerialBreak { .. }))
            .expect("no serial break");
        let first_data = seen
            .events
            .iter()
            .position(|e| matches!(e, EmulatorEvent::ClientData { .. }))
            .unwrap();
        assert!(first_break < first_data, "{:?}", seen.events);
    });
    let reversed: Vec<u8> = all.iter().rev().copied().collect();
    vm.with(|vm, _| vm.send_serial(&reversed)).unwrap();
    assert_eq!(finished(script).await.trim(), "ok");
    proxy.shutdown().await;
}

/// Opens on the menu port (its settings are acknowledged while it chooses), attaches read
/// only, and finds a baud-rate change and a break refused.
const READ_ONLY: &str = r#"
import sys, serial
s = serial.serial_for_url(sys.argv[1], baudrate=115200, timeout=10)
s.write(b"vm-00047 ro\r\n")
banner = s.read_until(b"(ro)]\r\n")
assert banner.endswith(b"(ro)]\r\n"), banner
try:
    s.baudrate = 57600
    print("baud rate accepted")
except (ValueError, serial.SerialException) as e:
    print("baud rate refused")
try:
    s.break_condition = True
    print("break accepted")
except (ValueError, serial.SerialException) as e:
    print("break refused")
print(s.read(5))
"#;

#[tokio::test]
async fn a_read_only_pyserial_client_cannot_change_the_port() {
    let Some(python) = pyserial_python() else {
        eprintln!("skipped: no python3 to run pyserial with");
        return;
    };
    let proxy = Proxy::start(Config::ephemeral()).await.unwrap();
    let vm = TestVm::start(vm_config(47), Target::plain(proxy.vm_addrs[0]));
    identified(&proxy, "vm-00047").await;
    let script = run_python(
        &python,
        READ_ONLY,
        &format!("rfc2217://{}", proxy.client_addr),
    );
    // Once it is attached (its refusals take it a while), the VM says hello.
    wait_snapshot(
        "read-only client",
        || proxy.snapshot(),
        |s| {
            vms(s)[0]["clients"]
                .as_array()
                .is_some_and(|c| !c.is_empty())
        },
    )
    .await;
    vm.with(|vm, _| vm.send_serial(b"hello")).unwrap();
    let out = finished(script).await;
    assert_eq!(out, "baud rate refused\nbreak refused\nb'hello'\n");
    // Nothing reached the VM: no break, no bytes.
    vm.seen(|seen| {
        assert!(seen.received.is_empty());
        assert!(!seen
            .events
            .iter()
            .any(|e| matches!(e, EmulatorEvent::SerialBreak { .. })));
    });
    proxy.shutdown().await;
}

async fn wait_for_sticky(proxy: &Proxy, name: &str) -> std::net::SocketAddr {
    wait_snapshot(
        "sticky port",
        || proxy.snapshot(),
        |s| vms(s)[0]["sticky_port"].is_string(),
    )
    .await;
    proxy.sticky_addr(name).unwrap()
}
