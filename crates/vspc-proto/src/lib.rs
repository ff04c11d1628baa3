//! The VMware telnet extension (telnet option 232, VMWARE-TELNET-EXT) spoken between a VM's
//! virtual serial port on ESXi and a virtual serial port concentrator (vSPC, "the proxy"),
//! built on the [`vspc_telnet`] codec.
//!
//! # Pieces
//! - [`Command`] and [`Message`]: the 22 commands, typed payloads, parsing and encoding of
//!   unescaped subnegotiation payloads (pure functions). [`Uuid`] / [`VmUuid`] read ESXi's vmx
//!   form and give RFC 4122 and compact text; [`VmName`] is lossy UTF-8, never an error;
//!   [`VmotionKey`] is the opaque `sequence ++ secret`.
//! - [`ProxySession`]: the proxy side of one VM connection (negotiation, handshake,
//!   identification, data, its part in a vMotion).
//! - [`Coordinator`]: one per concentrator; answers VMOTION-BEGIN with a CSPRNG secret,
//!   matches VMOTION-PEER by `sequence ++ secret`, moves held client data to whichever host ends
//!   up running the VM, expires what is never completed.
//! - [`VmSession`]: the same protocol from ESXi's side, for emulators and tests.
//!
//! # The driving contract (sans-IO)
//! Nothing here performs I/O, spawns, blocks or reads a clock. The application:
//! 1. feeds every read to `handle_input(now, bytes)`;
//! 2. drains `poll_event()` until `None`, acting on each event (vMotion events go to the
//!    [`Coordinator`] together with the session, see [`ProxyEvent`]);
//! 3. drains `poll_transmit()` and writes the bytes, after input and after any command
//!    (`send_data`, coordinator calls, ...);
//! 4. arms a timer at the earliest `poll_timeout()` of the sessions and the coordinator, and
//!    calls `handle_timeout(now)` when it fires, then drains again.
//!
//! # Time model
//! Time is an argument (`now: Instant`) everywhere; the crate never calls `Instant::now()`.
//! Deadlines are absolute instants returned by `poll_timeout`. Calling `handle_timeout` early
//! or late is harmless: what is due fires, the rest waits. Tests drive a simulated clock.
//!
//! # Panics and bounds
//! No function panics on any input bytes or call order. Every accumulator is bounded: a
//! subnegotiation by `max_subnegotiation` (an oversized one is a
//! [`ProtocolError::Telnet`] event and is discarded), held vMotion data by
//! [`ProxyConfig::max_held`] ([`SendError::HoldFull`]), pending vMotions by
//! [`CoordinatorConfig::max_pending`] (NOTNOW). Events and outbound bytes grow only with the
//! input and the application's calls: drain them after each call. Protocol violations are
//! events ([`ProtocolError`]), never fatal: unknown commands get UNKNOWN-SUBOPTION-RCVD-2, never
//! a close.
//!
//! # Example: a VM and a proxy in memory
//! ```
//! use std::time::Instant;
//! use vspc_proto::*;
//!
//! let now = Instant::now();
//! let uuid: Uuid = "01 23 45 67 89 ab cd ef-fe dc ba 98 00 00 00 00".parse().unwrap();
//! let role = VmRole::Source { direction: Direction::Server, service_uri: "vSPC.py".into() };
//! let mut vm = VmSession::new(now, VmConfig::new(uuid, "vm-00000", role));
//! let mut proxy = ProxySession::new(SessionId(1), ProxyConfig::default());
//! let mut identity = None;
//! // Shuttle bytes until both sides are quiet.
//! loop {
//!     let mut moved = false;
//!     while let Some(bytes) = vm.poll_transmit() {
//!         proxy.handle_input(now, &bytes);
//!         moved = true;
//!     }
//!     while let Some(event) = proxy.poll_event() {
//!         if let ProxyEvent::Identified(id) = event {
//!             identity = Some(id);
//!         }
//!     }
//!     while let Some(bytes) = proxy.poll_transmit() {
//!         vm.handle_input(now, &bytes);
//!         moved = true;
//!     }
//!     while vm.poll_event().is_some() {}
//!     if !moved {
//!         break;
//!     }
//! }
//! let identity = identity.unwrap();
//! assert_eq!(identity.vc_uuid.unwrap().uuid(), Some(uuid));
//! assert_eq!(identity.name.unwrap().as_str(), "vm-00000");
//! assert_eq!(proxy.proxy_request().unwrap().service_uri, "vSPC.py");
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod command;
mod coordinator;
mod endpoint;
mod identity;
mod message;
mod proxy;
mod session;
mod vm;

pub use command::Command;
pub use coordinator::{
    BeginOutcome, ClaimOutcome, CloseOutcome, CompleteOutcome, Coordinator, CoordinatorConfig,
    CoordinatorEvent, NotNowReason, OsRandom, RejectReason, SecretError, SecretSource,
};
pub use endpoint::{
    Answer, CloseReason, Endpoint, EndpointConfig, EndpointEvent, EndpointSendError,
};
pub use identity::{Identity, Uuid, UuidError, VmName, VmUuid};
pub use message::{Direction, Message, MessageError, VmotionKey, VMWARE_EXT};
pub use proxy::{
    ComPortPolicy, ProxyConfig, ProxyEvent, ProxyRequest, ProxySession, ServicePolicy,
    PROXY_KNOWN_SUBOPTIONS,
};
pub use session::{ProtocolError, SendError, SessionId};
pub use vm::{VmConfig, VmEvent, VmRole, VmSession, ESXI_KNOWN_SUBOPTIONS};
pub use vspc_telnet;

// The README's example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
