//! What an idle, identified VM connection costs a concentrator in `ProxySession`: the value
//! inline plus what it keeps on the heap once the handshake is over and
//! [`ProxySession::shrink_to_fit`] ran. Counted with a global allocator that counts, in a test
//! binary of its own; the VM's handshake is recorded first so that only the proxy's
//! allocations are counted.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::time::Instant;

use bytes::Bytes;
use common::*;
use vspc_proto::*;
use vspc_testkit::pair::converse;

/// Heap bytes a session built from `writes` keeps, with or without shrinking.
fn retained(writes: &[Bytes], now: Instant, shrink: bool) -> allocation_counter::AllocationInfo {
    let mut kept = None;
    let counted = allocation_counter::measure(|| {
        let mut session = ProxySession::new(SessionId(1), ProxyConfig::default());
        for bytes in writes {
            session.handle_input(now, bytes);
            while session.poll_event().is_some() {}
            while session.poll_transmit().is_some() {}
        }
        if shrink {
            session.shrink_to_fit();
        }
        kept = Some(session);
    });
    let session = kept.unwrap();
    assert!(session.identity().is_identified());
    assert!(session.proxy_request().is_some());
    counted
}

#[test]
fn an_idle_identified_session_costs_under_a_kilobyte() {
    let now = t0();
    let mut vm = VmSession::new(now, source_vm_config());
    let mut first = ProxySession::new(SessionId(1), ProxyConfig::default());
    let mut writes = Vec::new();
    converse(now, &mut vm, &mut first, |bytes| writes.push(bytes));
    assert!(first.identity().is_identified());

    let unshrunk = retained(&writes, now, false);
    let shrunk = retained(&writes, now, true);
    let inline = std::mem::size_of::<ProxySession>() as i64;
    println!("inline {inline} B; heap kept {unshrunk:?}; after shrink_to_fit {shrunk:?}");
    // The identity (VC UUID, name, BIOS and location UUIDs), the known-suboption list, the
    // proxy request and the option table: nothing else survives a shrink.
    assert!(
        shrunk.bytes_current <= 320,
        "heap kept after shrink_to_fit: {shrunk:?}"
    );
    assert!(shrunk.bytes_current < unshrunk.bytes_current);
    assert!(
        inline + shrunk.bytes_current <= 1024,
        "inline {inline} B + heap {} B",
        shrunk.bytes_current
    );
}
