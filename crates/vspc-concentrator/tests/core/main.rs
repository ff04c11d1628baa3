//! The concentrator core on a simulated clock, byte for byte: emulated ESXi VMs and raw and
//! telnet clients driven through the in-memory harness (`support`), no sockets.

#[path = "../support/mod.rs"]
mod support;

mod clients;
mod flow;
mod lifecycle;
mod remote;
mod serial;
mod shared;
mod users;
mod vmotion;

use std::time::Duration;

use support::{Harness, VmInput};
use vspc_concentrator::vspc_proto::{NotNowReason, RejectReason, SessionId};
use vspc_concentrator::{
    AttachError, ClientId, ConcentratorConfig, DropReason, Event, Mode, Refused, Transport, VmId,
    VmState, VmotionStep, WriteError,
};
use vspc_emulator::{
    AbortReason, EmulatorConfig, EmulatorEvent, FinOrder, VmIdentity, VmotionOutcome, VmotionPlan,
};

/// What the concentrator offers a telnet client first: WILL ECHO, WILL SGA, WILL BINARY,
/// DO BINARY, DO SGA.
const NEGOTIATION: &[u8] = b"\xff\xfb\x01\xff\xfb\x03\xff\xfb\x00\xff\xfd\x00\xff\xfd\x03";
const UUID_1: &str = "01234567-89ab-cdef-fedc-000000000001";
const UUID_2: &str = "01234567-89ab-cdef-fedc-000000000002";
const GOODBYE_SLOW: &[u8] =
    b"\r\n[vspc: output buffer overflow: this client reads too slowly and was disconnected]\r\n";
const GOODBYE_REMOVED: &[u8] = b"\r\n[vspc: the VM did not come back; closing]\r\n";
const GOODBYE_SHUTDOWN: &[u8] = b"\r\n[vspc: the concentrator is shutting down; goodbye]\r\n";
const PROMPT: &str = "select by number, name[/label] or UUID, then optionally ro or excl: ";

fn banner(name: &str, mode: &str) -> Vec<u8> {
    format!("\r\n[vspc: attached to {name} ({mode})]\r\n").into_bytes()
}

fn harness() -> Harness {
    Harness::new(ConcentratorConfig::default())
}

fn config() -> ConcentratorConfig {
    ConcentratorConfig::default()
}

/// A VM with `identity` and a service URI.
fn vm_with_uri(h: &mut Harness, n: u64, uri: &'static str) -> usize {
    let mut config = EmulatorConfig::new(VmIdentity::numbered(n));
    config.port.service_uri = uri.into();
    let i = h.add_vm(config);
    h.power_on(i);
    i
}

/// A client that selected with `line` and is attached: its output so far (menu, echo,
/// banner) is taken, and what it types from now on is what its VM should get.
fn select(h: &mut Harness, transport: Transport, line: &str) -> ClientId {
    let c = h.connect_client(transport, None);
    h.type_data(c, format!("{line}\r\n").as_bytes());
    assert!(h.client(c).attached.is_some(), "{line:?} did not attach");
    h.take_data(c);
    h.mark_typed(c);
    c
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// VM `i` (entry 1) starts a vMotion and is answered NOTNOW: it stays on its source.
fn vmotion_refused_with_notnow(h: &mut Harness, i: usize) {
    assert!(h.vmotion(i, VmotionPlan::new(&b"seq1"[..])));
    assert_eq!(
        steps(h, VmId(1)),
        [VmotionStep::NotNow(NotNowReason::Vetoed)]
    );
    assert!(h.vms[i]
        .events
        .contains(&EmulatorEvent::Vmotion(VmotionOutcome::Refused)));
}

fn steps(h: &Harness, vm: VmId) -> Vec<VmotionStep> {
    h.events
        .iter()
        .filter_map(|e| match e {
            Event::Vmotion {
                vm: Some(v), step, ..
            } if *v == vm => Some(step.clone()),
            _ => None,
        })
        .collect()
}

fn dropped(h: &Harness) -> Vec<(ClientId, DropReason)> {
    h.events
        .iter()
        .filter_map(|e| match e {
            Event::ClientDropped { client, reason } => Some((*client, *reason)),
            _ => None,
        })
        .collect()
}
