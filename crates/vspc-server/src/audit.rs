//! The audit trail: one line per client event (SSH connect, authentication with the key's
//! fingerprint, attach with its mode, kick, break, detach with the bytes each way), to a
//! file when one is configured and always to tracing (target `vspc::audit`).
//!
//! A line is `TIME EVENT key=value ...`, the time in UTC (RFC 3339, milliseconds). Values
//! that hold spaces, quotes or `=` are double-quoted; control characters (a VM's name, a
//! key's comment, an SSH user name are chosen by others) are shown as `\xNN`, so no field
//! can forge or split a line.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use vspc_concentrator::printable;

/// Where audit lines go.
#[derive(Debug)]
pub(crate) struct Audit {
    file: Option<(PathBuf, Mutex<Option<File>>)>,
}

impl Audit {
    /// Tracing only.
    pub(crate) fn none() -> Audit {
        Audit { file: None }
    }

    /// Appends to `path` (created 0600 if missing) as well as tracing.
    pub(crate) fn open(path: &Path) -> std::io::Result<Audit> {
        let file = open_append(path)?;
        Ok(Audit {
            file: Some((path.to_owned(), Mutex::new(Some(file)))),
        })
    }

    /// Reopens the file (after rotation; SIGHUP). A failure is logged and retried on the
    /// next reopen; lines meanwhile go to tracing only.
    pub(crate) fn reopen(&self) {
        if let Some((path, file)) = &self.file {
            let reopened = open_append(path)
                .map_err(|error| tracing::warn!(path = %path.display(), %error, "cannot reopen the audit log"))
                .ok();
            *file.lock().unwrap_or_else(|e| e.into_inner()) = reopened;
        }
    }

    /// Records one event with its fields.
    pub(crate) fn record(&self, event: &str, fields: &[(&str, &dyn std::fmt::Display)]) {
        let line = format_line(SystemTime::now(), event, fields);
        tracing::info!(target: "vspc::audit", "{line}");
        if let Some((path, file)) = &self.file {
            let mut file = file.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(f) = file.as_mut() {
                // One write per line on an O_APPEND file: lines never interleave.
                if let Err(error) = f.write_all(format!("{line}\n").as_bytes()) {
                    tracing::warn!(path = %path.display(), %error, "cannot write the audit log");
                }
            }
        }
    }
}

fn open_append(path: &Path) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// `TIME EVENT key=value ...`.
fn format_line(at: SystemTime, event: &str, fields: &[(&str, &dyn std::fmt::Display)]) -> String {
    let mut line = rfc3339(at);
    line.push(' ');
    line.push_str(event);
    for (key, value) in fields {
        let _ = write!(line, " {key}={}", quoted(&value.to_string()));
    }
    line
}

/// The value as one token: control characters escaped, quoted when it holds a space, a
/// quote, a backslash or `=`, or is empty.
fn quoted(value: &str) -> String {
    let shown = printable(value);
    let plain = !shown.is_empty()
        && !shown
            .chars()
            .any(|c| c.is_whitespace() || c == '"' || c == '=' || c == '\\');
    if plain {
        return shown.into_owned();
    }
    let mut out = String::with_capacity(shown.len() + 2);
    out.push('"');
    for c in shown.chars() {
        if c == '"' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// UTC, RFC 3339 with milliseconds (civil date from days: Howard Hinnant's algorithm).
fn rfc3339(at: SystemTime) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        since.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn lines_are_one_token_per_field_whatever_the_values_hold() {
        let at = UNIX_EPOCH + Duration::from_millis(1_764_556_200_123);
        let name = "web 1\n2026-01-01T00:00:00Z auth-ok user=\"root\"";
        let line = format_line(
            at,
            "attach",
            &[("vm", &name), ("mode", &"rw"), ("empty", &"")],
        );
        assert_eq!(
            line,
            "2025-12-01T02:30:00.123Z attach vm=\"web 1\\x0a2026-01-01T00:00:00Z auth-ok user=\\\"root\\\"\" mode=rw empty=\"\""
        );
        assert!(!line.contains('\n'));
    }

    #[test]
    fn dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn the_file_gets_one_line_per_event_and_survives_a_rotation() {
        let dir = std::env::temp_dir().join(format!("vspc-audit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit.log");
        let audit = Audit::open(&path).unwrap();
        audit.record("connect", &[("peer", &"127.0.0.1:1")]);
        std::fs::rename(&path, dir.join("audit.log.1")).unwrap();
        audit.reopen();
        audit.record("detach", &[("bytes_in", &5)]);
        let old = std::fs::read_to_string(dir.join("audit.log.1")).unwrap();
        let new = std::fs::read_to_string(&path).unwrap();
        assert!(old.ends_with(" connect peer=127.0.0.1:1\n"), "{old:?}");
        assert!(new.ends_with(" detach bytes_in=5\n"), "{new:?}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
