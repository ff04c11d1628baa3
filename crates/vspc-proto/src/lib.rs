//! The VMware telnet extension (telnet option 232) used between a VM's virtual serial port on
//! ESXi and a virtual serial port concentrator (vSPC, "the proxy").
//!
//! Work in progress: the message layer.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod command;
mod identity;
mod message;

pub use command::Command;
pub use identity::{Identity, Uuid, UuidError, VmName, VmUuid};
pub use message::{Direction, Message, MessageError, VmotionKey, VMWARE_EXT};
