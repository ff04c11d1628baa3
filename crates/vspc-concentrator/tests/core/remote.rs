//! A VM held by another instance of the site: a selection that matches nothing here is
//! reported (`SelectionElsewhere`) and the client waits; the driver attaches it remotely
//! (grants checked here) or fails the selection; a remote client's input is framed for the
//! link, the owner's output reaches it escaped for its transport, and the link's end sends
//! it back to the menu.

use std::sync::Arc;

use vspc_concentrator::{ClientSetup, Grant, RemoteVm, User, ESCAPE};

use super::*;

const UUID_9: &str = "01234567-89ab-cdef-fedc-000000000009";

fn site() -> Harness {
    let mut config = config();
    config.site_directory = true;
    Harness::new(config)
}

fn elsewhere(h: &Harness) -> Vec<(ClientId, String, Option<Mode>, bool)> {
    h.events
        .iter()
        .filter_map(|e| match e {
            Event::SelectionElsewhere {
                client,
                selector,
                mode,
                kick,
            } => Some((*client, selector.clone(), *mode, *kick)),
            _ => None,
        })
        .collect()
}

fn web_9() -> RemoteVm {
    RemoteVm::new("web-9", "console", UUID_9, "instance-a")
}

#[test]
fn a_selection_matching_nothing_here_waits_for_the_site_then_fails_or_attaches_remotely() {
    let mut h = site();
    h.add_numbered_vm(1);
    h.take_events();
    let c = h.connect_client(Transport::Telnet, None);
    let menu = h.core.menu();
    assert_eq!(h.take_data(c), menu.as_bytes());

    // No NoMatch message: the driver is asked, and what follows the line waits.
    h.type_data(c, b"web-9 ro\r\nweb-");
    assert_eq!(h.take_data(c), b"web-9 ro\r\n");
    assert_eq!(
        elsewhere(&h),
        [(c, "web-9".to_owned(), Some(Mode::ReadOnly), false)]
    );
    assert!(!h.core.client_wants_input(c));

    // No instance has it: today's message and menu, then the waiting bytes are read as
    // selection input again (and echoed).
    h.core
        .selection_failed(c, AttachError::NoMatch("web-9".into()));
    h.run();
    let expected = format!("vspc: no VM matches \"web-9\"\r\n{menu}web-");
    assert_eq!(text(&h.take_data(c)), expected);
    assert!(h.core.client_wants_input(c));

    // The rest of the line asks again; this time the site has it on instance-a.
    h.take_events();
    h.type_data(c, b"9\r\n");
    assert_eq!(h.take_data(c), b"9\r\n");
    assert_eq!(elsewhere(&h), [(c, "web-9".to_owned(), None, false)]);
    let grant = h.core.attach_remote(c, web_9()).unwrap();
    assert_eq!((grant.mode, grant.kick), (Mode::ReadWrite, false));
    h.run();
    // The owner's banner comes on the link: nothing is shown here.
    assert_eq!(h.take_data(c), b"");
    assert_eq!(h.core.client_remote(c), Some(&web_9()));
    let listed = h.core.remote_clients();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].id, listed[0].mode, listed[0].remote.clone()),
        (c, Mode::ReadWrite, Some(web_9()))
    );
    assert!(h.events.contains(&Event::ClientAttachedRemote {
        client: c,
        vm: Box::new(web_9()),
        mode: Mode::ReadWrite
    }));

    // Input for the link: every byte value, Ctrl-] doubled, a break as Ctrl-] b, in order.
    let all: Vec<u8> = (0..=255).collect();
    h.queue_data(c, &all);
    h.queue_break(c);
    h.type_data(c, b"z");
    let mut link = Vec::new();
    // The link takes one read's worth at a time; the client is read again after each.
    while let Some(bytes) = h.core.poll_remote_input(c) {
        link.extend_from_slice(&bytes);
        h.run();
    }
    let mut expected: Vec<u8> = Vec::new();
    for b in 0..=255u8 {
        expected.push(b);
        if b == ESCAPE {
            expected.push(ESCAPE);
        }
    }
    expected.extend_from_slice(b"\x1dbz");
    assert_eq!(link, expected);
    assert!(h.core.client_wants_input(c));
    assert_eq!(h.core.client(c).unwrap().bytes_in, 257);

    // The owner's output: 0xFF doubled on the telnet client's wire, the data exact.
    assert!(h.core.remote_wants_output(c));
    h.core.handle_remote_output(h.now, c, &all);
    h.run();
    assert_eq!(h.take_data(c), all);
    let wire = &h.client(c).wire;
    assert!(wire.ends_with(b"\xfd\xfe\xff\xff"), "{wire:?}");

    // The owner went away: told, back to the menu, choosing again.
    h.core
        .handle_remote_closed(h.now, c, "instance-a closed the link");
    h.run();
    let expected = format!("\r\n[vspc: instance-a closed the link]\r\n{menu}");
    assert_eq!(text(&h.take_data(c)), expected);
    assert_eq!(h.core.client_remote(c), None);
    assert!(!h.core.remote_wants_output(c));
    assert_eq!(h.core.poll_remote_input(c), None);
    h.type_data(c, b"1\r\n");
    assert_eq!(h.client(c).attached, Some((VmId(1), Mode::ReadWrite)));
}

#[test]
fn grants_are_checked_on_the_directory_names_and_read_only_input_stays_here() {
    let mut h = site();
    let alice = Arc::new(User {
        name: "alice".into(),
        grants: vec![Grant::parse("web-*:ro").unwrap()],
    });
    let setup = ClientSetup::new(Transport::Raw)
        .user(alice.clone())
        .escape(true)
        .request("db-1");
    let c = h.connect_with(setup);
    assert_eq!(h.take_data(c), b"");
    assert_eq!(elsewhere(&h), [(c, "db-1".to_owned(), None, false)]);
    let db = RemoteVm::new("db-1", "console", UUID_9, "instance-a");
    assert_eq!(
        h.core.attach_remote(c, db),
        Err(AttachError::NotPermitted {
            user: "alice".into(),
            vm: "db-1".into(),
            mode: "rw",
            allowed: String::new(),
        })
    );
    h.run();
    let got = text(&h.take_data(c));
    assert!(
        got.starts_with("vspc: alice may not attach to db-1 as rw (allowed there: nothing)\r\n"),
        "{got:?}"
    );
    assert_eq!(h.core.client_remote(c), None);

    // Read-only is the best web-9 allows; typed input is discarded here, never sent.
    h.take_events();
    h.type_data(c, b"web-9\r");
    assert_eq!(elsewhere(&h), [(c, "web-9".to_owned(), None, false)]);
    let grant = h.core.attach_remote(c, web_9()).unwrap();
    assert_eq!(grant.mode, Mode::ReadOnly);
    h.type_data(c, b"ls\r");
    assert_eq!(h.core.poll_remote_input(c), None);
    assert!(h.core.client_wants_input(c));

    // The escape's detach ends the client, as on a local VM.
    h.type_data(c, b"\x1dd");
    assert_eq!(h.client(c).dropped, Some(DropReason::Detached));
    assert!(!h.core.remote_wants_output(c));
}

#[test]
fn without_a_site_directory_nothing_waits() {
    let mut h = harness();
    let c = h.connect_client(Transport::Raw, None);
    h.take_data(c);
    h.type_data(c, b"web-9\r");
    let got = text(&h.take_data(c));
    assert!(
        got.starts_with("web-9\r\nvspc: no VM matches \"web-9\"\r\n"),
        "{got:?}"
    );
    assert!(elsewhere(&h).is_empty());
    assert_eq!(
        h.core.attach_remote(c, web_9()),
        Err(AttachError::ClientGone)
    );
}

#[test]
fn a_remote_client_a_budget_behind_stops_the_link_until_it_catches_up() {
    let mut config = config();
    config.site_directory = true;
    config.output_budget = 1024;
    let mut h = Harness::new(config);
    let c = h.connect_client(Transport::Raw, None);
    h.take_data(c);
    h.type_data(c, b"web-9\r");
    h.core.attach_remote(c, web_9()).unwrap();
    h.run();
    h.take_data(c);

    // A stalled client's writer takes one write and blocks in it; the next chunk puts the
    // client a whole budget behind: the link is not read.
    h.set_reading(c, false);
    h.core.handle_remote_output(h.now, c, &[b'x'; 1500]);
    h.run();
    h.core.handle_remote_output(h.now, c, &[b'y'; 1500]);
    h.run();
    assert!(!h.core.remote_wants_output(c));

    // It reads again: everything arrives, in order, and the link is read again.
    h.set_reading(c, true);
    assert!(h.core.remote_wants_output(c));
    let mut expected = vec![b'x'; 1500];
    expected.extend_from_slice(&[b'y'; 1500]);
    assert_eq!(h.take_data(c), expected);
}

#[test]
fn a_client_back_from_a_remote_vm_gets_a_whole_selection_timeout_again() {
    let mut h = site();
    let c = h.connect_client(Transport::Raw, None);
    h.type_data(c, b"web-9\r");
    h.core.attach_remote(c, web_9()).unwrap();
    h.advance(Duration::from_secs(20));
    h.core
        .handle_remote_closed(h.now, c, "instance-a closed the link");
    h.run();
    // Its first deadline (30 s after it connected) passes: it is choosing since 20 s only.
    h.advance(Duration::from_secs(15));
    assert_eq!(h.client(c).dropped, None);
    h.advance(Duration::from_secs(16));
    assert_eq!(h.client(c).dropped, Some(DropReason::SelectionTimeout));
}
