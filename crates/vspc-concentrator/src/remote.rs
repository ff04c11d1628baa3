//! Clients attached to a VM that another instance of the site holds.
//!
//! With [`ConcentratorConfig::site_directory`](crate::ConcentratorConfig::site_directory), a
//! selection that matches no VM here is reported as [`Event::SelectionElsewhere`] instead of
//! refused, and the client waits (its further input is kept) while the driver looks the
//! selector up in the site's directory. The driver answers with
//! [`Concentrator::attach_remote`] (the client's grants are checked here, on the names the
//! directory gave) or [`Concentrator::selection_failed`] (the client reads why, and the menu).
//!
//! A remotely attached client stays a client of this concentrator: its transport, escape,
//! output budget and flow control are the same as for a local VM. Only where its bytes go
//! differs: its decoded input is taken by the driver ([`Concentrator::poll_remote_input`],
//! framed for the link), and the owner's output is given back
//! ([`Concentrator::handle_remote_output`], read only while
//! [`Concentrator::remote_wants_output`]). The owner enforces the modes, exclusivity and
//! kicks, and it alone writes the VM's console log.

use std::time::Instant;

use bytes::{Bytes, BytesMut};

use crate::access::VmNames;
use crate::clients::Input;
use crate::concentrator::{escape_iac, Concentrator};
use crate::selection::{Request, Selection};
use crate::types::{AttachError, ClientId, Event, Mode, Wakeup};
use crate::users::{check_grant, pick_mode, ESCAPE};

/// A VM held by another instance, as the site's directory names it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct RemoteVm {
    /// The VM's name (VM-NAME).
    pub name: String,
    /// The port's label (empty when the directory does not know it).
    pub label: String,
    /// The VC UUID (canonical text).
    pub uuid: String,
    /// The instance that holds it.
    pub instance: String,
}

impl RemoteVm {
    /// A VM named `name`, port `label`, VC UUID `uuid`, held by `instance`.
    pub fn new(
        name: impl Into<String>,
        label: impl Into<String>,
        uuid: impl Into<String>,
        instance: impl Into<String>,
    ) -> RemoteVm {
        RemoteVm {
            name: name.into(),
            label: label.into(),
            uuid: uuid.into(),
            instance: instance.into(),
        }
    }

    fn names(&self) -> VmNames<'_> {
        VmNames {
            name: &self.name,
            label: &self.label,
            uuid: &self.uuid,
        }
    }
}

/// How a remote attachment was granted: what the driver asks the owner for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RemoteGrant {
    /// The mode.
    pub mode: Mode,
    /// Take the write lock from the VM's writers (with [`Mode::Exclusive`]).
    pub kick: bool,
}

/// The escape on a link's input: `ESCAPE b` is a serial break, `ESCAPE ESCAPE` a literal
/// `ESCAPE` (the owner's in-band escape decodes exactly this).
const LINK_BREAK: [u8; 2] = [ESCAPE, b'b'];

impl Concentrator {
    /// A selection that matched nothing here: with a site directory, the driver looks it up
    /// and the client waits; without, `Err(error)` is the client's answer as before.
    pub(crate) fn select_elsewhere(
        &mut self,
        client: ClientId,
        request: Request,
        error: AttachError,
    ) -> Result<(), AttachError> {
        if !self.config.site_directory || !matches!(error, AttachError::NoMatch(_)) {
            return Err(error);
        }
        let Some(c) = self.clients.get_mut(&client) else {
            return Err(error);
        };
        self.events.push_back(Event::SelectionElsewhere {
            client,
            selector: request.selector.clone(),
            mode: request.mode,
            kick: request.kick,
        });
        c.elsewhere = Some(Box::new(request));
        Ok(())
    }

    /// Attaches a client that waits on [`Event::SelectionElsewhere`] to the VM the site's
    /// directory found on another instance, once its grants allow it (checked here on the
    /// VM's name, `name/label` and UUID). The mode is the one the client asked for, else the
    /// best its rights allow. Nothing is shown to the client: the owner's banner and
    /// scrollback come first on the link. On refusal the client reads why and the menu.
    pub fn attach_remote(
        &mut self,
        client: ClientId,
        vm: RemoteVm,
    ) -> Result<RemoteGrant, AttachError> {
        let request = match self.clients.get_mut(&client) {
            Some(c) if !c.closing => c.elsewhere.take(),
            _ => return Err(AttachError::ClientGone),
        };
        let Some(request) = request else {
            return Err(AttachError::ClientGone);
        };
        let user = self.clients.get(&client).and_then(|c| c.user.clone());
        let rights = user
            .as_deref()
            .map_or(crate::access::Rights::ALL, |u| u.rights(&vm.names()));
        let mode = pick_mode(&request, rights);
        if let Some(user) = &user {
            if let Err(error) = check_grant(user, &vm.names(), mode, request.kick) {
                self.refuse_selection(client, &error);
                return Err(error);
            }
        }
        let Some(c) = self.clients.get_mut(&client) else {
            return Err(AttachError::ClientGone);
        };
        if let Some(selection) = c.selection.take() {
            c.skip_lf = selection.after_cr;
            self.selecting_count -= 1;
        }
        c.mode = mode;
        let kick = request.kick;
        self.events.push_back(Event::ClientAttachedRemote {
            client,
            vm: Box::new(vm.clone()),
            mode,
        });
        c.remote = Some(Box::new(vm));
        // Input typed after the selection line waits for the link (the LF of its CR LF
        // skipped, as after a local attach).
        self.replay_input(client);
        Ok(RemoteGrant { mode, kick })
    }

    /// Answers a client that waits on [`Event::SelectionElsewhere`] when the site has no
    /// such VM (or several, or the directory cannot be reached): it reads `error` and the
    /// menu, as for a selection that matched nothing here, and what it typed meanwhile is
    /// read as selection input again.
    pub fn selection_failed(&mut self, client: ClientId, error: AttachError) {
        let waiting = self
            .clients
            .get_mut(&client)
            .is_some_and(|c| !c.closing && c.elsewhere.take().is_some());
        if waiting {
            self.refuse_selection(client, &error);
            self.replay_input(client);
        }
    }

    /// The client reads why its selection failed, then the menu.
    pub(crate) fn refuse_selection(&mut self, client: ClientId, error: &AttachError) {
        let text = format!("vspc: {error}\r\n{}", self.client_menu(client));
        self.queue_client(client, Bytes::from(text));
    }

    /// Feeds what waited behind a site lookup to the client again: to its selection, or
    /// toward its remote VM.
    fn replay_input(&mut self, client: ClientId) {
        let Some(c) = self.clients.get_mut(&client) else {
            return;
        };
        let waiting: Vec<Input> = c.input.drain(..).collect();
        c.input_len = 0;
        for item in waiting {
            self.typed(client, item);
        }
        self.flush_input(client);
        self.wakeups.push_back(Wakeup::Client(client));
    }

    /// The VM a client is attached to on another instance, if it is.
    pub fn client_remote(&self, client: ClientId) -> Option<&RemoteVm> {
        self.clients.get(&client).and_then(|c| c.remote.as_deref())
    }

    /// A remotely attached client's input for the link to the owner, framed for the owner's
    /// in-band escape: data with `ESCAPE` doubled, a serial break as `ESCAPE b`. `None` when
    /// nothing waits. Taking it lets the client's input flow again ([`Wakeup::Client`]).
    pub fn poll_remote_input(&mut self, client: ClientId) -> Option<Bytes> {
        let c = self.clients.get_mut(&client)?;
        if c.remote.is_none() || c.closing || c.input.is_empty() {
            return None;
        }
        let mut out = BytesMut::with_capacity(c.input_len + 2);
        let mut data_len = 0;
        for item in c.input.drain(..) {
            match item {
                Input::Data(data) => {
                    data_len += data.len();
                    for &b in data.iter() {
                        if b == ESCAPE {
                            out.extend_from_slice(&[ESCAPE, ESCAPE]);
                        } else {
                            out.extend_from_slice(&[b]);
                        }
                    }
                }
                Input::Break => out.extend_from_slice(&LINK_BREAK),
                Input::Detach => {}
            }
        }
        c.input_len = 0;
        // The owner counts the VM's bytes; this instance counts its client's.
        c.bytes_in += data_len as u64;
        self.wakeups.push_back(Wakeup::Client(client));
        Some(out.freeze())
    }

    /// Output of the remote VM, read from the link: queued to the client (escaped for its
    /// transport) under its output budget, as a local VM's output is.
    pub fn handle_remote_output(&mut self, now: Instant, client: ClientId, bytes: &[u8]) {
        let Some(c) = self.clients.get(&client) else {
            return;
        };
        if c.remote.is_none() || c.closing || bytes.is_empty() {
            return;
        }
        let bytes = Bytes::copy_from_slice(bytes);
        let out = if c.is_telnet() {
            escape_iac(&bytes)
        } else {
            bytes
        };
        self.queue_output(now, client, out);
    }

    /// Whether the driver should read the link of a remotely attached client: false while
    /// the client is a whole output budget behind (the owner's flow control then holds the
    /// VM, as for a local client), or when it is gone, closing or not remote. A
    /// [`Wakeup::Client`] comes when it turns true again.
    pub fn remote_wants_output(&self, client: ClientId) -> bool {
        self.clients
            .get(&client)
            .is_some_and(|c| c.remote.is_some() && !c.closing && c.behind_since.is_none())
    }

    /// The link to the owner ended (it refused the attach, closed, or could not be reached):
    /// the client reads `[vspc: <reason>]` and the menu, and chooses again.
    pub fn handle_remote_closed(&mut self, now: Instant, client: ClientId, reason: &str) {
        let Some(c) = self.clients.get_mut(&client) else {
            return;
        };
        if c.closing || c.remote.take().is_none() {
            return;
        }
        let dropped = c.input_len;
        c.input.clear();
        c.input_len = 0;
        c.mode = Mode::ReadWrite;
        c.selection = Some(Selection::default());
        c.select_by = now + self.config.select_timeout;
        self.counters.client_bytes_discarded += dropped as u64;
        self.selecting_count += 1;
        self.selecting.push_back((c.select_by, client));
        let text = format!(
            "\r\n[vspc: {}]\r\n{}",
            crate::registry::printable(reason),
            self.client_menu(client)
        );
        self.queue_client(client, Bytes::from(text));
        self.wakeups.push_back(Wakeup::Client(client));
    }
}
