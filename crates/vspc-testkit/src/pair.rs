//! A VM-side and a proxy-side session of vspc-proto wired back to back in memory, for the
//! tests and benches that need an identified session without a world around it, and a
//! chunking-proof record of what a `ProxySession` reported.

use std::time::Instant;

use bytes::Bytes;
use vspc_proto::{ProxyEvent, ProxySession, VmSession};

/// Shuttles bytes between `vm` and `proxy` at `now` until neither has anything to write,
/// draining both sides' events; hands every VM write to `on_vm_write` (in order) and returns
/// how many events the proxy reported. The callback, rather than a collected list, keeps
/// the benches' handshakes free of the harness's own allocations.
///
/// # Panics
///
/// If they are still talking after 100 rounds (a handshake takes a handful).
pub fn converse(
    now: Instant,
    vm: &mut VmSession,
    proxy: &mut ProxySession,
    mut on_vm_write: impl FnMut(Bytes),
) -> usize {
    let mut proxy_events = 0;
    for _ in 0..100 {
        let mut moved = false;
        while let Some(bytes) = vm.poll_transmit() {
            proxy.handle_input(now, &bytes);
            on_vm_write(bytes);
            moved = true;
        }
        while proxy.poll_event().is_some() {
            proxy_events += 1;
        }
        while let Some(bytes) = proxy.poll_transmit() {
            vm.handle_input(now, &bytes);
            moved = true;
        }
        while vm.poll_event().is_some() {}
        if !moved {
            return proxy_events;
        }
    }
    panic!("the sessions never went quiet");
}

/// One thing a [`ProxySession`] reported, with consecutive data merged, so that the same
/// input cut differently gives the same record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxySeen {
    /// Serial data from the VM (adjacent `Data` events merged).
    Data(Vec<u8>),
    /// Any other event, as its `Debug` text.
    Other(String),
}

/// Drains `session`'s events into `seen` (data merged) and its transmits into `out`.
pub fn drain_proxy(session: &mut ProxySession, seen: &mut Vec<ProxySeen>, out: &mut Vec<u8>) {
    while let Some(event) = session.poll_event() {
        match (event, seen.last_mut()) {
            (ProxyEvent::Data(d), Some(ProxySeen::Data(last))) => last.extend_from_slice(&d),
            (ProxyEvent::Data(d), _) => seen.push(ProxySeen::Data(d.to_vec())),
            (other, _) => seen.push(ProxySeen::Other(format!("{other:?}"))),
        }
    }
    while let Some(bytes) = session.poll_transmit() {
        out.extend_from_slice(&bytes);
    }
}
