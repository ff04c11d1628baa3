//! `vspc`: the facade of the vSPC workspace.
//!
//! Re-exports the library crates under one name so that applications, the examples and the
//! benches depend on a single package.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub use vspc_backing as backing;
pub use vspc_emulator as emulator;
pub use vspc_proto as proto;
pub use vspc_telnet as telnet;
