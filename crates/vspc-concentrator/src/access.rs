//! Who an authenticated client is and which VMs it may attach to, in which modes: the
//! policy behind SSH keys (or any other authenticated transport), decided here so that
//! every driver enforces the same rules.
//!
//! A [`User`] carries [`Grant`]s; each grant names VMs by a glob pattern and the
//! [`Rights`] it gives on them. A grant is written `PATTERN:RIGHTS`, for example
//! `web-*:ro,rw,excl,kick` or `db-1/console:ro`; see [`Grant::parse`].

use std::fmt;

use crate::types::Mode;

/// What a grant allows: the attach modes, and taking the write lock from others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rights {
    /// Attach read-only.
    pub read_only: bool,
    /// Attach read-write.
    pub read_write: bool,
    /// Attach exclusively.
    pub exclusive: bool,
    /// Take the write lock from the clients that hold it (they become read-only and are
    /// told by whom).
    pub kick: bool,
}

impl Rights {
    /// Every right.
    pub const ALL: Rights = Rights {
        read_only: true,
        read_write: true,
        exclusive: true,
        kick: true,
    };

    /// Whether the rights include `mode`.
    pub fn allows(self, mode: Mode) -> bool {
        match mode {
            Mode::ReadOnly => self.read_only,
            Mode::ReadWrite => self.read_write,
            Mode::Exclusive => self.exclusive,
        }
    }

    fn union(self, other: Rights) -> Rights {
        Rights {
            read_only: self.read_only || other.read_only,
            read_write: self.read_write || other.read_write,
            exclusive: self.exclusive || other.exclusive,
            kick: self.kick || other.kick,
        }
    }

    /// Parses `ro,rw,excl,kick` (any subset, comma-separated; `all` for every right).
    pub fn parse(text: &str) -> Result<Rights, GrantError> {
        let mut rights = Rights::default();
        for word in text.split(',').map(str::trim) {
            match word.to_ascii_lowercase().as_str() {
                "all" => rights = Rights::ALL,
                "kick" => rights.kick = true,
                other => match Mode::parse(other) {
                    Some(Mode::ReadOnly) => rights.read_only = true,
                    Some(Mode::ReadWrite) => rights.read_write = true,
                    Some(Mode::Exclusive) => rights.exclusive = true,
                    None => return Err(GrantError::UnknownRight(word.to_owned())),
                },
            }
        }
        Ok(rights)
    }
}

impl fmt::Display for Rights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let words = [
            (self.read_only, "ro"),
            (self.read_write, "rw"),
            (self.exclusive, "excl"),
            (self.kick, "kick"),
        ];
        let words: Vec<&str> = words.iter().filter(|w| w.0).map(|w| w.1).collect();
        f.write_str(&words.join(","))
    }
}

/// Why a grant did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GrantError {
    /// No `:` between the pattern and the rights.
    #[error("a grant is PATTERN:RIGHTS (for example web-*:ro,rw), got {0:?}")]
    Syntax(String),
    /// A right that is not `ro`, `rw`, `excl`, `kick` or `all`.
    #[error("unknown right {0:?} (ro, rw, excl, kick or all)")]
    UnknownRight(String),
}

/// VMs (by pattern) and what may be done with them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// A glob (`*` any run, `?` one character) matched against the VM's name, its
    /// `name/label`, and its VC UUID (canonical text).
    pub pattern: String,
    /// The rights on the VMs it matches.
    pub rights: Rights,
}

impl Grant {
    /// Parses `PATTERN:RIGHTS`, splitting at the last `:` (a pattern may hold `:`).
    pub fn parse(text: &str) -> Result<Grant, GrantError> {
        let (pattern, rights) = text
            .rsplit_once(':')
            .filter(|(p, _)| !p.trim().is_empty())
            .ok_or_else(|| GrantError::Syntax(text.to_owned()))?;
        Ok(Grant {
            pattern: pattern.trim().to_owned(),
            rights: Rights::parse(rights)?,
        })
    }

    fn matches(&self, vm: &VmNames<'_>) -> bool {
        glob(&self.pattern, vm.name)
            || glob(&self.pattern, &format!("{}/{}", vm.name, vm.label))
            || glob(&self.pattern, vm.uuid)
    }
}

/// The names a grant's pattern is matched against.
#[derive(Debug, Clone, Copy)]
pub(crate) struct VmNames<'a> {
    pub(crate) name: &'a str,
    pub(crate) label: &'a str,
    pub(crate) uuid: &'a str,
}

/// An authenticated client: its name (shown to others, in the audit trail and the admin
/// listing) and its grants. A client without a `User` (telnet) is not restricted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Who (for SSH: the key's comment, else its fingerprint).
    pub name: String,
    /// What it may attach to.
    pub grants: Vec<Grant>,
}

impl User {
    /// The union of the rights of every grant matching the VM.
    pub(crate) fn rights(&self, vm: &VmNames<'_>) -> Rights {
        self.grants
            .iter()
            .filter(|g| g.matches(vm))
            .fold(Rights::default(), |acc, g| acc.union(g.rights))
    }
}

/// Glob match: `*` matches any run (empty included), `?` one character, anything else
/// itself. Iterative with one backtrack point, so it is linear-ish and never recurses.
pub(crate) fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == '?' || c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names<'a>(name: &'a str, label: &'a str) -> VmNames<'a> {
        VmNames {
            name,
            label,
            uuid: "01 23 45 67 89 ab cd ef-fe dc ba 98 00 00 00 00",
        }
    }

    #[test]
    fn globs() {
        assert!(glob("web-*", "web-1"));
        assert!(glob("*", ""));
        assert!(glob("w?b-*1", "web-11"));
        assert!(!glob("web-?", "web-10"));
        assert!(!glob("web", "web-1"));
        assert!(glob("*-*-*", "a-b-c"));
        assert!(!glob("a*b", "acbc"));
    }

    #[test]
    fn grants_parse_and_match() {
        let grant = Grant::parse("web-*:ro,rw").unwrap();
        assert_eq!(
            grant.rights,
            Rights {
                read_only: true,
                read_write: true,
                ..Rights::default()
            }
        );
        assert_eq!(grant.rights.to_string(), "ro,rw");
        assert!(grant.matches(&names("web-1", "console")));
        assert!(!grant.matches(&names("db-1", "console")));
        let by_label = Grant::parse("db-1/com2:all").unwrap();
        assert!(by_label.matches(&names("db-1", "com2")));
        assert!(!by_label.matches(&names("db-1", "console")));
        let by_uuid = Grant::parse("01 23 45 67*:ro").unwrap();
        assert!(by_uuid.matches(&names("x", "y")));
        assert_eq!(
            Grant::parse("web-1"),
            Err(GrantError::Syntax("web-1".into()))
        );
        assert_eq!(Grant::parse(":ro"), Err(GrantError::Syntax(":ro".into())));
        assert_eq!(
            Grant::parse("web:ro,root"),
            Err(GrantError::UnknownRight("root".into()))
        );
    }

    #[test]
    fn rights_add_up_over_grants() {
        let user = User {
            name: "alice".into(),
            grants: vec![
                Grant::parse("*:ro").unwrap(),
                Grant::parse("web-*:rw,kick").unwrap(),
            ],
        };
        let web = user.rights(&names("web-1", "c"));
        assert!(web.allows(Mode::ReadOnly) && web.allows(Mode::ReadWrite) && web.kick);
        assert!(!web.allows(Mode::Exclusive));
        let db = user.rights(&names("db", "c"));
        assert_eq!(
            db,
            Rights {
                read_only: true,
                ..Rights::default()
            }
        );
    }
}
