//! `vspc`: the facade of the vSPC workspace.
//!
//! Re-exports the library crates under one name so that applications, the examples and the
//! benches depend on a single package.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub use vspc_backing as backing;
pub use vspc_concentrator as concentrator;
pub use vspc_emulator as emulator;
pub use vspc_proto as proto;
/// The tokio server (feature `server`).
#[cfg(feature = "server")]
pub use vspc_server as server;
pub use vspc_telnet as telnet;

// The README's example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
