//! Console logs: one file per VM port, appended, reopened on request (SIGHUP).
//!
//! Writes go through a `BufWriter` into the page cache while the hub's lock is held: that is a
//! memory copy, never a wait on the disk, so it cannot stall the VM path the way an unbounded
//! queue to a log task could lose bytes under pressure. The timer flushes once a second, and
//! reopen and shutdown flush before they return.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// One VM port's console log.
#[derive(Debug)]
pub(crate) struct ConsoleLog {
    path: PathBuf,
    file: Option<BufWriter<File>>,
    /// Whether the last open or write failed (logged once, retried on the next write).
    failing: bool,
    bytes: u64,
}

impl ConsoleLog {
    pub(crate) fn new(path: PathBuf) -> Self {
        ConsoleLog {
            path,
            file: None,
            failing: false,
            bytes: 0,
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    fn open(&mut self) -> std::io::Result<&mut BufWriter<File>> {
        if self.file.is_none() {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            self.file = Some(BufWriter::with_capacity(64 * 1024, file));
        }
        match self.file.as_mut() {
            Some(file) => Ok(file),
            None => Err(std::io::Error::other("log file not open")),
        }
    }

    /// Appends VM output. A failing disk loses log bytes (reported once), never VM data.
    pub(crate) fn write(&mut self, bytes: &[u8]) {
        let result = self.open().and_then(|file| file.write_all(bytes));
        match result {
            Ok(()) => {
                self.bytes += bytes.len() as u64;
                if self.failing {
                    tracing::info!(path = %self.path.display(), "console log writable again");
                    self.failing = false;
                }
            }
            Err(error) => {
                if !self.failing {
                    tracing::warn!(path = %self.path.display(), %error, "console log write failed");
                    self.failing = true;
                }
                self.file = None;
            }
        }
    }

    pub(crate) fn flush(&mut self) {
        if let Some(file) = self.file.as_mut() {
            if let Err(error) = file.flush() {
                tracing::warn!(path = %self.path.display(), %error, "console log flush failed");
                self.file = None;
            }
        }
    }

    /// Flushes and closes; the next write opens the path again (after log rotation, a new
    /// file).
    pub(crate) fn reopen(&mut self) {
        self.flush();
        self.file = None;
    }
}

impl Drop for ConsoleLog {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Makes a string safe as one path component: only `[A-Za-z0-9._-]` survive.
pub fn sanitize(text: &str) -> String {
    let cleaned: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(96)
        .collect();
    match cleaned.trim_start_matches('.') {
        "" => "_".to_owned(),
        rest => rest.to_owned(),
    }
}

/// Renders a console log's file name scheme: `{name}`, `{uuid}`, `{label}` and `{id}` are
/// replaced, each made safe as part of one path component.
pub fn file_name(scheme: &str, name: &str, uuid: &str, label: &str, id: u64) -> String {
    scheme
        .replace("{name}", &sanitize(name))
        .replace("{uuid}", &sanitize(uuid))
        .replace("{label}", &sanitize(label))
        .replace("{id}", &id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_single_safe_components() {
        assert_eq!(
            file_name("{name}_{label}.log", "../etc/passwd", "u", "tcp://x:1", 3),
            "_etc_passwd_tcp___x_1.log"
        );
        assert_eq!(sanitize(""), "_");
    }
}
