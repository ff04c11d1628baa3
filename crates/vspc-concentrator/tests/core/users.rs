//! Authenticated users: grants enforced on requests, typed selections and the menu; the
//! default mode a grant allows; kick (the write lock taken, the holder told by whom); the
//! in-band escape (break, detach, a literal Ctrl-]).

use std::sync::Arc;

use vspc_concentrator::{ClientSetup, Grant, User};

use super::*;

fn user(name: &str, grants: &[&str]) -> Arc<User> {
    Arc::new(User {
        name: name.into(),
        grants: grants.iter().map(|g| Grant::parse(g).unwrap()).collect(),
    })
}

fn ssh(user: &Arc<User>, request: Option<&str>) -> ClientSetup {
    let setup = ClientSetup::new(Transport::Raw)
        .user(user.clone())
        .escape(true);
    match request {
        Some(request) => setup.request(request),
        None => setup,
    }
}

#[test]
fn a_request_attaches_within_the_grants_and_is_refused_outside_them() {
    let mut h = harness();
    h.add_numbered_vm(1);
    h.add_numbered_vm(2);
    let alice = user("alice@laptop", &["vm-00001:ro,rw"]);

    let c = h.connect_with(ssh(&alice, Some("vm-00001")));
    assert_eq!(h.client(c).attached, Some((VmId(1), Mode::ReadWrite)));
    assert_eq!(h.take_data(c), banner("vm-00001", "rw"));
    assert_eq!(
        h.core.vm(VmId(1)).unwrap().clients[0].user.as_deref(),
        Some("alice@laptop")
    );

    // No grant on vm-00002: told why, then a menu that lists only vm-00001.
    let d = h.connect_with(ssh(&alice, Some("vm-00002")));
    assert_eq!(h.client(d).attached, None);
    let got = text(&h.take_data(d));
    assert!(
        got.starts_with(
            "vspc: alice@laptop may not attach to vm-00002 as rw (allowed there: nothing)\r\n\r\nvspc: 1 VM port(s)\r\n"
        ),
        "{got:?}"
    );
    let menu = &got[got.find("\r\n\r\n").unwrap()..];
    assert!(
        menu.contains("vm-00001/vSPC.py") && !menu.contains("vm-00002"),
        "{got:?}"
    );
    // Exclusive is not granted either; typed at the menu the same rules hold.
    h.type_data(d, b"vm-00001 excl\r");
    assert_eq!(h.client(d).attached, None);
    assert!(
        text(&h.take_data(d)).contains("may not attach to vm-00001 as excl (allowed there: ro,rw)")
    );
    h.type_data(d, b"vm-00001 ro\r");
    assert_eq!(h.client(d).attached, Some((VmId(1), Mode::ReadOnly)));
}

#[test]
fn a_read_only_grant_attaches_read_only_by_default() {
    let mut h = harness();
    let i = h.add_numbered_vm(1);
    let bob = user("bob", &["vm-*:ro"]);
    let c = h.connect_with(ssh(&bob, Some("vm-00001")));
    assert_eq!(h.client(c).attached, Some((VmId(1), Mode::ReadOnly)));
    h.type_data(c, b"rm -rf /\r");
    assert!(h.vms[i].received.is_empty());
    assert_eq!(h.core.counters().client_bytes_discarded, 9);
}

#[test]
fn kick_takes_the_write_lock_and_tells_the_holders_by_whom() {
    let mut h = harness();
    let i = h.add_numbered_vm(1);
    let holder = h.connect_client(Transport::Raw, Some((VmId(1), Mode::Exclusive)));
    let writer_blocked = user("carol", &["*:rw,excl"]);
    let c = h.connect_with(ssh(&writer_blocked, Some("vm-00001+kick")));
    assert_eq!(h.client(c).attached, None, "kick needs the kick right");
    assert!(text(&h.take_data(c)).starts_with("vspc: carol may not attach to vm-00001 as kick"));

    let admin = user("root@ops", &["*:all"]);
    let k = h.connect_with(ssh(&admin, Some("vm-00001+kick")));
    assert_eq!(h.client(k).attached, Some((VmId(1), Mode::Exclusive)));
    let kicked_by = h.core.client(k).unwrap().peer;
    let events = h.take_events();
    assert!(events.contains(&Event::ClientKicked {
        client: holder,
        vm: VmId(1),
        by: k
    }));
    let told = text(&h.take_data(holder));
    assert!(
        told.ends_with(&format!(
            "\r\n[vspc: root@ops ({kicked_by}) took the write lock on vm-00001; you are read-only now]\r\n"
        )),
        "{told:?}"
    );
    let vm = h.core.vm(VmId(1)).unwrap();
    assert_eq!(vm.exclusive, Some(k));
    assert_eq!(h.core.client(holder).unwrap().mode, Mode::ReadOnly);
    // The old holder's typing goes nowhere now; the new holder's reaches the VM.
    h.type_data(holder, b"old");
    h.take_data(k);
    h.type_data(k, b"new");
    assert_eq!(h.vms[i].received, b"new");
}

#[test]
fn the_escape_sends_breaks_passes_a_doubled_ctrl_bracket_and_detaches() {
    let mut h = harness();
    let i = h.add_numbered_vm(1);
    let admin = user("root", &["*:all"]);
    let c = h.connect_with(ssh(&admin, Some("vm-00001")));
    h.take_data(c);
    h.type_wire(c, &[b"a\x1d", b"bz\x1d\x1d\x1dq"]);
    assert_eq!(
        h.vms[i].inputs,
        [
            VmInput::Data(b"a".to_vec()),
            VmInput::Break,
            VmInput::Data(b"z\x1d\x1dq".to_vec()),
        ]
    );
    assert!(h.take_events().contains(&Event::ClientBreak {
        client: c,
        vm: VmId(1)
    }));
    h.type_wire(c, &[b"x\x1ddignored"]);
    assert_eq!(h.client(c).dropped, Some(DropReason::Detached));
    assert_eq!(text(&h.take_data(c)), "\r\n[vspc: detached]\r\n");
    assert_eq!(h.vms[i].received, b"az\x1d\x1dqx");
}
