//! The reference VM side of VMware's virtual serial port concentrator protocol: an emulated
//! ESXi host running VMs whose network serial ports point at a proxy.
//!
//! A concentrator that passes against this emulator should pass against ESXi: it writes what
//! ESXi writes in its captures (`docs/esxi-wire.md` in the repository) byte for byte **and
//! segment for segment**, runs the device life cycle of a URI-backed serial port
//! (`startConnected`, reconfiguring `connected`), performs vMotion across two emulated hosts
//! with every failure path, produces verifiable serial output, records what clients send, and
//! injects faults on demand.
//!
//! # Pieces
//! - [`EmulatedVm`]: one VM (identity, [`SerialPortConfig`], output, recorder, vMotion).
//!   Its protocol state per connection is [`vspc_proto::VmSession`]; this crate adds ESXi's
//!   write boundaries (see the `connection` module notes on [`Segmentation::Esxi`]), the
//!   life cycle, the vMotion orchestration and the faults.
//! - [`Pattern`], [`Generator`], [`Verifier`], [`Recorder`]: streams whose byte `i` is a
//!   function of `i`, so loss, duplication and reordering are caught at an exact offset.
//! - [`Fault`] and [`Segmentation`]: fault injection as a transform on outgoing writes.
//! - With the `tokio` feature, `driver`: one VM or a fleet of thousands over real sockets,
//!   each commanded through a handle (vMotion, `connected`, faults, serial output) and
//!   observed through its events; `telnets` proxies are verified as ESXi verifies them, by
//!   the proxyURI's `thumbprint`, `certificate` and `peerName` parameters. The proxyURI and
//!   keepIdle types are vspc-backing's ([`vspc_backing::ProxyUri`], [`vspc_backing::KeepIdle`]).
//!
//! # The driving contract (sans-IO)
//! The core performs no I/O, spawns nothing and reads no clock. The driver:
//! 1. issues commands ([`EmulatedVm::power_on`], [`EmulatedVm::start_vmotion`], ...);
//! 2. feeds each read of connection `conn` to [`EmulatedVm::handle_input`] and each EOF or
//!    error to [`EmulatedVm::handle_closed`];
//! 3. calls [`EmulatedVm::handle_timeout`] once [`EmulatedVm::poll_timeout`] has passed;
//! 4. after each of these, drains [`EmulatedVm::poll_transmit`] — [`Transmit::Open`],
//!    [`Transmit::Write`] (exactly one socket write each: segment boundaries are part of the
//!    emulation), [`Transmit::Close`], in order — and [`EmulatedVm::poll_event`].
//!
//! With the `tokio` feature, `driver` follows this contract for you: one task per VM, a
//! handle to command it, its events on a channel (see the module's docs).
//!
//! # Time model
//! Time is an argument (`now: Instant`); deadlines come out of `poll_timeout` as absolute
//! instants, and calling `handle_timeout` early or late is harmless. Tests run a simulated
//! clock; the tokio driver passes `Instant::now()`.
//!
//! # Panics and bounds
//! No function panics on any input or call order. Subnegotiations from the proxy are capped
//! ([`SerialPortConfig::max_subnegotiation`]); the recorder keeps a bounded tail
//! ([`EmulatorConfig::max_recorded`]) and verifies in O(1) memory; the generator produces one
//! chunk per timer. Transmits and events grow only with input and commands: drain them after
//! each call.
//!
//! # Example: a VM and a proxy session in memory
//! ```
//! use std::time::Instant;
//! use vspc_emulator::{EmulatedVm, EmulatorConfig, EmulatorEvent, Transmit, VmIdentity};
//! use vspc_proto::{ProxyConfig, ProxyEvent, ProxySession, SessionId};
//!
//! # #[allow(clippy::disallowed_methods)] // a doctest is its own driver
//! let now = Instant::now();
//! let mut vm = EmulatedVm::new(EmulatorConfig::new(VmIdentity::numbered(7)));
//! let mut proxy = ProxySession::new(SessionId(1), ProxyConfig::default());
//! vm.power_on(now);
//! let mut identified = None;
//! loop {
//!     let mut moved = false;
//!     while let Some(transmit) = vm.poll_transmit() {
//!         if let Transmit::Write { bytes, .. } = transmit {
//!             proxy.handle_input(now, &bytes);
//!             moved = true;
//!         }
//!     }
//!     while let Some(event) = proxy.poll_event() {
//!         if let ProxyEvent::Identified(identity) = event {
//!             identified = identity.name.map(|n| n.as_str().to_owned());
//!         }
//!     }
//!     while let Some(bytes) = proxy.poll_transmit() {
//!         let conn = vm.current_conn().unwrap();
//!         vm.handle_input(now, conn, &bytes);
//!         moved = true;
//!     }
//!     if !moved {
//!         break;
//!     }
//! }
//! assert_eq!(identified.as_deref(), Some("vm-00007"));
//! assert!(matches!(vm.poll_event(), Some(EmulatorEvent::ProxyAnswered { accepted: true, .. })));
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod connection;
#[cfg(feature = "tokio")]
pub mod driver;
mod error;
mod fault;
pub mod lab;
mod pattern;
mod vm;

pub use connection::ConnId;
pub use error::EmulatorError;
pub use fault::{Fault, Segmentation};
pub use pattern::{Generator, OutputConfig, Pattern, Rate, Recorder, Verifier, VerifyError};
pub use vm::{
    AbortReason, EmulatedVm, EmulatorConfig, EmulatorEvent, FinOrder, SerialPortConfig, Stats,
    Transmit, VmIdentity, VmotionOutcome, VmotionPlan,
};
pub use vspc_backing;
pub use vspc_proto;

// The README's example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
