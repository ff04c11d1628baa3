//! The sans-IO core of a VMware virtual serial port concentrator (vSPC).
//!
//! A [`Concentrator`] owns everything between "bytes arrived on a VM connection" and "a
//! client sees them": every VM connection (through [`vspc_proto::Endpoint`], which owns the
//! option-232 sessions and the vMotion coordinator), the VM registry, and every client. It
//! performs no I/O, reads no clock and spawns nothing: a driver (the `vspc-server` crate's
//! tokio server, or your own) moves bytes and time in and out.
//!
//! # What it decides
//! - **Identity.** A VM port is its VC UUID plus the service URI of its DO-PROXY, so the
//!   ports of one VM stay apart. A VM that reconnects (its port reconfigured) is re-attached
//!   to its entry with its clients and scrollback; a second live connection claiming a held
//!   identity is served as a separate, flagged entry (only a vMotion secret authenticates a
//!   takeover). An entry lingers [`ConcentratorConfig::linger`] after its VM left.
//! - **vMotion.** Handled by the endpoint: client input typed during the handover is held
//!   and delivered to whichever host runs the VM, in order, exactly once; clients stay
//!   attached.
//! - **Clients.** A telnet or raw client chooses a VM by number, name[/label] or UUID (a
//!   menu lists a screenful), or is attached at once. Read-write, read-only and exclusive
//!   modes are enforced; a joining client gets the scrollback; while a client is a whole
//!   output budget behind, its VM is not read (the driver asks
//!   [`Concentrator::vm_wants_input`]), and a client still behind after
//!   [`ConcentratorConfig::slow_client_grace`] is dropped with a message, so a reader is
//!   never dropped for a burst and a stuck one delays the others by at most the grace; input
//!   that the VM cannot take yet waits (the driver stops reading that client).
//!
//! # The driving contract
//! One mutation, then poll until empty:
//! ```text
//! loop {
//!     // one of: handle_vm_connect / handle_vm_input / handle_vm_closed,
//!     //         handle_client_connect / handle_client_input / handle_client_closed,
//!     //         handle_timeout, attach / write_to_vm / shutdown
//!     while let Some(wakeup) = core.poll_wakeup() { /* wake that connection's writer */ }
//!     while let Some(event) = core.poll_event() { /* log, console files, embedders */ }
//!     /* re-arm the timer at core.poll_timeout() */
//! }
//! // each connection's writer: poll_vm_transmit(conn) / poll_client_transmit(client, &mut v)
//! // each connection's reader: reads only while vm_wants_input(conn) / client_wants_input(client)
//! ```
//!
//! # Several instances as one site
//! With [`ConcentratorConfig::site_directory`], a selection that matches no VM here is
//! reported as [`Event::SelectionElsewhere`]; the driver looks it up in the site and answers
//! [`Concentrator::attach_remote`] (the VM another instance holds: the client's grants are
//! checked here) or [`Concentrator::selection_failed`]. A remotely attached client's link to
//! the owner has its own writer and reader:
//! ```text
//! // link writer: write core.poll_remote_input(client) to the owner (Ctrl-] doubled,
//! //              a break as Ctrl-] b); wait for the client's wakeup when None
//! // link reader: reads only while core.remote_wants_output(client), feeding
//! //              core.handle_remote_output(now, client, bytes)
//! // link closed: core.handle_remote_closed(now, client, reason) (back to the menu)
//! ```
//! With [`ConcentratorConfig::shared_vmotions`], vMotions are shared too
//! ([`Event::HandoverOffered`], [`Event::PeerElsewhere`]).
//!
//! # Time model
//! Every call that can fire a deadline takes `now: Instant`; [`Concentrator::poll_timeout`]
//! returns the earliest deadline (a vMotion's expiry, a lingering entry's). Early or late
//! timeouts are harmless. Tests drive a simulated clock.
//!
//! # Panics and bounds
//! No call panics on any input or call order; calls naming unknown connections do nothing.
//! Every buffer is bounded by [`ConcentratorConfig`].
//!
//! # Example: a VM and a client, in memory
//! ```
//! use std::time::Instant;
//! use bytes::Bytes;
//! use vspc_concentrator::*;
//! use vspc_proto::{Direction, Uuid, VmConfig, VmRole, VmSession};
//!
//! let now = Instant::now();
//! let mut core = Concentrator::new(ConcentratorConfig::default());
//! let conn = core.handle_vm_connect(now, "127.0.0.1:50000".parse().unwrap(), false).unwrap();
//! let uuid: Uuid = "01 23 45 67 89 ab cd ef-fe dc ba 98 00 00 00 00".parse().unwrap();
//! let role = VmRole::Source { direction: Direction::Server, service_uri: "vSPC.py".into() };
//! let mut vm = VmSession::new(now, VmConfig::new(uuid, "web-1", role));
//! // Shuttle bytes until both sides are quiet.
//! let pump = |core: &mut Concentrator, vm: &mut VmSession| loop {
//!     let mut moved = false;
//!     while let Some(bytes) = vm.poll_transmit() {
//!         core.handle_vm_input(now, conn, &bytes);
//!         moved = true;
//!     }
//!     while let VmTransmit::Write(bytes) = core.poll_vm_transmit(conn) {
//!         vm.handle_input(now, &bytes);
//!         moved = true;
//!     }
//!     while vm.poll_event().is_some() {}
//!     if !moved {
//!         break;
//!     }
//! };
//! pump(&mut core, &mut vm);
//! let web = core.resolve("web-1").unwrap();
//! assert!(matches!(core.poll_event(), Some(Event::VmAdded { .. })));
//!
//! // A raw client attached read-write sees the VM's output and types to it.
//! let client = core
//!     .handle_client_connect(now, "127.0.0.1:50001".parse().unwrap(), Transport::Raw, Some((web, Mode::ReadWrite)))
//!     .unwrap();
//! vm.send_data(b"login: ");
//! pump(&mut core, &mut vm);
//! core.handle_client_input(now, client, b"root\r");
//! pump(&mut core, &mut vm);
//! let mut out = Vec::new();
//! core.poll_client_transmit(client, &mut out);
//! assert!(out.concat().ends_with(b"login: "));
//! assert_eq!(core.vm(web).unwrap().bytes_to_vm, 5);
//! ```
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs)]

mod access;
mod attach;
mod clients;
mod concentrator;
mod config;
mod flow;
mod registry;
mod remote;
mod selection;
mod serial;
mod snapshot;
mod types;
mod users;

pub use access::{Grant, GrantError, Rights, User};
pub use concentrator::Concentrator;
pub use config::ConcentratorConfig;
pub use registry::{compact_hex, label_of, printable};
pub use remote::{RemoteGrant, RemoteVm};
pub use snapshot::{ClientSnapshot, Counters, VmSnapshot};
pub use types::{
    AttachError, ClientId, ClientTransmit, DropReason, Event, Mode, Refused, Transport, VmId,
    VmState, VmTransmit, VmotionRecord, VmotionStep, Wakeup, WriteError,
};
pub use users::{ClientSetup, ESCAPE};
pub use vspc_proto;

// The README's example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
