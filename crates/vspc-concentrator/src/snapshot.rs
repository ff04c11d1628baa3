//! Typed views of the concentrator for admin listings and metrics: the application renders
//! them (JSON, Prometheus text) outside the core.

use std::net::SocketAddr;
use std::time::Instant;

use crate::concentrator::Concentrator;
use crate::types::{ClientId, Mode, VmId, VmState, VmotionRecord};

/// Counters since start.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Counters {
    /// VM connections accepted.
    pub vm_connections_total: u64,
    /// VM connections refused at the cap.
    pub vm_connections_refused: u64,
    /// Client connections accepted.
    pub client_connections_total: u64,
    /// Client connections refused at the cap.
    pub client_connections_refused: u64,
    /// Clients dropped for exceeding their output budget.
    pub clients_dropped_slow: u64,
    /// Serial bytes from VMs.
    pub bytes_from_vm: u64,
    /// Serial bytes to VMs.
    pub bytes_to_vm: u64,
    /// Client bytes discarded (read-only client, no VM, over the waiting-input cap).
    pub client_bytes_discarded: u64,
    /// VM output dropped before identification (over `max_unbound`).
    pub unbound_bytes_dropped: u64,
    /// Protocol violations by VMs.
    pub protocol_errors: u64,
    /// Reconnects re-attached to their entry.
    pub reattached: u64,
    /// Live connections that claimed a held identity (served as flagged entries).
    pub impostors: u64,
    /// GOAHEAD answers.
    pub vmotion_goahead: u64,
    /// NOTNOW answers.
    pub vmotion_notnow: u64,
    /// Completed vMotions.
    pub vmotion_completed: u64,
    /// Aborted vMotions.
    pub vmotion_aborted: u64,
    /// Expired vMotions.
    pub vmotion_expired: u64,
    /// Refused PEER claims.
    pub vmotion_peer_rejected: u64,
    /// VM connections closed for not identifying in time.
    pub vm_identify_timeouts: u64,
    /// Lingering entries removed early to stay under `max_lingering`.
    pub lingering_evicted: u64,
    /// Clients dropped for not choosing a VM in time, or to make room.
    pub clients_dropped_selecting: u64,
    /// COM-PORT (RFC 2217) messages ignored: malformed, not negotiated, or not the
    /// sender's to send.
    pub com_port_ignored: u64,
}

/// One attached client.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ClientSnapshot {
    /// The client.
    pub id: ClientId,
    /// Its address.
    pub peer: SocketAddr,
    /// Its mode.
    pub mode: Mode,
    /// Who it is, for an authenticated client (an SSH key's name).
    pub user: Option<String>,
    /// Bytes written to it.
    pub bytes_out: u64,
    /// Bytes it sent to the VM.
    pub bytes_in: u64,
    /// Bytes queued for it, not yet written.
    pub queued: usize,
    /// The VM it is attached to on another instance, if it is.
    pub remote: Option<crate::RemoteVm>,
}

/// One VM port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmSnapshot {
    /// The entry.
    pub id: VmId,
    /// The VM's name (VM-NAME).
    pub name: String,
    /// The VC UUID (canonical text when it parses, else the bytes as received, lossy).
    pub vc_uuid: String,
    /// The BIOS UUID, while connected and known.
    pub bios_uuid: Option<String>,
    /// The location UUID, while connected and known.
    pub location_uuid: Option<String>,
    /// The service URI of its DO-PROXY.
    pub service_uri: String,
    /// The port's short label (`port=` of the service URI, else the URI).
    pub label: String,
    /// Why it is flagged (duplicate identity).
    pub flagged: Option<String>,
    /// Where it stands.
    pub state: VmState,
    /// The connection carrying it.
    pub session: Option<u64>,
    /// That connection's address.
    pub peer: Option<SocketAddr>,
    /// Whether that connection is telnets.
    pub tls: Option<bool>,
    /// How many connections have carried it.
    pub connections: u64,
    /// Attached clients.
    pub clients: Vec<ClientSnapshot>,
    /// The exclusive client, if any.
    pub exclusive: Option<ClientId>,
    /// Bytes from the VM.
    pub bytes_from_vm: u64,
    /// Bytes to the VM.
    pub bytes_to_vm: u64,
    /// The last vMotion steps.
    pub vmotions: Vec<VmotionRecord>,
}

impl Concentrator {
    /// Counters since start.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// How many VM entries there are (connected or lingering).
    pub fn vm_count(&self) -> usize {
        self.registry.vms.len()
    }

    /// How many VM entries have a live connection.
    pub fn connected_vm_count(&self) -> usize {
        self.registry
            .vms
            .values()
            .filter(|e| e.state == VmState::Connected)
            .count()
    }

    /// vMotions pending in the coordinator.
    pub fn vmotions_pending(&self) -> usize {
        self.endpoint.coordinator().pending_len()
    }

    /// The ids of every VM entry, in order.
    pub fn vm_ids(&self) -> impl Iterator<Item = VmId> + '_ {
        self.registry.vms.keys().copied()
    }

    /// A view of one VM entry.
    pub fn vm(&self, vm: VmId) -> Option<VmSnapshot> {
        let e = self.registry.get(vm)?;
        let conn = e.active.and_then(|s| Some((s, self.endpoint.data(s)?)));
        let identity = e
            .active
            .and_then(|s| self.endpoint.session(s))
            .map(|s| s.identity());
        Some(VmSnapshot {
            id: e.id,
            name: e.name.clone(),
            vc_uuid: e.key.uuid().to_owned(),
            bios_uuid: identity
                .and_then(|i| i.bios_uuid.as_ref())
                .map(|u| u.to_string()),
            location_uuid: identity
                .and_then(|i| i.location_uuid.as_ref())
                .map(|u| u.to_string()),
            service_uri: e.key.service_uri().to_owned(),
            label: e.label().to_owned(),
            flagged: e.flagged.clone(),
            state: e.state,
            session: conn.map(|(s, _)| s.0),
            peer: conn.map(|(_, c)| c.peer),
            tls: conn.map(|(_, c)| c.tls),
            connections: e.connections,
            clients: e
                .clients
                .iter()
                .filter_map(|id| {
                    let c = self.clients.get(id)?;
                    Some(ClientSnapshot {
                        id: *id,
                        peer: c.peer,
                        mode: c.mode,
                        user: c.user.as_ref().map(|u| u.name.clone()),
                        bytes_out: c.bytes_out,
                        bytes_in: c.bytes_in,
                        queued: c.queued,
                        remote: None,
                    })
                })
                .collect(),
            exclusive: e.exclusive,
            bytes_from_vm: e.bytes_from_vm,
            bytes_to_vm: e.bytes_to_vm,
            vmotions: e
                .history
                .as_deref()
                .map(|h| h.iter().cloned().collect())
                .unwrap_or_default(),
        })
    }

    /// A view of one client (attached or not, until its connection is reported closed).
    pub fn client(&self, client: ClientId) -> Option<ClientSnapshot> {
        let c = self.clients.get(&client)?;
        Some(ClientSnapshot {
            id: client,
            peer: c.peer,
            mode: c.mode,
            user: c.user.as_ref().map(|u| u.name.clone()),
            bytes_out: c.bytes_out,
            bytes_in: c.bytes_in,
            queued: c.queued,
            remote: c.remote.as_deref().cloned(),
        })
    }

    /// Views of the clients attached to VMs other instances hold, in id order.
    pub fn remote_clients(&self) -> Vec<ClientSnapshot> {
        let mut ids: Vec<ClientId> = self
            .clients
            .iter()
            .filter(|(_, c)| c.remote.is_some())
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids.into_iter().filter_map(|id| self.client(id)).collect()
    }

    /// Views of up to `limit` VM entries from `start` on (in id order): a listing pages
    /// through thousands of VMs without building them all at once.
    pub fn vms(&self, start: VmId, limit: usize) -> Vec<VmSnapshot> {
        self.registry
            .vms
            .range(start..)
            .take(limit)
            .filter_map(|(id, _)| self.vm(*id))
            .collect()
    }

    /// The connection's last input (for idle policies), if it is known.
    pub fn vm_last_input(&self, vm: VmId) -> Option<Instant> {
        let conn = self.registry.get(vm)?.active?;
        self.endpoint.session(conn)?.last_input()
    }
}
