//! The concentrator's bounds and policies.

use std::time::Duration;

/// Configuration of a [`Concentrator`](crate::Concentrator). Every bound it enforces is
/// here; the defaults suit a concentrator holding 10,000 VMs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConcentratorConfig {
    /// Cap on simultaneous VM connections; beyond it a connection is refused.
    pub max_vm_connections: usize,
    /// Cap on one telnet subnegotiation from a VM, in bytes.
    pub max_subnegotiation: usize,
    /// Cap on client bytes held for a VM during a vMotion.
    pub max_held: usize,
    /// Cap on bytes queued toward one VM before its writers are paused (backpressure).
    pub max_pending_to_vm: usize,
    /// Cap on VM output kept for a connection that has not identified yet (the excess is
    /// dropped and counted).
    pub max_unbound: usize,
    /// A VM connection that has not identified itself (VC UUID and DO-PROXY) this long
    /// after it connected is closed. A vMotion destination is exempt once it claimed a
    /// vMotion (it never sends DO-PROXY; the vMotion's own timeout bounds it).
    pub identify_timeout: Duration,
    /// How long a VM entry (clients, scrollback) is kept after its connection went away,
    /// waiting for a reconnect.
    pub linger: Duration,
    /// Cap on entries lingering at once; past it the oldest is removed (and counted), so VMs
    /// that come and go cannot grow the registry.
    pub max_lingering: usize,
    /// Answer VMOTION-BEGIN with GOAHEAD (`false`: always NOTNOW).
    pub allow_vmotion: bool,
    /// Accept the VM's `WILL COM-PORT` (RFC 2217): the guest UART's settings it reports
    /// become the truth of the port's model, answered to RFC 2217 clients. Off, the
    /// concentrator refuses it and emulates the port for its clients.
    pub vm_com_port: bool,
    /// vMotions are shared with other concentrators: a GOAHEAD's key is reported
    /// ([`Event::HandoverOffered`](crate::Event::HandoverOffered)) for the driver to publish,
    /// and a PEER whose key this concentrator does not hold is reported
    /// ([`Event::PeerElsewhere`](crate::Event::PeerElsewhere)) for the driver to route
    /// ([`Concentrator::hand_off`](crate::Concentrator::hand_off)) or refuse
    /// ([`Concentrator::refuse_peer`](crate::Concentrator::refuse_peer)). Off (the default),
    /// every PEER is answered here.
    pub shared_vmotions: bool,
    /// The site's other instances are asked for a VM that no selection matches here
    /// ([`Event::SelectionElsewhere`](crate::Event::SelectionElsewhere)): a client attaches
    /// to any VM of the site ([`Concentrator::attach_remote`]). Off (the default), such a
    /// selection is refused at once.
    ///
    /// [`Concentrator::attach_remote`]: crate::Concentrator::attach_remote
    pub site_directory: bool,
    /// How long a vMotion may stay pending after GOAHEAD.
    pub vmotion_timeout: Duration,
    /// Length of minted vMotion secrets.
    pub secret_len: usize,
    /// Cap on simultaneous clients.
    pub max_clients: usize,
    /// A client that has not chosen a VM this long after it connected is dropped.
    pub select_timeout: Duration,
    /// Cap on clients still choosing a VM; past it (or when all `max_clients` slots are
    /// taken) the one that has been choosing longest is dropped to make room, so idle
    /// connections can never lock out a client that selects.
    pub max_selecting: usize,
    /// How far a client may fall behind its VM's output: with this much waiting for it, its
    /// VM is not read until it catches up (flow control), for at most
    /// [`slow_client_grace`](Self::slow_client_grace). Twice this is the memory bound per
    /// client.
    pub output_budget: usize,
    /// How long a client may stay a whole budget behind before it is dropped with a
    /// message (and its VM read again): the longest a stuck client can delay the VM's other
    /// clients, and what a reader that the OS scheduler set aside is given to come back.
    pub slow_client_grace: Duration,
    /// Cap on client input waiting for its VM (decoded bytes); the driver stops reading a
    /// client whose input waits ([`Concentrator::client_wants_input`]), so this only bounds
    /// one read's worth; what exceeds it is discarded and counted.
    ///
    /// [`Concentrator::client_wants_input`]: crate::Concentrator::client_wants_input
    pub max_pending_input: usize,
    /// Bytes of VM output replayed to a client that attaches.
    pub scrollback: usize,
    /// Report every VM's output as [`Event::Console`](crate::Event::Console) (for console
    /// logs and subscribers). Off, output goes only to attached clients.
    pub console_events: bool,
    /// How many VM ports the client menu lists (any VM stays selectable by number, name or
    /// UUID): a screenful, because a menu of thousands of lines helps nobody.
    pub menu_rows: usize,
    /// How many vMotion records a VM keeps.
    pub vmotion_history: usize,
}

impl Default for ConcentratorConfig {
    fn default() -> Self {
        ConcentratorConfig {
            max_vm_connections: 10_000,
            max_subnegotiation: vspc_proto::vspc_telnet::DEFAULT_MAX_SUBNEGOTIATION,
            max_held: 1 << 20,
            max_pending_to_vm: 256 * 1024,
            max_unbound: 16 * 1024,
            identify_timeout: Duration::from_secs(30),
            linger: Duration::from_secs(300),
            max_lingering: 4096,
            allow_vmotion: true,
            vm_com_port: true,
            shared_vmotions: false,
            site_directory: false,
            vmotion_timeout: Duration::from_secs(30),
            secret_len: 8,
            max_clients: 1000,
            select_timeout: Duration::from_secs(30),
            max_selecting: 500,
            output_budget: 1 << 20,
            slow_client_grace: Duration::from_secs(1),
            max_pending_input: 64 * 1024,
            scrollback: 16 * 1024,
            console_events: false,
            menu_rows: 40,
            vmotion_history: 32,
        }
    }
}
