//! The users: an OpenSSH `authorized_keys` file read with the ssh-key crate's parser, each
//! key's `console="PATTERN:RIGHTS"` options being its grants.
//!
//! ```text
//! # alice may watch everything, and use the web servers' consoles
//! console="*:ro",console="web-*:rw,excl" ssh-ed25519 AAAAC3Nza... alice@laptop
//! # the on-call key may also take the write lock from whoever holds it
//! console="*:all" ssh-ed25519 AAAAC3Nza... oncall
//! ```
//!
//! A key's name (in messages to other users, the audit trail and the admin listing) is its
//! comment, or its SHA-256 fingerprint when it has none. A key without a `console` option
//! authenticates but may attach to nothing. Options that restrict where or how a key is
//! used (`from=`, `command=`, `expiry-time=`...) are refused, so a file written for sshd
//! never grants more here than it meant there; `no-pty`-style flags and `restrict` are
//! accepted and mean nothing here.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use russh::keys::ssh_key::authorized_keys::ConfigOpts;
use russh::keys::{Algorithm, HashAlg, PublicKey};
use vspc_concentrator::{Grant, User};

use super::SshError;

/// Flags sshd knows that restrict nothing we offer (we never forward, run commands or
/// allocate a real pty).
const HARMLESS: &[&str] = &[
    "restrict",
    "no-pty",
    "no-port-forwarding",
    "no-agent-forwarding",
    "no-x11-forwarding",
    "no-user-rc",
    "pty",
];

/// The authorized keys, by SHA-256 fingerprint.
#[derive(Debug, Default)]
pub(crate) struct KeySet {
    by_fingerprint: HashMap<String, Arc<User>>,
}

impl KeySet {
    /// Reads and parses the file.
    pub(crate) fn load(path: &Path) -> Result<KeySet, SshError> {
        let text = std::fs::read_to_string(path).map_err(|source| SshError::Read {
            path: path.to_owned(),
            source,
        })?;
        KeySet::parse(&text).map_err(|(line, reason)| SshError::AuthorizedKeys {
            path: path.to_owned(),
            line,
            reason,
        })
    }

    /// Parses `authorized_keys` text; an error names its line (from 1) and why.
    pub(crate) fn parse(text: &str) -> Result<KeySet, (usize, String)> {
        let mut keys = KeySet::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (options, key) = parse_line(line).map_err(|e| (n + 1, e))?;
            let mut grants = Vec::new();
            for option in options.iter() {
                let (name, value) = match option.split_once('=') {
                    Some((name, value)) => (name, Some(value)),
                    None => (option, None),
                };
                match (name.to_ascii_lowercase().as_str(), value) {
                    ("console", Some(value)) => {
                        let value = value
                            .strip_prefix('"')
                            .and_then(|v| v.strip_suffix('"'))
                            .unwrap_or(value);
                        let grant = Grant::parse(value).map_err(|e| (n + 1, e.to_string()))?;
                        grants.push(grant);
                    }
                    (flag, None) if HARMLESS.contains(&flag) => {}
                    _ => {
                        return Err((
                            n + 1,
                            format!(
                                "unsupported option {name:?} (console=\"PATTERN:RIGHTS\" grants; \
                                 options that restrict a key elsewhere are refused rather than ignored)"
                            ),
                        ))
                    }
                }
            }
            let fingerprint = fingerprint(&key);
            let comment = key.comment().as_str_lossy().trim();
            let name = if comment.is_empty() {
                fingerprint.clone()
            } else {
                comment.to_owned()
            };
            keys.by_fingerprint
                .insert(fingerprint, Arc::new(User { name, grants }));
        }
        Ok(keys)
    }

    /// The user whose key this is.
    pub(crate) fn user(&self, key: &PublicKey) -> Option<Arc<User>> {
        self.by_fingerprint.get(&fingerprint(key)).cloned()
    }

    /// How many keys.
    pub(crate) fn len(&self) -> usize {
        self.by_fingerprint.len()
    }
}

/// One line: its options (empty when it starts with the key's algorithm, as sshd reads
/// it) and its key. The crate's `Entry` parser takes a line of options and a key without a
/// comment for a key, hence the split here.
fn parse_line(line: &str) -> Result<(ConfigOpts, PublicKey), String> {
    let first = line.split_whitespace().next().unwrap_or_default();
    let (options, key) = if first.parse::<Algorithm>().is_ok() {
        (ConfigOpts::default(), line)
    } else {
        let (options, key) = line
            .split_once(char::is_whitespace)
            .ok_or_else(|| "no key after the options".to_owned())?;
        let options = ConfigOpts::new(options).map_err(|e| format!("options: {e}"))?;
        (options, key.trim_start())
    };
    let key = PublicKey::from_openssh(key).map_err(|e| format!("key: {e}"))?;
    Ok((options, key))
}

/// `SHA256:...`, as `ssh-keygen -l` shows it.
pub(crate) fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use vspc_concentrator::Rights;

    const ALICE: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIAx//nTru1oiu+s03uPf7Xa3A6RVgfU4OaL7R5nFyTdl";
    const BOB: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIEP8fOBXWaXea1mgR7l45zdn9QdWeCKcvW9GGqnb3hR3";

    fn key(base64: &str) -> PublicKey {
        PublicKey::from_openssh(&format!("ssh-ed25519 {base64}")).unwrap()
    }

    #[test]
    fn grants_come_from_console_options_and_names_from_comments() {
        let text = format!(
            "# users\n\nconsole=\"*:ro\",console=\"web-*:rw,excl\" ssh-ed25519 {ALICE} alice@laptop\nno-pty ssh-ed25519 {BOB}\n"
        );
        let keys = KeySet::parse(&text).unwrap();
        assert_eq!(keys.len(), 2);
        let alice = keys.user(&key(ALICE)).unwrap();
        assert_eq!(alice.name, "alice@laptop");
        assert_eq!(alice.grants.len(), 2);
        assert_eq!(alice.grants[1].pattern, "web-*");
        assert_eq!(
            alice.grants[1].rights,
            Rights {
                read_write: true,
                exclusive: true,
                ..Rights::default()
            }
        );
        let bob = keys.user(&key(BOB)).unwrap();
        assert!(bob.grants.is_empty());
        assert!(bob.name.starts_with("SHA256:"), "{}", bob.name);
    }

    #[test]
    fn bad_lines_are_named() {
        let bad_right = format!("\nconsole=\"web:root\" ssh-ed25519 {ALICE}\n");
        let (line, reason) = KeySet::parse(&bad_right).unwrap_err();
        assert_eq!(line, 2);
        assert!(reason.contains("unknown right \"root\""), "{reason}");
        let restricted = format!("from=\"10.0.0.0/8\" ssh-ed25519 {ALICE}\n");
        let (line, reason) = KeySet::parse(&restricted).unwrap_err();
        assert_eq!(line, 1);
        assert!(reason.contains("unsupported option \"from\""), "{reason}");
        let (line, _) = KeySet::parse("ssh-ed25519 not-base64\n").unwrap_err();
        assert_eq!(line, 1);
    }
}
