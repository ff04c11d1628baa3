//! The embedding API: what a product built on the server sees of its VMs, and how it acts.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;
use vspc_concentrator::{VmId, VmSnapshot, WriteError};

use crate::Shared;

/// A VM port's life, as an embedder sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum VmEvent {
    /// A VM port identified itself: a new entry.
    Added {
        /// The entry (stable across reconnects and vMotions).
        vm: VmId,
        /// Its name (VM-NAME), possibly empty.
        name: String,
        /// Its VC UUID (canonical text).
        vc_uuid: String,
        /// Its port label (`port=` of the service URI, else the URI).
        label: String,
        /// A second live connection claimed a held identity: served apart.
        flagged: bool,
    },
    /// The VM came back on a new connection; same entry.
    Reconnected {
        /// The entry.
        vm: VmId,
    },
    /// The VM's name changed.
    Renamed {
        /// The entry.
        vm: VmId,
        /// The new name.
        name: String,
    },
    /// A vMotion completed; same entry, nothing lost.
    Moved {
        /// The entry.
        vm: VmId,
    },
    /// The VM's connection is gone; the entry lingers for a reconnect.
    Disconnected {
        /// The entry.
        vm: VmId,
    },
    /// The entry expired.
    Removed {
        /// The entry.
        vm: VmId,
    },
}

/// A piece of a VM's console output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleChunk {
    /// The entry.
    pub vm: VmId,
    /// The bytes as the VM sent them.
    pub bytes: Bytes,
}

/// A cloneable handle on a running server, for embedders.
///
/// Subscriptions are bounded (4,096 messages): a subscriber that falls that far behind is
/// cut off (its receiver yields `None`), so no subscriber can stall a VM or grow memory.
#[derive(Clone)]
pub struct Handle {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle").finish_non_exhaustive()
    }
}

impl Handle {
    /// VM life events from now on.
    pub fn vm_events(&self) -> mpsc::Receiver<VmEvent> {
        self.shared.lock().subscribe_vm_events()
    }

    /// Console output of one VM (`Some`) or of every VM (`None`), from now on.
    pub fn console(&self, vm: Option<VmId>) -> mpsc::Receiver<ConsoleChunk> {
        self.shared.lock().subscribe_console(vm)
    }

    /// Writes to a VM's serial port (held in order during a vMotion).
    pub fn write(&self, vm: VmId, bytes: &[u8]) -> Result<(), WriteError> {
        let mut hub = self.shared.lock();
        let result = hub.core.write_to_vm(vm, bytes);
        hub.settle();
        result
    }

    /// One VM entry.
    pub fn vm(&self, vm: VmId) -> Option<VmSnapshot> {
        self.shared.lock().core.vm(vm)
    }

    /// Every VM entry, in id order (taken in pages, so the lock is never held for long).
    pub fn vms(&self) -> Vec<VmSnapshot> {
        crate::admin::paged_vms(&self.shared, |_, vm| vm)
    }

    /// Resolves a selector as the client menu does (number, name[/label], UUID).
    pub fn resolve(&self, selector: &str) -> Option<VmId> {
        self.shared.lock().core.resolve(selector).ok()
    }

    /// The admin listing, as `GET /vms` returns it.
    pub fn snapshot_json(&self) -> serde_json::Value {
        crate::admin::listing(&self.shared)
    }

    /// The Prometheus metrics, as `GET /metrics` returns them.
    pub fn metrics_text(&self) -> String {
        crate::admin::metrics(&self.shared.lock())
    }

    /// Reloads the SSH listener's `authorized_keys` (what SIGHUP does): the number of keys
    /// now in force, or why the file was refused (the old set stays in force). `Ok(0)`
    /// without an SSH listener.
    #[cfg(feature = "ssh")]
    #[cfg_attr(docsrs, doc(cfg(feature = "ssh")))]
    pub fn reload_ssh_keys(&self) -> Result<usize, crate::ssh::SshError> {
        match &self.shared.ssh {
            Some(state) => state.reload(),
            None => Ok(0),
        }
    }

    /// Reopens every console log and the audit log (after rotation; what SIGHUP does).
    pub fn reopen_logs(&self) {
        self.shared.lock().reopen_logs();
    }

    /// The sticky port of a VM, once bound.
    pub fn sticky_addr(&self, vm: VmId) -> Option<std::net::SocketAddr> {
        self.shared.lock().sticky.get(&vm).map(|s| s.addr)
    }
}
