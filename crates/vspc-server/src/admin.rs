//! The admin listener: `GET /vms` (JSON listing), `GET /metrics` (Prometheus text), rendered
//! from the core's typed snapshots and counters, and `GET /site` (with a shared state: every
//! VM port of the site and the instance holding it, as the store has it).
//!
//! A deliberately small HTTP/1.1 responder: one request per connection, GET only, bounded
//! request head, bounded time. It is unauthenticated: keep it on loopback.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use vspc_concentrator::{ClientSnapshot, VmId, VmSnapshot};

use crate::hub::Hub;
use crate::Shared;

const MAX_HEAD: usize = 8 * 1024;
const TIMEOUT: Duration = Duration::from_secs(5);

/// VM entries rendered per lock: a listing of thousands of VMs never holds the hub for long.
const PAGE: usize = 256;

pub(crate) async fn serve_admin(shared: Arc<Shared>, mut stream: TcpStream) {
    let _ = tokio::time::timeout(TIMEOUT, async {
        let mut head = Vec::with_capacity(1024);
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.ends_with(b"\n\n") {
            let n = stream.read(&mut buf).await?;
            if n == 0 || head.len() + n > MAX_HEAD {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
        let line = String::from_utf8_lossy(line);
        let mut parts = line.split_whitespace();
        let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let (status, content_type, body) = match (method, path) {
            ("GET", "/vms") => {
                let body = serde_json::to_string_pretty(&listing(&shared)).unwrap_or_default();
                ("200 OK", "application/json", body + "\n")
            }
            ("GET", "/metrics") => {
                let text = metrics(&shared.lock());
                ("200 OK", "text/plain; version=0.0.4", text)
            }
            ("GET", "/site") => {
                let state = shared.lock().shared_state();
                match state {
                    None => ("404 Not Found", "text/plain", "no shared state: this instance is alone\n".to_owned()),
                    Some(state) => match state.site().await {
                        Ok(site) => {
                            let body = serde_json::to_string_pretty(&site_json(&site)).unwrap_or_default();
                            ("200 OK", "application/json", body + "\n")
                        }
                        Err(error) => ("503 Service Unavailable", "text/plain", format!("{error}\n")),
                    },
                }
            }
            ("GET", _) => (
                "404 Not Found",
                "text/plain",
                "try /vms, /metrics or /site\n".to_owned(),
            ),
            _ => ("405 Method Not Allowed", "text/plain", "GET only\n".to_owned()),
        };
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}

/// One client as the listing shows it.
fn client_json(c: &ClientSnapshot) -> Value {
    json!({
        "id": c.id.0,
        "peer": c.peer.to_string(),
        "mode": c.mode,
        "user": c.user,
        "bytes_out": c.bytes_out,
        "bytes_in": c.bytes_in,
        "queued": c.queued,
    })
}

/// One VM entry as the listing shows it.
fn vm_json(hub: &Hub, vm: &VmSnapshot) -> Value {
    let (started, started_wall) = hub.started;
    let unix = |at: std::time::Instant| {
        let wall = started_wall + at.saturating_duration_since(started);
        wall.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
    };
    let clients: Vec<Value> = vm.clients.iter().map(client_json).collect();
    let vmotions: Vec<Value> = vm
        .vmotions
        .iter()
        .map(|r| {
            json!({
                "at": unix(r.at),
                "event": r.step.to_string(),
                "sequence": r.sequence.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            })
        })
        .collect();
    json!({
        "id": vm.id.0,
        "name": vm.name,
        "vc_uuid": vm.vc_uuid,
        "bios_uuid": vm.bios_uuid,
        "location_uuid": vm.location_uuid,
        "service_uri": vm.service_uri,
        "label": vm.label,
        "flagged": vm.flagged,
        "state": vm.state.as_str(),
        "session": vm.session,
        "peer": vm.peer.map(|p| p.to_string()),
        "tls": vm.tls,
        "connections": vm.connections,
        "clients": clients,
        "exclusive": vm.exclusive.map(|c| c.0),
        "bytes_from_vm": vm.bytes_from_vm,
        "bytes_to_vm": vm.bytes_to_vm,
        "sticky_port": hub.sticky.get(&vm.id).map(|s| s.addr.to_string()),
        "log": hub.log_path(vm.id),
        "owner": hub.owners.as_ref().map_or_else(|| "unshared".to_owned(), |o| o.label(vm.id)),
        "vmotions": vmotions,
    })
}

/// The site's directory: every held VM port, sorted by name, with its instance.
fn site_json(site: &[crate::SiteVm]) -> Value {
    let mut ports: Vec<&crate::SiteVm> = site.iter().collect();
    ports.sort_by(|a, b| (&a.port.name, &a.port.uuid).cmp(&(&b.port.name, &b.port.uuid)));
    let vms: Vec<Value> = ports
        .into_iter()
        .map(|vm| {
            json!({
                "name": vm.port.name,
                "vc_uuid": vm.port.uuid,
                "service_uri": vm.port.service_uri,
                "instance": vm.instance.id,
                "link": vm.instance.link.to_string(),
            })
        })
        .collect();
    json!({ "vms": vms })
}

/// Every VM entry in id order, each rendered by `render` under the lock that read it, taken
/// `PAGE` entries per lock so that thousands of VMs never hold the hub for long.
pub(crate) fn paged_vms<R>(
    shared: &Shared,
    mut render: impl FnMut(&Hub, VmSnapshot) -> R,
) -> Vec<R> {
    let mut all = Vec::new();
    let mut start = VmId(0);
    loop {
        let hub = shared.lock();
        let page = hub.core.vms(start, PAGE);
        let Some(last) = page.last() else {
            return all;
        };
        start = VmId(last.id.0 + 1);
        all.extend(page.into_iter().map(|vm| render(&hub, vm)));
    }
}

/// The admin listing, rendered a page of entries per lock.
pub(crate) fn listing(shared: &Shared) -> Value {
    let (started, vm_connections, clients, pending) = {
        let hub = shared.lock();
        (
            hub.started
                .1
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            hub.core.open_vm_connections(),
            hub.core.open_clients(),
            hub.core.vmotions_pending(),
        )
    };
    let vms = paged_vms(shared, |hub, vm| vm_json(hub, &vm));
    // Clients of this instance attached to VMs that other instances hold (the owner lists
    // each as `user@instance` among its VM's clients).
    let remote: Vec<Value> = shared
        .lock()
        .core
        .remote_clients()
        .into_iter()
        .filter_map(|c| {
            let vm = c.remote.as_ref()?;
            let mut entry = client_json(&c);
            entry["vm"] = json!({
                "name": vm.name,
                "label": vm.label,
                "vc_uuid": vm.uuid,
                "instance": vm.instance,
            });
            Some(entry)
        })
        .collect();
    json!({
        "started": started,
        "vm_connections": vm_connections,
        "clients": clients,
        "vmotions_pending": pending,
        "vms": vms,
        "remote_clients": remote,
    })
}

/// Prometheus text format.
pub(crate) fn metrics(hub: &Hub) -> String {
    let m = hub.core.counters();
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (labels, value) in samples {
            out.push_str(&format!("{name}{labels} {value}\n"));
        }
    };
    let gauge = |n: usize| n as u64;
    metric(
        "vspc_vms",
        "gauge",
        "VM port entries (connected or lingering).",
        &[("", gauge(hub.core.vm_count()))],
    );
    metric(
        "vspc_vms_connected",
        "gauge",
        "VM port entries with a live connection.",
        &[("", gauge(hub.core.connected_vm_count()))],
    );
    metric(
        "vspc_vm_connections",
        "gauge",
        "Open VM connections.",
        &[("", gauge(hub.core.open_vm_connections()))],
    );
    metric(
        "vspc_vm_connections_total",
        "counter",
        "VM connections accepted.",
        &[("", m.vm_connections_total)],
    );
    metric(
        "vspc_vm_connections_refused_total",
        "counter",
        "VM connections refused at the cap.",
        &[("", m.vm_connections_refused)],
    );
    metric(
        "vspc_vm_connections_denied_total",
        "counter",
        "VM connections refused because their source is outside vm.allow.",
        &[("", hub.vm_denied)],
    );
    let cluster = hub.cluster_counts;
    metric(
        "vspc_shared_vmotions_total",
        "counter",
        "Shared vMotions: destinations carried to the instance holding their vMotion, PEERs \
         refused (no instance holds the key), refused (the store was unavailable), GOAHEADs \
         the store did not record.",
        &[
            ("{event=\"carried\"}", cluster.carried),
            ("{event=\"refused\"}", cluster.refused),
            ("{event=\"store_unavailable\"}", cluster.unavailable),
            ("{event=\"unshared\"}", cluster.unshared),
        ],
    );
    if let Some(owners) = &hub.owners {
        let (held, elsewhere) = owners.counts();
        metric(
            "vspc_ports_held",
            "gauge",
            "VM ports whose lease this instance holds (it writes their console logs).",
            &[("", gauge(held))],
        );
        metric(
            "vspc_ports_held_elsewhere",
            "gauge",
            "VM ports served here whose lease another instance holds (duplicates, not logged).",
            &[("", gauge(elsewhere))],
        );
        metric(
            "vspc_store_errors_total",
            "counter",
            "Calls to the shared state that failed (leases, releases).",
            &[("", owners.errors)],
        );
        metric(
            "vspc_lease_renewals_total",
            "counter",
            "Renewals of every held VM port that the shared state answered.",
            &[("", owners.renewals)],
        );
    }
    metric(
        "vspc_log_lines_suppressed_total",
        "counter",
        "Log lines caused by VM connections beyond their rate limit, counted instead.",
        &[("", hub.log_limit.suppressed)],
    );
    metric(
        "vspc_clients",
        "gauge",
        "Open client connections.",
        &[("", gauge(hub.core.open_clients()))],
    );
    metric(
        "vspc_client_connections_total",
        "counter",
        "Client connections accepted.",
        &[("", m.client_connections_total)],
    );
    metric(
        "vspc_client_connections_refused_total",
        "counter",
        "Client connections refused at the cap.",
        &[("", m.client_connections_refused)],
    );
    metric(
        "vspc_clients_dropped_slow_total",
        "counter",
        "Clients dropped for exceeding their output budget.",
        &[("", m.clients_dropped_slow)],
    );
    metric(
        "vspc_vm_bytes_total",
        "counter",
        "Serial bytes relayed.",
        &[
            ("{direction=\"from_vm\"}", m.bytes_from_vm),
            ("{direction=\"to_vm\"}", m.bytes_to_vm),
        ],
    );
    metric(
        "vspc_client_bytes_discarded_total",
        "counter",
        "Client bytes discarded (read-only client, or no VM connection).",
        &[("", m.client_bytes_discarded)],
    );
    metric(
        "vspc_unbound_bytes_dropped_total",
        "counter",
        "VM output dropped before identification (over vm.max_unbound).",
        &[("", m.unbound_bytes_dropped)],
    );
    metric(
        "vspc_protocol_errors_total",
        "counter",
        "Protocol violations by VMs.",
        &[("", m.protocol_errors)],
    );
    metric(
        "vspc_reattached_total",
        "counter",
        "Reconnects re-attached to their VM entry.",
        &[("", m.reattached)],
    );
    metric(
        "vspc_duplicate_identities_total",
        "counter",
        "Live connections that claimed a held identity (served as flagged entries).",
        &[("", m.impostors)],
    );
    metric(
        "vspc_vmotions_total",
        "counter",
        "vMotion events.",
        &[
            ("{event=\"goahead\"}", m.vmotion_goahead),
            ("{event=\"notnow\"}", m.vmotion_notnow),
            ("{event=\"completed\"}", m.vmotion_completed),
            ("{event=\"aborted\"}", m.vmotion_aborted),
            ("{event=\"expired\"}", m.vmotion_expired),
            ("{event=\"peer_rejected\"}", m.vmotion_peer_rejected),
        ],
    );
    metric(
        "vspc_vm_identify_timeouts_total",
        "counter",
        "VM connections closed for not identifying in time.",
        &[("", m.vm_identify_timeouts)],
    );
    metric(
        "vspc_lingering_evicted_total",
        "counter",
        "Lingering VM entries removed early to stay under vm.max_lingering.",
        &[("", m.lingering_evicted)],
    );
    metric(
        "vspc_clients_dropped_selecting_total",
        "counter",
        "Clients dropped for not choosing a VM in time, or to make room for another.",
        &[("", m.clients_dropped_selecting)],
    );
    metric(
        "vspc_com_port_ignored_total",
        "counter",
        "RFC 2217 (COM-PORT) messages ignored: malformed, not negotiated, or not the sender's.",
        &[("", m.com_port_ignored)],
    );
    metric(
        "vspc_vmotions_pending",
        "gauge",
        "vMotions pending in the coordinator.",
        &[("", gauge(hub.core.vmotions_pending()))],
    );
    out
}
