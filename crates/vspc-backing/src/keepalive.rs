//! `serialN.keepIdle` and `serialN.vmotionLimit` (docs/uri-backing.md, "keepIdle and
//! vmotionLimit"), and the port index `N`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::model::OptionValue;

/// The index of a serial port among the VM's serial ports, from 0 (the `N` of `serialN`):
/// not the device key. At most [`PortIndex::MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PortIndex(u8);

/// A port index above [`PortIndex::MAX`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("serial port index {index} is out of range (a VM has at most 32 serial ports: 0 to 31)")]
pub struct PortIndexError {
    index: u64,
}

impl PortIndex {
    /// The highest index (a VM has at most 32 serial ports).
    pub const MAX: u8 = 31;

    /// The index, if at most [`PortIndex::MAX`].
    pub fn new(index: u32) -> Result<PortIndex, PortIndexError> {
        u8::try_from(index)
            .ok()
            .filter(|i| *i <= PortIndex::MAX)
            .map(PortIndex)
            .ok_or(PortIndexError {
                index: u64::from(index),
            })
    }

    /// The index as a number.
    pub const fn get(self) -> u8 {
        self.0
    }

    /// The name of an advanced option of this port: `serial{N}.{suffix}`.
    pub fn option_name(self, suffix: &str) -> String {
        format!("serial{}.{suffix}", self.0)
    }
}

impl fmt::Display for PortIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for PortIndex {
    type Err = PortIndexError;

    /// A decimal index (no sign, no leading `+`).
    fn from_str(s: &str) -> Result<PortIndex, PortIndexError> {
        let index = if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            s.parse::<u64>().unwrap_or(u64::MAX)
        } else {
            u64::MAX
        };
        u32::try_from(index)
            .ok()
            .and_then(|i| PortIndex::new(i).ok())
            .ok_or(PortIndexError { index })
    }
}

/// A value of an advanced option that is not a non-negative decimal number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{option} {value:?}: expected a whole number from 0 to 4294967295")]
pub struct OptionValueError {
    option: &'static str,
    value: String,
}

fn parse_u32(option: &'static str, value: &str) -> Result<u32, OptionValueError> {
    let err = || OptionValueError {
        option,
        value: value.to_owned(),
    };
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err());
    }
    value.parse().map_err(|_| err())
}

/// `serialN.keepIdle`: seconds of idle after which ESXi probes the proxy connection.
///
/// Idle that long, ESXi sends up to [`KeepIdle::PROBES`] keepalive probes at intervals of
/// keepIdle/100 s; no answer means the proxy is gone. The detection bound is therefore
/// keepIdle × 1.05, computed in milliseconds so nothing is rounded.
///
/// ```
/// use std::time::Duration;
/// use vspc_backing::{KeepIdle, PortIndex};
///
/// let k = KeepIdle::DEFAULT;
/// assert_eq!(k.secs(), 300);
/// assert_eq!(k.probe_interval(), Duration::from_secs(3));
/// assert_eq!(k.detection_bound(), Duration::from_secs(315));
/// assert_eq!(KeepIdle::option_name(PortIndex::new(2)?), "serial2.keepIdle");
/// # Ok::<(), vspc_backing::PortIndexError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeepIdle(u32);

impl KeepIdle {
    /// ESXi's default: 300 s.
    pub const DEFAULT: KeepIdle = KeepIdle(300);

    /// How many probes ESXi sends before giving up.
    pub const PROBES: u32 = 5;

    /// The option suffix: `keepIdle`.
    pub const SUFFIX: &'static str = "keepIdle";

    /// A keepIdle of this many seconds.
    pub const fn from_secs(secs: u32) -> KeepIdle {
        KeepIdle(secs)
    }

    /// The seconds.
    pub const fn secs(self) -> u32 {
        self.0
    }

    /// The idle time before the first probe.
    pub const fn idle(self) -> Duration {
        Duration::from_secs(self.0 as u64)
    }

    /// The interval between probes: keepIdle/100 s (3 s at the default).
    pub const fn probe_interval(self) -> Duration {
        Duration::from_millis(self.0 as u64 * 10)
    }

    /// How long after the last byte a vanished proxy is detected at the latest:
    /// keepIdle + 5 × keepIdle/100 = keepIdle × 1.05 (315 s at the default).
    pub const fn detection_bound(self) -> Duration {
        Duration::from_millis(self.0 as u64 * 1000 + KeepIdle::PROBES as u64 * self.0 as u64 * 10)
    }

    /// The option name for port `index`: `serial{N}.keepIdle`.
    pub fn option_name(index: PortIndex) -> String {
        index.option_name(KeepIdle::SUFFIX)
    }

    /// The socket's TCP keepalive in this model (feature `socket2`): idle `keepIdle`, then
    /// [`PROBES`](KeepIdle::PROBES) probes every keepIdle/100, in whole seconds and at least
    /// one (what the socket option can carry), so a vanished peer is noticed within
    /// [`detection_bound`](KeepIdle::detection_bound). ESXi sets it on its connection to the
    /// proxy, and a concentrator on its VM connections to notice a vanished host as soon.
    #[cfg(feature = "socket2")]
    pub fn tcp_keepalive(self) -> socket2::TcpKeepalive {
        let interval = Duration::from_secs(self.probe_interval().as_secs().max(1));
        let params = socket2::TcpKeepalive::new()
            .with_time(self.idle())
            .with_interval(interval);
        #[cfg(any(target_os = "linux", target_os = "macos", target_os = "freebsd"))]
        let params = params.with_retries(KeepIdle::PROBES);
        params
    }

    /// The `extraConfig` entry setting this keepIdle on port `index`.
    pub fn to_option(self, index: PortIndex) -> OptionValue {
        OptionValue::new(KeepIdle::option_name(index), self.0.to_string())
    }
}

impl Default for KeepIdle {
    fn default() -> KeepIdle {
        KeepIdle::DEFAULT
    }
}

impl fmt::Display for KeepIdle {
    /// The option value: the number of seconds.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for KeepIdle {
    type Err = OptionValueError;

    /// Reads an option value: a decimal number of seconds.
    fn from_str(s: &str) -> Result<KeepIdle, OptionValueError> {
        parse_u32("keepIdle", s).map(KeepIdle)
    }
}

/// `serialN.vmotionLimit`: milliseconds the proxy may take to answer VMOTION-BEGIN.
///
/// ```
/// use std::time::Duration;
/// use vspc_backing::{PortIndex, VmotionLimit};
///
/// assert_eq!(VmotionLimit::DEFAULT.duration(), Duration::from_secs(5));
/// let opt = VmotionLimit::from_millis(8000).to_option(PortIndex::default());
/// assert_eq!((opt.key.as_str(), opt.value.as_str()), ("serial0.vmotionLimit", "8000"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VmotionLimit(u32);

impl VmotionLimit {
    /// ESXi's default: 5000 ms.
    pub const DEFAULT: VmotionLimit = VmotionLimit(5000);

    /// The option suffix: `vmotionLimit`.
    pub const SUFFIX: &'static str = "vmotionLimit";

    /// A limit of this many milliseconds.
    pub const fn from_millis(millis: u32) -> VmotionLimit {
        VmotionLimit(millis)
    }

    /// The milliseconds.
    pub const fn millis(self) -> u32 {
        self.0
    }

    /// The limit as a duration.
    pub const fn duration(self) -> Duration {
        Duration::from_millis(self.0 as u64)
    }

    /// The option name for port `index`: `serial{N}.vmotionLimit`.
    pub fn option_name(index: PortIndex) -> String {
        index.option_name(VmotionLimit::SUFFIX)
    }

    /// The `extraConfig` entry setting this limit on port `index`.
    pub fn to_option(self, index: PortIndex) -> OptionValue {
        OptionValue::new(VmotionLimit::option_name(index), self.0.to_string())
    }
}

impl Default for VmotionLimit {
    fn default() -> VmotionLimit {
        VmotionLimit::DEFAULT
    }
}

impl fmt::Display for VmotionLimit {
    /// The option value: the number of milliseconds.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for VmotionLimit {
    type Err = OptionValueError;

    /// Reads an option value: a decimal number of milliseconds.
    fn from_str(s: &str) -> Result<VmotionLimit, OptionValueError> {
        parse_u32("vmotionLimit", s).map(VmotionLimit)
    }
}
