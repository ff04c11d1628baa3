//! Authenticated clients in the core: how one connects ([`ClientSetup`]), its grants
//! enforced on every attach and in its menu, kick, and the in-band escape of raw clients.
//! The policy itself (grants, rights, patterns) is `access.rs`.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::access::{Rights, User, VmNames};
use crate::clients::Input;
use crate::concentrator::Concentrator;
use crate::registry::{printable, VmEntry};
use crate::selection::Request;
use crate::types::{AttachError, ClientId, Event, Mode, Transport, VmId};

/// The in-band escape of raw clients that asked for it: this byte (Ctrl-]) then `b` sends a
/// serial break, `d` detaches, and a second Ctrl-] sends one literally; any other byte
/// after it passes through with it.
pub const ESCAPE: u8 = 0x1d;

/// Where a client's input stands in the in-band escape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Escape {
    Off,
    Idle,
    /// Ctrl-] was the last byte.
    Pending,
}

/// How a client connects, beyond its address: see
/// [`Concentrator::handle_client_connect_with`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientSetup {
    /// How its bytes are framed.
    pub transport: Transport,
    /// Who it is, for an authenticated transport: its grants are enforced on every attach,
    /// its menu lists only what it may attach to, and others are told its name.
    pub user: Option<Arc<User>>,
    /// Whether its input is scanned for the in-band escape ([`ESCAPE`]).
    pub escape: bool,
    /// What it asked for at connect time, as `<selector>[+rw|+ro|+excl][+kick]` (an SSH
    /// user name); `None` shows the menu.
    pub request: Option<String>,
}

impl ClientSetup {
    /// A client on `transport`, unrestricted, no escape, shown the menu.
    pub fn new(transport: Transport) -> ClientSetup {
        ClientSetup {
            transport,
            user: None,
            escape: false,
            request: None,
        }
    }

    /// Sets who the client is.
    pub fn user(mut self, user: Arc<User>) -> ClientSetup {
        self.user = Some(user);
        self
    }

    /// Turns the in-band escape on.
    pub fn escape(mut self, on: bool) -> ClientSetup {
        self.escape = on;
        self
    }

    /// Sets what the client asks for (`<selector>[+rw|+ro|+excl][+kick]`).
    pub fn request(mut self, request: impl Into<String>) -> ClientSetup {
        self.request = Some(request.into());
        self
    }
}

impl Concentrator {
    /// The menu as `client` sees it: an authenticated user's lists only the VMs its grants
    /// reach.
    pub(crate) fn client_menu(&self, client: ClientId) -> String {
        let rows = self.config.menu_rows;
        match self.clients.get(&client).and_then(|c| c.user.as_deref()) {
            None => self.registry.menu(rows, |_| true),
            Some(user) => self
                .registry
                .menu(rows, |e| user.rights(&names(e)) != Rights::default()),
        }
    }

    /// Resolves and attaches what a client asked for, in the mode it named or the best its
    /// rights allow, taking the write lock from its holders when it asked to kick.
    pub(crate) fn attach_request(
        &mut self,
        client: ClientId,
        request: Request,
    ) -> Result<(), AttachError> {
        let vm = match self.registry.resolve(&request.selector) {
            Ok(vm) => vm,
            Err(error) => return self.select_elsewhere(client, request, error),
        };
        let mode = pick_mode(&request, self.rights(client, vm));
        self.attach_as(client, vm, mode, request.kick)
    }

    /// What `client` may do on `vm`: everything for an unrestricted client.
    fn rights(&self, client: ClientId, vm: VmId) -> Rights {
        let user = self.clients.get(&client).and_then(|c| c.user.as_deref());
        match (user, self.registry.get(vm)) {
            (None, _) => Rights::ALL,
            (Some(user), Some(entry)) => user.rights(&names(entry)),
            (Some(_), None) => Rights::default(),
        }
    }

    /// Attaches exclusively, first taking the write lock from every other writer of the VM
    /// (they become read-only, are told by whom, and [`Event::ClientKicked`] reports each):
    /// conserver's force-attach. Needs the `kick` right for an authenticated user.
    pub fn attach_kick(&mut self, client: ClientId, vm: VmId) -> Result<(), AttachError> {
        self.attach_as(client, vm, Mode::Exclusive, true)
    }

    /// Makes every other writer of `vm` read-only and tells it who took the lock.
    pub(crate) fn kick_writers(&mut self, by: ClientId, vm: VmId) {
        let who = match self.clients.get(&by) {
            Some(c) => match &c.user {
                Some(user) => format!("{} ({})", printable(&user.name), c.peer),
                None => c.peer.to_string(),
            },
            None => return,
        };
        let Some(entry) = self.registry.get_mut(vm) else {
            return;
        };
        entry.exclusive = entry.exclusive.filter(|holder| *holder == by);
        let name = printable(&entry.name).into_owned();
        let writers: Vec<ClientId> = entry
            .clients
            .iter()
            .copied()
            .filter(|id| *id != by)
            .filter(|id| self.clients.get(id).is_some_and(|c| c.mode.writes()))
            .collect();
        for other in writers {
            if let Some(c) = self.clients.get_mut(&other) {
                c.mode = Mode::ReadOnly;
            }
            let text = format!(
                "\r\n[vspc: {who} took the write lock on {name}; you are read-only now]\r\n"
            );
            self.queue_client(other, Bytes::from(text));
            self.events.push_back(Event::ClientKicked {
                client: other,
                vm,
                by,
            });
        }
    }
}

/// The mode a request asked for, else the best `rights` allow (read-write, else read-only).
pub(crate) fn pick_mode(request: &Request, rights: Rights) -> Mode {
    match (request.mode, request.kick) {
        (_, true) => Mode::Exclusive,
        (Some(mode), false) => mode,
        (None, false) if !rights.read_write && rights.read_only => Mode::ReadOnly,
        (None, false) => Mode::ReadWrite,
    }
}

/// Whether `user`'s grants allow `mode` (or `kick`) on the VM named by `vm`; the refusal
/// says what they allow there.
pub(crate) fn check_grant(
    user: &User,
    vm: &VmNames<'_>,
    mode: Mode,
    kick: bool,
) -> Result<(), AttachError> {
    let rights = user.rights(vm);
    let permitted = if kick {
        rights.kick
    } else {
        rights.allows(mode)
    };
    if permitted {
        return Ok(());
    }
    Err(AttachError::NotPermitted {
        user: printable(&user.name).into(),
        vm: printable(vm.name).into(),
        mode: if kick { "kick" } else { mode.short() },
        allowed: rights.to_string(),
    })
}

/// The names a grant is matched against.
pub(crate) fn names(entry: &VmEntry) -> VmNames<'_> {
    VmNames {
        name: &entry.name,
        label: entry.label(),
        uuid: entry.key.uuid(),
    }
}

/// Splits raw input at the in-band escape: `ESCAPE b` is a break, `ESCAPE d` a detach,
/// `ESCAPE ESCAPE` one literal `ESCAPE`; any other byte after `ESCAPE` passes with it. The
/// state carries a trailing `ESCAPE` into the next read.
pub(crate) fn unescape(state: &mut Escape, bytes: &[u8], items: &mut Vec<Input>) {
    let mut data = BytesMut::new();
    for &b in bytes {
        if *state == Escape::Pending {
            *state = Escape::Idle;
            let command = match b {
                b'b' | b'B' => Input::Break,
                b'd' | b'D' => Input::Detach,
                ESCAPE => {
                    data.extend_from_slice(&[ESCAPE]);
                    continue;
                }
                other => {
                    data.extend_from_slice(&[ESCAPE, other]);
                    continue;
                }
            };
            if !data.is_empty() {
                items.push(Input::Data(data.split().freeze()));
            }
            let detach = matches!(command, Input::Detach);
            items.push(command);
            if detach {
                // Nothing typed after a detach is delivered.
                return;
            }
        } else if b == ESCAPE {
            *state = Escape::Pending;
        } else {
            data.extend_from_slice(&[b]);
        }
    }
    if !data.is_empty() {
        items.push(Input::Data(data.freeze()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(chunks: &[&[u8]]) -> Vec<String> {
        let mut state = Escape::Idle;
        let mut items = Vec::new();
        for chunk in chunks {
            unescape(&mut state, chunk, &mut items);
        }
        items
            .iter()
            .map(|i| match i {
                Input::Data(d) => format!("{:?}", d),
                Input::Break => "BREAK".into(),
                Input::Detach => "DETACH".into(),
            })
            .collect()
    }

    #[test]
    fn the_escape_splits_breaks_and_detach_across_reads() {
        assert_eq!(scan(&[b"ab\x1dbcd"]), ["b\"ab\"", "BREAK", "b\"cd\""]);
        assert_eq!(scan(&[b"a\x1d", b"\x1dz"]), ["b\"a\"", "b\"\\x1dz\""]);
        assert_eq!(scan(&[b"x\x1d", b"dlost"]), ["b\"x\"", "DETACH"]);
        assert_eq!(scan(&[b"\x1dq"]), ["b\"\\x1dq\""]);
        assert_eq!(scan(&[b"\x1d"]), Vec::<String>::new());
    }
}
