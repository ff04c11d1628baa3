//! The VM registry: entries keyed by VC UUID plus service URI, and how clients name them.

use crate::serial::PortModel;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use vspc_proto::SessionId;

use crate::types::{AttachError, ClientId, VmId, VmState, VmotionRecord};

/// Identity of a VM port: VC UUID plus the service URI of its DO-PROXY.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct VmKey {
    /// The UUID then the service URI, in one allocation; `uuid_len` splits them (and keeps
    /// the key unambiguous whatever bytes either holds).
    text: Box<str>,
    uuid_len: usize,
}

impl VmKey {
    pub(crate) fn new(uuid: &str, service_uri: &str) -> VmKey {
        VmKey {
            text: [uuid, service_uri].concat().into_boxed_str(),
            uuid_len: uuid.len(),
        }
    }

    pub(crate) fn uuid(&self) -> &str {
        self.text.get(..self.uuid_len).unwrap_or_default()
    }

    pub(crate) fn service_uri(&self) -> &str {
        self.text.get(self.uuid_len..).unwrap_or_default()
    }
}

/// `text` as a person may be shown it: control characters (C0, DEL and C1) become `\xNN`,
/// so a VM-chosen name cannot move an operator's cursor or rewrite the terminal.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.push_str(&format!("\\x{:02x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// The short label of a service URI: the value of `port=` when present (VMware's kit names
/// ports that way), otherwise the whole URI.
pub fn label_of(service_uri: &str) -> &str {
    service_uri
        .split_once('?')
        .and_then(|(_, query)| query.split('&').find_map(|kv| kv.strip_prefix("port=")))
        .unwrap_or(service_uri)
}

/// One serial port of one VM, as clients see it. Survives reconnects and vMotions.
#[derive(Debug)]
pub(crate) struct VmEntry {
    pub(crate) id: VmId,
    pub(crate) key: Arc<VmKey>,
    pub(crate) name: String,
    /// Why this entry is flagged (a second live connection claiming a held identity).
    pub(crate) flagged: Option<String>,
    pub(crate) active: Option<SessionId>,
    pub(crate) state: VmState,
    /// When it went away (for the linger queue: a stale queue item is recognised by it).
    pub(crate) away_since: Option<Instant>,
    pub(crate) connections: u64,
    pub(crate) clients: Vec<ClientId>,
    pub(crate) exclusive: Option<ClientId>,
    pub(crate) scrollback: VecDeque<u8>,
    pub(crate) bytes_from_vm: u64,
    pub(crate) bytes_to_vm: u64,
    /// Boxed once there is one (most VMs never move).
    #[allow(clippy::box_collection)]
    pub(crate) history: Option<Box<VecDeque<VmotionRecord>>>,
    /// The port's UART model, once a VM or client spoke of it (RFC 2217).
    pub(crate) serial: Option<Box<PortModel>>,
}

impl VmEntry {
    pub(crate) fn label(&self) -> &str {
        label_of(self.key.service_uri())
    }
}

/// Every VM entry and the index by identity.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    /// Boxed: a B-tree node holds eleven values and is about half full when ids grow.
    pub(crate) vms: BTreeMap<VmId, Box<VmEntry>>,
    /// The key is shared with the entry's. Flagged entries are not indexed.
    pub(crate) by_key: HashMap<Arc<VmKey>, VmId>,
    next_vm: u64,
}

impl Registry {
    pub(crate) fn get(&self, vm: VmId) -> Option<&VmEntry> {
        self.vms.get(&vm).map(|e| &**e)
    }

    pub(crate) fn get_mut(&mut self, vm: VmId) -> Option<&mut VmEntry> {
        self.vms.get_mut(&vm).map(|e| &mut **e)
    }

    pub(crate) fn find(&self, key: &VmKey) -> Option<VmId> {
        self.by_key.get(key).copied()
    }

    pub(crate) fn insert(
        &mut self,
        conn: SessionId,
        key: VmKey,
        name: String,
        flagged: Option<String>,
    ) -> VmId {
        self.next_vm += 1;
        let id = VmId(self.next_vm);
        let key = Arc::new(key);
        if flagged.is_none() {
            self.by_key.insert(key.clone(), id);
        }
        self.vms.insert(
            id,
            Box::new(VmEntry {
                id,
                key,
                name,
                flagged,
                active: Some(conn),
                state: VmState::Connected,
                away_since: None,
                connections: 1,
                clients: Vec::new(),
                exclusive: None,
                scrollback: VecDeque::new(),
                bytes_from_vm: 0,
                bytes_to_vm: 0,
                history: None,
                serial: None,
            }),
        );
        id
    }

    pub(crate) fn remove(&mut self, vm: VmId) -> Option<Box<VmEntry>> {
        let entry = self.vms.remove(&vm)?;
        if self.by_key.get(&entry.key) == Some(&vm) {
            self.by_key.remove(&entry.key);
        }
        Some(entry)
    }

    /// Resolves a selector: an entry number, a UUID (canonical, compact or vmx form), or a
    /// name, each optionally followed by `/label`. Flagged entries are reachable by name
    /// only when no unflagged one matches (and always by number).
    pub(crate) fn resolve(&self, selector: &str) -> Result<VmId, AttachError> {
        if let Ok(n) = selector.parse::<u64>() {
            return self
                .vms
                .contains_key(&VmId(n))
                .then_some(VmId(n))
                .ok_or(AttachError::NoSuchNumber(n));
        }
        let (who, label) = match selector.split_once('/') {
            Some((who, label)) if !who.contains(':') => (who, Some(label)),
            _ => (selector, None),
        };
        let wanted = compact_hex(who);
        let matches: Vec<&VmEntry> = self
            .vms
            .values()
            .map(|e| &**e)
            .filter(|e| {
                e.name == who
                    || (wanted.len() == 32 && compact_hex(e.key.uuid()) == wanted)
                    || e.key.uuid().eq_ignore_ascii_case(who)
            })
            .filter(|e| label.is_none_or(|l| e.label() == l || e.key.service_uri() == l))
            .collect();
        let trusted: Vec<&&VmEntry> = matches.iter().filter(|e| e.flagged.is_none()).collect();
        match (trusted.as_slice(), matches.as_slice()) {
            ([one], _) => Ok(one.id),
            ([], [one]) => Ok(one.id),
            ([], []) => Err(AttachError::NoMatch(selector.to_owned())),
            _ => Err(AttachError::Ambiguous {
                selector: selector.to_owned(),
                choices: matches
                    .iter()
                    .map(|e| format!("#{} ({})", e.id.0, printable(e.label())))
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    /// The selection menu: a screenful of the VM ports `shown` admits, fitting 80 columns.
    pub(crate) fn menu(&self, rows: usize, shown: impl Fn(&VmEntry) -> bool) -> String {
        let count = self.vms.values().filter(|e| shown(e)).count();
        let mut text = format!(
            "\r\nvspc: {} VM port(s)\r\n  # {:<24} {:<36} {:<6} clients\r\n",
            count, "name/label", "VC UUID", "state"
        );
        for entry in self.vms.values().filter(|e| shown(e)).take(rows) {
            let state = match entry.state {
                VmState::Connected => "up",
                VmState::Migrating => "moving",
                VmState::Disconnected => "away",
            };
            let name = format!("{}/{}", printable(&entry.name), printable(entry.label()));
            text.push_str(&format!(
                "{:>3} {:<24.24} {:<36} {:<6} {}{}\r\n",
                entry.id.0,
                name,
                printable(entry.key.uuid()),
                state,
                entry.clients.len(),
                if entry.flagged.is_some() {
                    "  [FLAGGED: duplicate identity]"
                } else {
                    ""
                }
            ));
        }
        if count > rows {
            text.push_str(&format!(
                "... and {} more (the admin listing has them all)\r\n",
                count - rows
            ));
        }
        text.push_str("select by number, name[/label] or UUID, then optionally ro or excl: ");
        text
    }
}

/// A VC UUID's hex digits, lowercase, without separators: the form in which the canonical
/// (`564d...-...`), compact and vmx (`56 4d ...`) spellings of one UUID compare equal.
pub fn compact_hex(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_hexdigit())
        .collect::<String>()
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(label_of("vSPC.py?port=console"), "console");
        assert_eq!(label_of("vSPC.py?a=b&port=com2"), "com2");
        assert_eq!(label_of("tcp://10.0.0.5:2377"), "tcp://10.0.0.5:2377");
    }

    #[test]
    fn control_characters_are_shown_escaped() {
        assert_eq!(printable("web-1"), "web-1");
        assert_eq!(
            printable("a\x1b]0;pwned\x07b\nc"),
            "a\\x1b]0;pwned\\x07b\\x0ac"
        );
        assert_eq!(printable("\u{9b}2J"), "\\x9b2J");
    }

    #[test]
    fn keys_split_where_they_were_joined() {
        let key = VmKey::new("abc", "def");
        assert_eq!((key.uuid(), key.service_uri()), ("abc", "def"));
        assert_ne!(VmKey::new("ab", "cdef"), key);
    }
}
