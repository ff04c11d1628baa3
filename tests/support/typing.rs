//! A client typing through a vMotion while its VM prints, for every kind of client (telnet,
//! SSH, the web terminal): what went each way, for the caller to check byte for byte.

use std::future::Future;
use std::ops::Range;
use std::time::Duration;

use vspc_emulator::VmotionPlan;
use vspc_testkit::net::TestClient;

use super::TestVm;

/// A client that can type keys and pause between them.
pub trait Typist {
    /// Sends `keys` as typed.
    fn type_keys(&mut self, keys: &[u8]) -> impl Future<Output = ()>;
    /// A short pause between keys (reading what arrived, for a client that can).
    fn pause(&mut self) -> impl Future<Output = ()>;
}

impl Typist for TestClient {
    async fn type_keys(&mut self, keys: &[u8]) {
        self.send(keys).await;
    }

    async fn pause(&mut self) {
        self.drain(Duration::from_millis(2)).await;
    }
}

/// What went each way while a client typed through a vMotion.
#[derive(Debug, Default)]
pub struct Typed {
    /// What the client typed, in order: the VM must receive exactly this.
    pub typed: Vec<u8>,
    /// What the VM printed, in order: the client must read exactly this.
    pub printed: Vec<u8>,
}

/// A key with CR and 0xFF in it: escaping and line endings must survive too.
pub fn key(i: u32) -> Vec<u8> {
    let mut key = format!("k{i:03}\r").into_bytes();
    key.push(0xff);
    key
}

/// A line the VM prints.
pub fn line(i: u32) -> Vec<u8> {
    format!("o{i:03}\n").into_bytes()
}

/// For each round `i`, the client types `key(i)` and the VM prints `line(i)` (unless it is
/// in transit: a VM between hosts has no connection to print on); with `vmotion = Some((at,
/// plan))` the VM starts a vMotion with `plan` at round `at`. What went each way is added to
/// `done`; the caller waits for the vMotion's outcome and checks the bytes.
pub async fn type_and_print(
    vm: &TestVm,
    client: &mut impl Typist,
    rounds: Range<u32>,
    vmotion: Option<(u32, VmotionPlan)>,
    key: impl Fn(u32) -> Vec<u8>,
    line: impl Fn(u32) -> Vec<u8>,
    done: &mut Typed,
) {
    for i in rounds {
        let keys = key(i);
        client.type_keys(&keys).await;
        done.typed.extend_from_slice(&keys);
        if !vm.with(|vm, _| vm.is_migrating()) {
            let printed = line(i);
            if vm.with(|vm, _| vm.send_serial(&printed)).is_ok() {
                done.printed.extend_from_slice(&printed);
            }
        }
        if let Some((_, plan)) = vmotion.as_ref().filter(|(at, _)| *at == i) {
            vm.with(|vm, now| vm.start_vmotion(now, plan.clone()))
                .expect("the vMotion starts");
        }
        client.pause().await;
    }
}
