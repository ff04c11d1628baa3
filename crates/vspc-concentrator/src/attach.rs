//! Attaching clients to VMs: modes, exclusivity, the banner and scrollback, detaching.

use bytes::BytesMut;
use vspc_proto::vspc_telnet::encode_data;
use vspc_proto::SessionId;

use crate::concentrator::Concentrator;
use crate::registry::printable;
use crate::types::{AttachError, ClientId, Event, Mode, VmId, Wakeup};
use crate::users::{check_grant, names};

impl Concentrator {
    /// Attaches a client to a VM in `mode` (enforced here, with an authenticated user's
    /// grants), then queues the banner and the scrollback ahead of live output.
    pub fn attach(&mut self, client: ClientId, vm: VmId, mode: Mode) -> Result<(), AttachError> {
        self.attach_as(client, vm, mode, false)
    }

    pub(crate) fn attach_as(
        &mut self,
        client: ClientId,
        vm: VmId,
        mode: Mode,
        kick: bool,
    ) -> Result<(), AttachError> {
        let budget = self.config.output_budget;
        let Some(entry) = self.registry.get(vm) else {
            return Err(AttachError::NoSuchNumber(vm.0));
        };
        let c = match self.clients.get(&client) {
            Some(c) if !c.closing => c,
            _ => return Err(AttachError::ClientGone),
        };
        if let Some(user) = &c.user {
            check_grant(user, &names(entry), mode, kick)?;
        }
        if kick {
            self.kick_writers(client, vm);
        }
        let Some(entry) = self.registry.get(vm) else {
            return Err(AttachError::NoSuchNumber(vm.0));
        };
        let Some(c) = self.clients.get(&client) else {
            return Err(AttachError::ClientGone);
        };
        let previous = c.vm;
        let writers = entry
            .clients
            .iter()
            .filter(|id| **id != client)
            .filter(|id| self.clients.get(id).is_some_and(|r| r.mode.writes()))
            .count();
        if let Some(holder) = entry.exclusive {
            if mode.writes() && holder != client {
                return Err(AttachError::HeldExclusively(printable(&entry.name).into()));
            }
        }
        if mode == Mode::Exclusive && writers > 0 {
            return Err(AttachError::WritersAttached {
                name: printable(&entry.name).into(),
                writers,
            });
        }
        if previous.is_some() {
            self.detach(client, previous);
        }
        let Some(entry) = self.registry.get_mut(vm) else {
            return Err(AttachError::NoSuchNumber(vm.0));
        };
        let Some(c) = self.clients.get_mut(&client) else {
            return Err(AttachError::ClientGone);
        };
        if let Some(selection) = c.selection.take() {
            c.skip_lf = selection.after_cr;
            self.selecting_count -= 1;
        }
        c.vm = Some(vm);
        c.mode = mode;
        entry.clients.push(client);
        if mode == Mode::Exclusive {
            entry.exclusive = Some(client);
        }
        let mut out = BytesMut::new();
        out.extend_from_slice(
            format!(
                "\r\n[vspc: attached to {} ({}){}]\r\n",
                printable(&entry.name),
                mode.short(),
                if entry.flagged.is_some() {
                    ", FLAGGED duplicate identity"
                } else {
                    ""
                }
            )
            .as_bytes(),
        );
        // Replay the newest scrollback that fits the client's budget with the banner: a
        // scrollback larger than the budget must not drop a client that has not read a byte.
        let room = budget.saturating_sub(c.queued + out.len());
        let telnet = c.telnet.is_some();
        let mut skip = entry.scrollback.len();
        let mut cost = 0;
        for &byte in entry.scrollback.iter().rev() {
            cost += if telnet && byte == 0xff { 2 } else { 1 };
            if cost > room {
                break;
            }
            skip -= 1;
        }
        let (a, b) = entry.scrollback.as_slices();
        let (a, b) = match a.get(skip..) {
            Some(a) => (a, b),
            None => (&[][..], b.get(skip - a.len()..).unwrap_or_default()),
        };
        if telnet {
            encode_data(a, true, &mut out);
            encode_data(b, true, &mut out);
        } else {
            out.extend_from_slice(a);
            out.extend_from_slice(b);
        }
        self.events
            .push_back(Event::ClientAttached { client, vm, mode });
        self.queue_client(client, out.freeze());
        // An RFC 2217 client learns its new port's lines.
        self.notify_client(client);
        Ok(())
    }

    pub(crate) fn detach(&mut self, client: ClientId, vm: Option<VmId>) {
        if let Some(entry) = vm.and_then(|vm| self.registry.get_mut(vm)) {
            entry.clients.retain(|c| *c != client);
            if entry.exclusive == Some(client) {
                entry.exclusive = None;
            }
        }
        // It may have been the client its VM waited for.
        self.wake_reader(vm);
    }

    /// Wakes the connection of `vm`, whose reading may have been paused for a client.
    pub(crate) fn wake_reader(&mut self, vm: Option<VmId>) {
        if let Some(conn) = vm
            .and_then(|vm| self.registry.get(vm))
            .and_then(|e| e.active)
        {
            self.wakeups.push_back(Wakeup::Vm(conn));
        }
    }

    /// The connection a client's input goes to, for tests and inspection.
    pub fn client_vm(&self, client: ClientId) -> Option<VmId> {
        self.clients.get(&client).and_then(|c| c.vm)
    }

    /// The connection carrying `vm` now, if any.
    pub fn vm_connection(&self, vm: VmId) -> Option<SessionId> {
        self.registry.get(vm).and_then(|e| e.active)
    }
}
