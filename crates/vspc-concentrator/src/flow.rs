//! Bytes between clients and VMs: output budgets and the flow control they drive, goodbyes,
//! and client input delivered to the VM as far as it takes it (backpressure, never loss).

use std::time::Instant;

use bytes::Bytes;
use vspc_proto::vspc_telnet::Command;
use vspc_proto::{EndpointSendError, SendError, SessionId};

use crate::clients::Input;
use crate::concentrator::Concentrator;
use crate::types::{ClientId, ClientTransmit, DropReason, Event, VmId, Wakeup, WriteError};

/// The goodbye a dropped client reads before the connection closes.
fn goodbye(reason: DropReason) -> &'static str {
    match reason {
        DropReason::TooSlow => {
            "\r\n[vspc: output buffer overflow: this client reads too slowly and was disconnected]\r\n"
        }
        DropReason::VmRemoved => "\r\n[vspc: the VM did not come back; closing]\r\n",
        DropReason::Shutdown => "\r\n[vspc: the concentrator is shutting down; goodbye]\r\n",
        DropReason::LineTooLong => "\r\nvspc: selection line too long\r\n",
        DropReason::SelectionTimeout => "\r\nvspc: no VM chosen in time; goodbye\r\n",
        DropReason::Crowded => "\r\nvspc: too many clients are choosing a VM; try again\r\n",
        DropReason::Detached => "\r\n[vspc: detached]\r\n",
    }
}

impl Concentrator {
    /// The client's output: chunks are appended to `out` (write them with one vectored
    /// write). The budget counts what is queued and not yet taken.
    pub fn poll_client_transmit(
        &mut self,
        client: ClientId,
        out: &mut Vec<Bytes>,
    ) -> ClientTransmit {
        let Some(c) = self.clients.get_mut(&client) else {
            return ClientTransmit::Close;
        };
        // RFC 2217 FLOWCONTROL-SUSPEND: output waits (and counts against the budget).
        if c.serial.as_ref().is_some_and(|s| s.suspended) && !c.closing {
            return ClientTransmit::Idle;
        }
        // Coming back for more means the previous write is done: the client caught up, and
        // its VM may be read again.
        if c.behind_since.take().is_some() {
            let (vm, remote) = (c.vm, c.remote.is_some());
            self.wake_reader(vm);
            // A remote VM's link is read again.
            if remote {
                self.wakeups.push_back(Wakeup::Client(client));
            }
        }
        let Some(c) = self.clients.get_mut(&client) else {
            return ClientTransmit::Close;
        };
        if c.queue.is_empty() {
            return if c.closing {
                ClientTransmit::Close
            } else {
                ClientTransmit::Idle
            };
        }
        c.queued = 0;
        for chunk in c.queue.drain(..) {
            c.bytes_out += chunk.len() as u64;
            out.push(chunk);
        }
        if c.closing {
            ClientTransmit::Close
        } else {
            ClientTransmit::Write
        }
    }

    /// Whether the driver should read from VM connection `conn`: false while a client of its
    /// VM is a whole output budget behind (flow control, as a serial line has: the client
    /// gets [`ConcentratorConfig::slow_client_grace`] to catch up, then it is dropped and
    /// the VM read again). A [`Wakeup::Vm`] comes when it turns true again.
    ///
    /// [`ConcentratorConfig::slow_client_grace`]: crate::ConcentratorConfig::slow_client_grace
    pub fn vm_wants_input(&self, conn: SessionId) -> bool {
        let Some(entry) = self
            .endpoint
            .data(conn)
            .and_then(|c| c.vm)
            .and_then(|vm| self.registry.get(vm))
        else {
            return true;
        };
        entry.clients.iter().all(|id| {
            self.clients
                .get(id)
                .is_none_or(|c| c.behind_since.is_none())
        })
    }

    /// Drops the clients that stayed a whole budget behind for the grace.
    pub(crate) fn expire_behind(&mut self, now: Instant) {
        let grace = self.config.slow_client_grace;
        while let Some(&(at, client)) = self.behind.front() {
            if at > now {
                break;
            }
            self.behind.pop_front();
            let still = self
                .clients
                .get(&client)
                .is_some_and(|c| !c.closing && c.behind_since.is_some_and(|s| s + grace <= now));
            if still {
                self.counters.clients_dropped_slow += 1;
                self.drop_client(client, DropReason::TooSlow);
            }
        }
    }

    /// Writes to a VM on behalf of the application (not a client): sent at once, held in
    /// order during a vMotion.
    pub fn write_to_vm(&mut self, vm: VmId, data: &[u8]) -> Result<(), WriteError> {
        let entry = self.registry.get(vm).ok_or(WriteError::NoSuchVm(vm))?;
        let conn = entry.active.ok_or(WriteError::NotConnected(vm))?;
        if self.endpoint.pending_transmit_len(conn) > self.config.max_pending_to_vm {
            return Err(WriteError::Full(vm));
        }
        match self.endpoint.send_data(conn, data) {
            Ok(target) => {
                self.count_to_vm(vm, data.len());
                self.wakeups.push_back(Wakeup::Vm(target));
                Ok(())
            }
            Err(EndpointSendError::Session(SendError::HoldFull { .. })) => {
                Err(WriteError::Full(vm))
            }
            Err(_) => Err(WriteError::NotConnected(vm)),
        }
    }

    /// Queues VM output for a client (already framed for its transport). A client with a
    /// whole budget waiting is behind: its VM is not read until it catches up
    /// ([`vm_wants_input`](Self::vm_wants_input)), and if it has not within the grace it is
    /// dropped with a message, so a stuck client delays its VM's other clients by at most
    /// the grace and never loses them a byte. Scheduling alone never drops a client that
    /// reads: only time spent behind counts.
    pub(crate) fn queue_output(&mut self, now: Instant, client: ClientId, bytes: Bytes) {
        let budget = self.config.output_budget;
        let grace = self.config.slow_client_grace;
        self.queue_client(client, bytes);
        let Some(c) = self.clients.get_mut(&client) else {
            return;
        };
        if c.queued > budget && c.behind_since.is_none() && !c.closing {
            c.behind_since = Some(now);
            self.behind.push_back((now + grace, client));
        }
    }

    /// Queues bytes (already framed for the client's transport). Past twice the budget (the
    /// memory bound per client, which only a single VM read larger than the budget can
    /// reach: a client behind stops its VM's reading) the client is dropped with a message.
    pub(crate) fn queue_client(&mut self, client: ClientId, bytes: Bytes) {
        let budget = self.config.output_budget;
        let Some(c) = self.clients.get_mut(&client) else {
            return;
        };
        if c.closing || bytes.is_empty() {
            return;
        }
        if c.queued + bytes.len() > budget.saturating_mul(2) {
            self.counters.clients_dropped_slow += 1;
            self.drop_client(client, DropReason::TooSlow);
            return;
        }
        c.queued += bytes.len();
        c.queue.push_back(bytes);
        self.wakeups.push_back(Wakeup::Client(client));
    }

    /// Detaches a client and queues its goodbye; its transmit then ends in
    /// [`ClientTransmit::Close`].
    pub fn drop_client(&mut self, client: ClientId, reason: DropReason) {
        let Some(c) = self.clients.get_mut(&client) else {
            return;
        };
        if c.closing {
            return;
        }
        c.queue.clear();
        c.queued = 0;
        c.input.clear();
        c.input_len = 0;
        c.queue
            .push_back(Bytes::from_static(goodbye(reason).as_bytes()));
        c.closing = true;
        self.closing_clients += 1;
        if c.selection.take().is_some() {
            self.selecting_count -= 1;
        }
        let vm = c.vm.take();
        self.detach(client, vm);
        self.events
            .push_back(Event::ClientDropped { client, reason });
        self.wakeups.push_back(Wakeup::Client(client));
    }

    /// Retries the waiting input of every client of `vm`.
    pub(crate) fn flush_writers(&mut self, vm: VmId) {
        let Some(entry) = self.registry.get(vm) else {
            return;
        };
        if entry.clients.is_empty() {
            return;
        }
        let waiting: Vec<ClientId> = entry
            .clients
            .iter()
            .copied()
            .filter(|c| self.clients.get(c).is_some_and(|c| !c.input.is_empty()))
            .collect();
        for client in waiting {
            self.flush_input(client);
        }
    }

    pub(crate) fn count_to_vm(&mut self, vm: VmId, len: usize) {
        self.counters.bytes_to_vm += len as u64;
        if let Some(entry) = self.registry.get_mut(vm) {
            entry.bytes_to_vm += len as u64;
        }
    }

    /// Sends the client's waiting input to its VM as far as the VM takes it.
    pub(crate) fn flush_input(&mut self, client: ClientId) {
        let max_pending = self.config.max_pending_to_vm;
        loop {
            let Some(c) = self.clients.get_mut(&client) else {
                return;
            };
            let Some(item) = c.input.front() else {
                return;
            };
            // A site lookup's client keeps its input for the selection or the link; a remote
            // writer's input is the link's to take (`poll_remote_input`).
            if c.elsewhere.is_some() || (c.remote.is_some() && c.mode.writes() && !c.closing) {
                self.wakeups.push_back(Wakeup::Client(client));
                return;
            }
            let writable = c.mode.writes() && !c.closing;
            let target =
                c.vm.filter(|_| writable)
                    .and_then(|vm| self.registry.get(vm).map(|e| (vm, e.active)));
            let (vm, conn) = match target {
                // Read-only, detached, or the VM entry is gone: discarded.
                None => {
                    let dropped = c.input_len;
                    c.input.clear();
                    c.input_len = 0;
                    self.counters.client_bytes_discarded += dropped as u64;
                    self.wakeups.push_back(Wakeup::Client(client));
                    return;
                }
                // The VM is away (reconnecting, in transit): the input waits.
                Some((_, None)) => return,
                Some((vm, Some(conn))) => (vm, conn),
            };
            let sent = match item {
                Input::Data(data) => {
                    if self.endpoint.pending_transmit_len(conn) > max_pending {
                        return;
                    }
                    match self.endpoint.send_data(conn, data) {
                        Ok(target) => Some((target, data.len())),
                        Err(EndpointSendError::Session(SendError::HoldFull { .. })) => return,
                        Err(_) => None,
                    }
                }
                Input::Break => {
                    // Held client data (a vMotion under way) goes first: the break waits.
                    if self.endpoint.session(conn).is_some_and(|s| s.is_holding()) {
                        return;
                    }
                    self.endpoint.send_command(conn, Command::Break);
                    self.events.push_back(Event::ClientBreak { client, vm });
                    Some((conn, 0))
                }
                // Handled as typed; never queued.
                Input::Detach => None,
            };
            let Some(c) = self.clients.get_mut(&client) else {
                return;
            };
            let len = match c.input.pop_front() {
                Some(Input::Data(d)) => d.len(),
                _ => 0,
            };
            c.input_len -= len;
            match sent {
                Some((target, len)) => {
                    c.bytes_in += len as u64;
                    self.count_to_vm(vm, len);
                    self.wakeups.push_back(Wakeup::Vm(target));
                }
                None => self.counters.client_bytes_discarded += len as u64,
            }
            if self
                .clients
                .get(&client)
                .is_some_and(|c| c.input.is_empty())
            {
                self.wakeups.push_back(Wakeup::Client(client));
            }
        }
    }
}
