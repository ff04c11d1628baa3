//! The `.vmx` view of a serial port (docs/uri-backing.md, "The .vmx view"): `serialN.*` lines,
//! both ways.
//!
//! | API | `.vmx` key |
//! |---|---|
//! | port present | `serialN.present = "TRUE"` |
//! | `connectable.startConnected` | `serialN.startConnected` (default true) |
//! | backing type | `serialN.fileType`: `network`, `file`, `device`, `pipe`, `thinprint` |
//! | `serviceURI` / `fileName` / `deviceName` / `pipeName` | `serialN.fileName` |
//! | `direction` | `serialN.network.endPoint` (`server` default, or `client`) |
//! | `proxyURI` | `serialN.vspc` |
//! | device `useAutoDetect` | `serialN.autodetect` |
//! | pipe `endpoint` | `serialN.pipe.endPoint` |
//! | pipe `noRxLoss` | `serialN.tryNoRxLoss` |
//! | `yieldOnPoll` | `serialN.yieldOnMsrRead` |
//! | keepalive | `serialN.keepIdle`, `serialN.vmotionLimit` |
//!
//! Keys are read case-insensitively (as VMware does); values are written in double quotes
//! with `"`, `|` and control characters escaped as `|XX` (upper-case hex), the `.vmx`
//! convention, and read back the same way. What `.vmx` does not hold (the device key, the
//! runtime `connected` state, `allowGuestControl`, `status`, controller and unit) is not
//! written; a parsed port gets the key [`VMX_KEY_BASE`] + N, `connected` and
//! `allowGuestControl` false.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::keepalive::{KeepIdle, PortIndex, VmotionLimit};
use crate::model::{
    DeviceBackingInfo, FileBackingInfo, PipeBackingInfo, SerialBacking, ThinPrintBackingInfo,
    UriBackingInfo, VirtualDeviceConnectInfo, VirtualSerialPort,
};

/// The device key ESXi gives serial port N is `9000 + N`; parsed ports get that key.
pub const VMX_KEY_BASE: i32 = 9000;

/// Why `.vmx` text could not be read or a port could not be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VmxError {
    /// A line that is neither blank, a comment, nor `key = "value"`.
    #[error("line {line} {text:?}: expected key = \"value\"")]
    MalformedLine {
        /// The line number, from 1.
        line: usize,
        /// The line.
        text: String,
    },
    /// A `serialN.` key with N above 31.
    #[error("line {line} {key:?}: serial port index out of range (0 to 31)")]
    IndexOutOfRange {
        /// The line number, from 1.
        line: usize,
        /// The key.
        key: String,
    },
    /// A value the key cannot take.
    #[error("{key} = {value:?}: expected {expected}")]
    InvalidValue {
        /// The key.
        key: String,
        /// The value, unescaped.
        value: String,
        /// What was expected.
        expected: &'static str,
    },
    /// A backing type with no `.vmx` form (an unknown backing read from JSON).
    #[error("serial{index}: backing type {type_name} has no .vmx form")]
    UnsupportedBacking {
        /// The port index.
        index: PortIndex,
        /// The backing's WSDL type name.
        type_name: String,
    },
    /// An extra key that repeats a key already written for the port, is empty, or contains
    /// `=`, whitespace or a control character.
    #[error(
        "serial{index}: extra key {suffix:?} must not repeat a key of the port, be empty, \
         or contain '=', whitespace or control characters"
    )]
    InvalidExtraKey {
        /// The port index.
        index: PortIndex,
        /// The key suffix.
        suffix: String,
    },
}

/// A serial port as `.vmx` describes it.
///
/// ```
/// use vspc_backing::{parse_vmx, Direction, KeepIdle, PortIndex, UriBackingInfo, VirtualSerialPort, VmxSerialPort};
///
/// let mut port = VirtualSerialPort::new(9000, UriBackingInfo::new("telnet://:2000", Direction::Server));
/// let mut vmx = VmxSerialPort::new(PortIndex::default(), port);
/// vmx.keep_idle = Some(KeepIdle::DEFAULT);
/// let text = vmx.render()?;
/// assert!(text.contains("serial0.fileName = \"telnet://:2000\"\n"));
/// let back = parse_vmx(&text)?;
/// assert_eq!(back[0].render()?, text);
/// # Ok::<(), vspc_backing::VmxError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VmxSerialPort {
    /// N, the index among the VM's serial ports.
    pub index: PortIndex,
    /// The port.
    pub port: VirtualSerialPort,
    /// `serialN.keepIdle`.
    pub keep_idle: Option<KeepIdle>,
    /// `serialN.vmotionLimit`.
    pub vmotion_limit: Option<VmotionLimit>,
    /// Other `serialN.*` entries, as (suffix after `serialN.`, value), in the order read;
    /// written after the modelled keys.
    pub other: Vec<(String, String)>,
}

const PRESENT: &str = "present";
const START_CONNECTED: &str = "startConnected";
const FILE_TYPE: &str = "fileType";
const FILE_NAME: &str = "fileName";
const NETWORK_END_POINT: &str = "network.endPoint";
const VSPC: &str = "vspc";
const PIPE_END_POINT: &str = "pipe.endPoint";
const TRY_NO_RX_LOSS: &str = "tryNoRxLoss";
const AUTODETECT: &str = "autodetect";
const YIELD_ON_MSR_READ: &str = "yieldOnMsrRead";

const fn bool_text(b: bool) -> &'static str {
    if b {
        "TRUE"
    } else {
        "FALSE"
    }
}

impl VmxSerialPort {
    /// Port N, no advanced options.
    pub const fn new(index: PortIndex, port: VirtualSerialPort) -> VmxSerialPort {
        VmxSerialPort {
            index,
            port,
            keep_idle: None,
            vmotion_limit: None,
            other: Vec::new(),
        }
    }

    /// The `(key, value)` entries, in a fixed order, values unescaped.
    pub fn entries(&self) -> Result<Vec<(String, String)>, VmxError> {
        let n = self.index;
        let mut out: Vec<(String, String)> = Vec::new();
        let mut push = |suffix: &str, value: &str| out.push((suffix.to_owned(), value.to_owned()));
        push(PRESENT, "TRUE");
        let start_connected = self
            .port
            .connectable
            .as_ref()
            .is_none_or(|c| c.start_connected);
        push(START_CONNECTED, bool_text(start_connected));
        match &self.port.backing {
            None => {}
            Some(SerialBacking::Uri(b)) => {
                push(FILE_TYPE, "network");
                push(FILE_NAME, &b.service_uri);
                push(NETWORK_END_POINT, &b.direction);
                if let Some(proxy) = &b.proxy_uri {
                    push(VSPC, proxy);
                }
            }
            Some(SerialBacking::File(b)) => {
                push(FILE_TYPE, "file");
                push(FILE_NAME, &b.file_name);
            }
            Some(SerialBacking::Device(b)) => {
                push(FILE_TYPE, "device");
                push(FILE_NAME, &b.device_name);
                if let Some(auto) = b.use_auto_detect {
                    push(AUTODETECT, bool_text(auto));
                }
            }
            Some(SerialBacking::Pipe(b)) => {
                push(FILE_TYPE, "pipe");
                push(FILE_NAME, &b.pipe_name);
                if !b.endpoint.is_empty() {
                    push(PIPE_END_POINT, &b.endpoint);
                }
                if let Some(no_loss) = b.no_rx_loss {
                    push(TRY_NO_RX_LOSS, bool_text(no_loss));
                }
            }
            Some(SerialBacking::ThinPrint(_)) => push(FILE_TYPE, "thinprint"),
            Some(other) => {
                return Err(VmxError::UnsupportedBacking {
                    index: n,
                    type_name: other.type_name().to_owned(),
                })
            }
        }
        push(YIELD_ON_MSR_READ, bool_text(self.port.yield_on_poll));
        if let Some(k) = self.keep_idle {
            push(KeepIdle::SUFFIX, &k.to_string());
        }
        if let Some(v) = self.vmotion_limit {
            push(VmotionLimit::SUFFIX, &v.to_string());
        }
        for (suffix, value) in &self.other {
            let bad = suffix.is_empty()
                || suffix.contains(|c: char| c == '=' || c.is_whitespace() || c.is_control())
                || out.iter().any(|(s, _)| s.eq_ignore_ascii_case(suffix));
            if bad {
                return Err(VmxError::InvalidExtraKey {
                    index: n,
                    suffix: suffix.clone(),
                });
            }
            out.push((suffix.clone(), value.clone()));
        }
        Ok(out
            .into_iter()
            .map(|(suffix, value)| (n.option_name(&suffix), value))
            .collect())
    }

    /// The `.vmx` lines, each `key = "value"` and ending in `\n`.
    pub fn render(&self) -> Result<String, VmxError> {
        let mut text = String::new();
        for (key, value) in self.entries()? {
            let _ = writeln!(text, "{key} = \"{}\"", escape(&value));
        }
        Ok(text)
    }
}

/// Escapes a value for `.vmx`: `"`, `|` and control characters become `|XX`.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if c == '"' || c == '|' || c.is_ascii_control() {
            let _ = write!(out, "|{:02X}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
}

/// Reverses [`escape`]; a `|` not followed by two hex digits is kept as is.
fn unescape(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'|' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .filter(|h| h.bytes().all(|c| c.is_ascii_hexdigit()))
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(decoded) = hex {
                out.push(decoded);
                i += 3;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Splits `key = value` (value optionally quoted); `None` when malformed.
fn split_line(line: &str) -> Option<(&str, String)> {
    let (key, value) = line.split_once('=')?;
    let key = key.trim();
    if key.is_empty() || key.contains(char::is_whitespace) {
        return None;
    }
    let value = value.trim();
    let raw = match value.strip_prefix('"') {
        Some(rest) => {
            let (inner, after) = rest.split_once('"')?;
            if !after.trim().is_empty() {
                return None;
            }
            inner
        }
        None => value,
    };
    Some((key, unescape(raw)))
}

/// Splits `serialN.suffix` into N and the suffix; `None` for other keys.
fn split_serial_key(key: &str) -> Option<(&str, &str)> {
    let prefix = key.get(..6)?;
    if !prefix.eq_ignore_ascii_case("serial") {
        return None;
    }
    let rest = key.get(6..)?;
    let (n, suffix) = rest.split_once('.')?;
    (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && !suffix.is_empty())
        .then_some((n, suffix))
}

fn parse_bool(key: &str, value: &str) -> Result<bool, VmxError> {
    if value.eq_ignore_ascii_case("true") {
        Ok(true)
    } else if value.eq_ignore_ascii_case("false") {
        Ok(false)
    } else {
        Err(VmxError::InvalidValue {
            key: key.to_owned(),
            value: value.to_owned(),
            expected: "TRUE or FALSE",
        })
    }
}

/// The entries of one port: (suffix as written, value, full key as written).
struct Entries(Vec<(String, String, String)>);

impl Entries {
    /// Removes the entry with this suffix (case-insensitive; there is at most one),
    /// returning (full key, value).
    fn take(&mut self, suffix: &str) -> Option<(String, String)> {
        let pos = self
            .0
            .iter()
            .position(|(s, _, _)| s.eq_ignore_ascii_case(suffix))?;
        let (_, value, key) = self.0.remove(pos);
        Some((key, value))
    }

    fn take_bool(&mut self, suffix: &str) -> Result<Option<bool>, VmxError> {
        self.take(suffix)
            .map(|(k, v)| parse_bool(&k, &v))
            .transpose()
    }

    fn take_value(&mut self, suffix: &str) -> Option<String> {
        self.take(suffix).map(|(_, v)| v)
    }
}

/// Reads the serial ports of `.vmx` text: every `serialN` whose `present` is `TRUE`, by
/// index. Other keys are ignored; unmodelled `serialN.*` keys land in
/// [`VmxSerialPort::other`]. When a key repeats (keys are case-insensitive), the last one
/// wins. Every port this returns renders without error.
pub fn parse_vmx(text: &str) -> Result<Vec<VmxSerialPort>, VmxError> {
    let mut by_index: BTreeMap<u8, Entries> = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let (key, value) = split_line(trimmed).ok_or_else(|| VmxError::MalformedLine {
            line: i + 1,
            text: line.to_owned(),
        })?;
        let Some((n, suffix)) = split_serial_key(key) else {
            continue;
        };
        let index = n
            .parse::<PortIndex>()
            .map_err(|_| VmxError::IndexOutOfRange {
                line: i + 1,
                key: key.to_owned(),
            })?;
        let entries = &mut by_index
            .entry(index.get())
            .or_insert_with(|| Entries(Vec::new()))
            .0;
        // Keys are case-insensitive and the last occurrence wins.
        entries.retain(|(s, _, _)| !s.eq_ignore_ascii_case(suffix));
        entries.push((suffix.to_owned(), value, key.to_owned()));
    }
    let mut ports = Vec::new();
    for (n, mut entries) in by_index {
        if entries.take_bool(PRESENT)? != Some(true) {
            continue;
        }
        let index = PortIndex::new(u32::from(n)).unwrap_or_default();
        ports.push(port_from_entries(index, &mut entries)?);
    }
    Ok(ports)
}

fn port_from_entries(index: PortIndex, e: &mut Entries) -> Result<VmxSerialPort, VmxError> {
    let start_connected = e.take_bool(START_CONNECTED)?.unwrap_or(true);
    let yield_on_poll = e.take_bool(YIELD_ON_MSR_READ)?.unwrap_or(false);
    let keep_idle = match e.take(KeepIdle::SUFFIX) {
        Some((k, v)) => Some(v.parse().map_err(|_| VmxError::InvalidValue {
            key: k,
            value: v,
            expected: "a whole number of seconds",
        })?),
        None => None,
    };
    let vmotion_limit = match e.take(VmotionLimit::SUFFIX) {
        Some((k, v)) => Some(v.parse().map_err(|_| VmxError::InvalidValue {
            key: k,
            value: v,
            expected: "a whole number of milliseconds",
        })?),
        None => None,
    };
    let file_type = e.take(FILE_TYPE);
    let backing = match file_type
        .as_ref()
        .map(|(_, v)| v.to_ascii_lowercase())
        .as_deref()
    {
        None => None,
        Some("network") => {
            let mut b = UriBackingInfo::from_parts(
                e.take_value(FILE_NAME).unwrap_or_default(),
                e.take_value(NETWORK_END_POINT)
                    .unwrap_or_else(|| "server".to_owned()),
                None,
            );
            b.proxy_uri = e.take_value(VSPC);
            Some(SerialBacking::Uri(b))
        }
        Some("file") => Some(SerialBacking::File(FileBackingInfo::new(
            e.take_value(FILE_NAME).unwrap_or_default(),
        ))),
        Some("device") => {
            let mut b = DeviceBackingInfo::new(e.take_value(FILE_NAME).unwrap_or_default());
            b.use_auto_detect = e.take_bool(AUTODETECT)?;
            Some(SerialBacking::Device(b))
        }
        Some("pipe") => {
            let mut b = PipeBackingInfo::new(
                e.take_value(FILE_NAME).unwrap_or_default(),
                crate::Direction::Server,
            );
            // `.vmx` has no documented default endpoint: absent stays absent (empty).
            b.endpoint = e.take_value(PIPE_END_POINT).unwrap_or_default();
            b.no_rx_loss = e.take_bool(TRY_NO_RX_LOSS)?;
            Some(SerialBacking::Pipe(b))
        }
        Some("thinprint") => Some(SerialBacking::ThinPrint(ThinPrintBackingInfo::new())),
        Some(_) => {
            // Unknown type: keep fileType (and everything else) verbatim in `other`.
            if let Some((key, value)) = file_type {
                let suffix = key.split_once('.').map_or(FILE_TYPE, |(_, s)| s);
                e.0.insert(0, (suffix.to_owned(), value, key));
            }
            None
        }
    };
    let mut connect = VirtualDeviceConnectInfo::new(false);
    connect.start_connected = start_connected;
    let mut port = VirtualSerialPort::with_key(VMX_KEY_BASE + i32::from(index.get()));
    port.backing = backing;
    port.connectable = Some(connect);
    port.yield_on_poll = yield_on_poll;
    Ok(VmxSerialPort {
        index,
        port,
        keep_idle,
        vmotion_limit,
        other: e.0.drain(..).map(|(s, v, _)| (s, v)).collect(),
    })
}
