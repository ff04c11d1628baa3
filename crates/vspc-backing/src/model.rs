//! The vSphere data objects of a network serial port (docs/uri-backing.md, "The objects").
//!
//! These types mirror the wire: string-typed fields stay strings (a `direction` read from a
//! server may be anything; [`UriBackingInfo::validate`] says whether it is valid), optional
//! fields are `Option`s, required booleans are plain `bool`s. Every struct is
//! `#[non_exhaustive]` (vSphere adds fields over time): build them with their constructors
//! and set the public fields.

use std::fmt;
use std::str::FromStr;

use crate::error::ValidationError;

/// The direction of a URI backing: who opens the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// The VM listens (or, behind a proxy, the proxy listens for the VM's clients): `server`.
    Server,
    /// The VM connects: `client`.
    Client,
}

impl Direction {
    /// The wire literal: `server` or `client`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Direction::Server => "server",
            Direction::Client => "client",
        }
    }

    /// The byte that stands for this direction in the DO-PROXY message: `S` or `C`.
    pub const fn do_proxy_code(self) -> u8 {
        match self {
            Direction::Server => b'S',
            Direction::Client => b'C',
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Direction {
    type Err = ValidationError;

    /// Reads the exact lower-case literals `server` and `client`.
    fn from_str(s: &str) -> Result<Direction, ValidationError> {
        match s {
            "server" => Ok(Direction::Server),
            "client" => Ok(Direction::Client),
            "" => Err(ValidationError::MissingDirection),
            other => Err(ValidationError::InvalidDirection {
                direction: other.to_owned(),
            }),
        }
    }
}

/// `VirtualSerialPortURIBackingInfo`: the network backing of a serial port.
///
/// Without `proxy_uri`, ESXi opens `service_uri` itself (see [`crate::ServiceUri`]). With it,
/// the VM opens a telnet(s) connection to the concentrator named by `proxy_uri` and
/// forwards `direction` and `service_uri` to it, unparsed.
///
/// ```
/// use vspc_backing::{Direction, UriBackingInfo};
///
/// let backing = UriBackingInfo::new("telnet://:13370", Direction::Server);
/// let checked = backing.validate()?;
/// assert_eq!(checked.direction(), Direction::Server);
/// assert!(checked.warnings().is_empty());
/// # Ok::<(), vspc_backing::ValidationError>(())
/// ```
#[doc(alias = "VirtualSerialPortURIBackingInfo")]
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(tag = "_typeName", rename = "VirtualSerialPortURIBackingInfo")
)]
pub struct UriBackingInfo {
    /// `serviceURI` (required; empty means missing).
    #[cfg_attr(feature = "serde", serde(rename = "serviceURI", default))]
    pub service_uri: String,
    /// `direction`: `server` or `client` (required; empty means missing).
    #[cfg_attr(feature = "serde", serde(default))]
    pub direction: String,
    /// `proxyURI`: the concentrator, `telnet://host:port` or `telnets://host:port`.
    #[cfg_attr(
        feature = "serde",
        serde(rename = "proxyURI", default, skip_serializing_if = "Option::is_none")
    )]
    pub proxy_uri: Option<String>,
}

impl UriBackingInfo {
    /// A direct backing: ESXi opens `service_uri` itself.
    pub fn new(service_uri: impl Into<String>, direction: Direction) -> UriBackingInfo {
        UriBackingInfo {
            service_uri: service_uri.into(),
            direction: direction.as_str().to_owned(),
            proxy_uri: None,
        }
    }

    /// A backing through a concentrator: `service_uri` is opaque, forwarded to the proxy.
    pub fn proxied(
        proxy: &crate::ProxyUri,
        direction: Direction,
        service_uri: impl Into<String>,
    ) -> UriBackingInfo {
        UriBackingInfo {
            service_uri: service_uri.into(),
            direction: direction.as_str().to_owned(),
            proxy_uri: Some(proxy.to_string()),
        }
    }

    /// A backing from its three wire fields, as read (not validated).
    pub fn from_parts(
        service_uri: impl Into<String>,
        direction: impl Into<String>,
        proxy_uri: Option<String>,
    ) -> UriBackingInfo {
        UriBackingInfo {
            service_uri: service_uri.into(),
            direction: direction.into(),
            proxy_uri,
        }
    }
}

/// `VirtualSerialPortFileBackingInfo`: output to a file.
#[doc(alias = "VirtualSerialPortFileBackingInfo")]
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(
        tag = "_typeName",
        rename = "VirtualSerialPortFileBackingInfo",
        rename_all = "camelCase"
    )
)]
pub struct FileBackingInfo {
    /// `fileName`: a datastore path such as `[ds1] vm/console.log`.
    #[cfg_attr(feature = "serde", serde(default))]
    pub file_name: String,
}

impl FileBackingInfo {
    /// A file backing.
    pub fn new(file_name: impl Into<String>) -> FileBackingInfo {
        FileBackingInfo {
            file_name: file_name.into(),
        }
    }
}

/// `VirtualSerialPortDeviceBackingInfo`: a physical serial port of the host.
#[doc(alias = "VirtualSerialPortDeviceBackingInfo")]
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(
        tag = "_typeName",
        rename = "VirtualSerialPortDeviceBackingInfo",
        rename_all = "camelCase"
    )
)]
pub struct DeviceBackingInfo {
    /// `deviceName`, such as `/dev/char/serial/uart0`.
    #[cfg_attr(feature = "serde", serde(default))]
    pub device_name: String,
    /// `useAutoDetect`.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub use_auto_detect: Option<bool>,
}

impl DeviceBackingInfo {
    /// A device backing.
    pub fn new(device_name: impl Into<String>) -> DeviceBackingInfo {
        DeviceBackingInfo {
            device_name: device_name.into(),
            use_auto_detect: None,
        }
    }
}

/// `VirtualSerialPortPipeBackingInfo`: a named pipe.
#[doc(alias = "VirtualSerialPortPipeBackingInfo")]
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(
        tag = "_typeName",
        rename = "VirtualSerialPortPipeBackingInfo",
        rename_all = "camelCase"
    )
)]
pub struct PipeBackingInfo {
    /// `pipeName`.
    #[cfg_attr(feature = "serde", serde(default))]
    pub pipe_name: String,
    /// `endpoint`: `client` or `server`.
    #[cfg_attr(feature = "serde", serde(default))]
    pub endpoint: String,
    /// `noRxLoss`.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub no_rx_loss: Option<bool>,
}

impl PipeBackingInfo {
    /// A pipe backing; `endpoint` uses the same literals as [`Direction`].
    pub fn new(pipe_name: impl Into<String>, endpoint: Direction) -> PipeBackingInfo {
        PipeBackingInfo {
            pipe_name: pipe_name.into(),
            endpoint: endpoint.as_str().to_owned(),
            no_rx_loss: None,
        }
    }
}

/// `VirtualSerialPortThinPrintBackingInfo` (API 5.1): ThinPrint, no fields.
#[doc(alias = "VirtualSerialPortThinPrintBackingInfo")]
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(tag = "_typeName", rename = "VirtualSerialPortThinPrintBackingInfo")
)]
pub struct ThinPrintBackingInfo {}

impl ThinPrintBackingInfo {
    /// A ThinPrint backing.
    pub const fn new() -> ThinPrintBackingInfo {
        ThinPrintBackingInfo {}
    }
}

/// An object of a type this crate does not model (a newer backing, another device),
/// kept as read so that it can be written back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownObject {
    type_name: String,
    #[cfg(feature = "serde")]
    json: serde_json::Value,
}

impl UnknownObject {
    /// An object of the given type with no fields.
    pub fn new(type_name: impl Into<String>) -> UnknownObject {
        let type_name = type_name.into();
        UnknownObject {
            #[cfg(feature = "serde")]
            json: serde_json::Value::Object(serde_json::Map::from_iter([(
                "_typeName".to_owned(),
                serde_json::Value::String(type_name.clone()),
            )])),
            type_name,
        }
    }

    /// The object as read from JSON (its `_typeName` included); `None` unless it is a JSON
    /// object with a string `_typeName`.
    #[cfg(feature = "serde")]
    pub fn from_json(json: serde_json::Value) -> Option<UnknownObject> {
        let type_name = json.get("_typeName")?.as_str()?.to_owned();
        Some(UnknownObject { type_name, json })
    }

    /// The WSDL type name (`_typeName`).
    pub fn type_name(&self) -> &str {
        &self.type_name
    }

    /// The object as read, `_typeName` included.
    #[cfg(feature = "serde")]
    pub const fn json(&self) -> &serde_json::Value {
        &self.json
    }
}

/// The backing of a serial port (`VirtualDevice.backing`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SerialBacking {
    /// Network: `VirtualSerialPortURIBackingInfo`.
    Uri(UriBackingInfo),
    /// File: `VirtualSerialPortFileBackingInfo`.
    File(FileBackingInfo),
    /// Host device: `VirtualSerialPortDeviceBackingInfo`.
    Device(DeviceBackingInfo),
    /// Named pipe: `VirtualSerialPortPipeBackingInfo`.
    Pipe(PipeBackingInfo),
    /// ThinPrint: `VirtualSerialPortThinPrintBackingInfo`.
    ThinPrint(ThinPrintBackingInfo),
    /// Any other backing type, kept as read.
    Unknown(UnknownObject),
}

impl SerialBacking {
    /// The WSDL type name of the backing.
    pub fn type_name(&self) -> &str {
        match self {
            SerialBacking::Uri(_) => "VirtualSerialPortURIBackingInfo",
            SerialBacking::File(_) => "VirtualSerialPortFileBackingInfo",
            SerialBacking::Device(_) => "VirtualSerialPortDeviceBackingInfo",
            SerialBacking::Pipe(_) => "VirtualSerialPortPipeBackingInfo",
            SerialBacking::ThinPrint(_) => "VirtualSerialPortThinPrintBackingInfo",
            SerialBacking::Unknown(u) => u.type_name(),
        }
    }

    /// The URI backing, if this is one.
    pub const fn as_uri(&self) -> Option<&UriBackingInfo> {
        match self {
            SerialBacking::Uri(u) => Some(u),
            _ => None,
        }
    }
}

impl From<UriBackingInfo> for SerialBacking {
    fn from(b: UriBackingInfo) -> SerialBacking {
        SerialBacking::Uri(b)
    }
}

impl From<FileBackingInfo> for SerialBacking {
    fn from(b: FileBackingInfo) -> SerialBacking {
        SerialBacking::File(b)
    }
}

impl From<DeviceBackingInfo> for SerialBacking {
    fn from(b: DeviceBackingInfo) -> SerialBacking {
        SerialBacking::Device(b)
    }
}

impl From<PipeBackingInfo> for SerialBacking {
    fn from(b: PipeBackingInfo) -> SerialBacking {
        SerialBacking::Pipe(b)
    }
}

impl From<ThinPrintBackingInfo> for SerialBacking {
    fn from(b: ThinPrintBackingInfo) -> SerialBacking {
        SerialBacking::ThinPrint(b)
    }
}

/// `VirtualDeviceConnectInfo.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "camelCase"))]
pub enum ConnectStatus {
    /// `ok`: connected.
    Ok,
    /// `recoverableError`.
    RecoverableError,
    /// `unrecoverableError`.
    UnrecoverableError,
    /// `untried`: no connection attempted yet.
    Untried,
}

/// What the VM does with the proxy connection of a port when its connect state changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectionAction {
    /// Nothing changes.
    None,
    /// Open a connection (at power-on, with `startConnected`).
    Open,
    /// Close the existing connection (if any) and open a new one (reconfigure with
    /// `connected = true` while running).
    Reconnect,
    /// Close the connection (reconfigure with `connected = false` while running).
    Close,
}

/// `VirtualDeviceConnectInfo`: whether the device is connected, and at power-on.
///
/// With a proxy, [`power_on`](Self::power_on) and [`reconfigure`](Self::reconfigure)
/// describe what the VM does with the connection:
///
/// ```
/// use vspc_backing::{ConnectionAction, VirtualDeviceConnectInfo};
///
/// let mut info = VirtualDeviceConnectInfo::new(true);
/// assert_eq!(info.power_on(), ConnectionAction::Open);
/// assert!(info.connected);
/// // ReconfigVM_Task with connected = true while running: close and open again.
/// assert_eq!(info.reconfigure(&VirtualDeviceConnectInfo::new(true), true), ConnectionAction::Reconnect);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(
        tag = "_typeName",
        rename = "VirtualDeviceConnectInfo",
        rename_all = "camelCase"
    )
)]
pub struct VirtualDeviceConnectInfo {
    /// `startConnected`: connect when the VM powers on (copied into `connected` then).
    #[cfg_attr(feature = "serde", serde(default))]
    pub start_connected: bool,
    /// `allowGuestControl`: the guest may connect and disconnect the device.
    #[cfg_attr(feature = "serde", serde(default))]
    pub allow_guest_control: bool,
    /// `connected`: the device is connected (while the VM runs).
    #[cfg_attr(feature = "serde", serde(default))]
    pub connected: bool,
    /// `status`: the outcome of the last connection attempt (set by the server).
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub status: Option<ConnectStatus>,
}

impl VirtualDeviceConnectInfo {
    /// `startConnected`, `allowGuestControl` and `connected` all set to `connected`.
    pub const fn new(connected: bool) -> VirtualDeviceConnectInfo {
        VirtualDeviceConnectInfo {
            start_connected: connected,
            allow_guest_control: connected,
            connected,
            status: None,
        }
    }

    /// The VM powers on: it copies `startConnected` into `connected`, and opens the
    /// connection if that is true.
    pub fn power_on(&mut self) -> ConnectionAction {
        self.connected = self.start_connected;
        if self.connected {
            ConnectionAction::Open
        } else {
            ConnectionAction::None
        }
    }

    /// A ReconfigVM_Task carries `requested` for this device. The fields are taken over;
    /// while the VM runs, `connected = true` closes the existing connection and opens a new
    /// one, `connected = false` closes it. While it is off nothing happens until
    /// [`power_on`](Self::power_on), which uses `startConnected`.
    pub fn reconfigure(
        &mut self,
        requested: &VirtualDeviceConnectInfo,
        running: bool,
    ) -> ConnectionAction {
        let was_connected = self.connected;
        self.start_connected = requested.start_connected;
        self.allow_guest_control = requested.allow_guest_control;
        if !running {
            return ConnectionAction::None;
        }
        self.connected = requested.connected;
        match (was_connected, requested.connected) {
            (_, true) => ConnectionAction::Reconnect,
            (true, false) => ConnectionAction::Close,
            (false, false) => ConnectionAction::None,
        }
    }
}

/// `VirtualSerialPort`: a serial port device.
///
/// ```
/// use vspc_backing::{Direction, UriBackingInfo, VirtualSerialPort};
///
/// let port = VirtualSerialPort::new(-1, UriBackingInfo::new("telnet://:2000", Direction::Server));
/// assert_eq!(port.key, -1);
/// assert!(port.yield_on_poll);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(
        tag = "_typeName",
        rename = "VirtualSerialPort",
        rename_all = "camelCase"
    )
)]
pub struct VirtualSerialPort {
    /// `key`: a fresh negative temporary key on add; the server's key on edit and remove.
    pub key: i32,
    /// `backing`.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub backing: Option<SerialBacking>,
    /// `connectable`.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub connectable: Option<VirtualDeviceConnectInfo>,
    /// `controllerKey`.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub controller_key: Option<i32>,
    /// `unitNumber` (0 is meaningful).
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub unit_number: Option<i32>,
    /// `yieldOnPoll`: the vCPU yields when the guest polls the port.
    #[cfg_attr(feature = "serde", serde(default))]
    pub yield_on_poll: bool,
}

impl VirtualSerialPort {
    /// The maximum number of serial ports of a VM.
    pub const MAX_PER_VM: usize = 32;

    /// A port with this key and backing, connected at power-on
    /// ([`VirtualDeviceConnectInfo::new(true)`](VirtualDeviceConnectInfo::new)), yielding
    /// on poll.
    pub fn new(key: i32, backing: impl Into<SerialBacking>) -> VirtualSerialPort {
        VirtualSerialPort {
            key,
            backing: Some(backing.into()),
            connectable: Some(VirtualDeviceConnectInfo::new(true)),
            controller_key: None,
            unit_number: None,
            yield_on_poll: true,
        }
    }

    /// A port with only a key (what a remove needs).
    pub const fn with_key(key: i32) -> VirtualSerialPort {
        VirtualSerialPort {
            key,
            backing: None,
            connectable: None,
            controller_key: None,
            unit_number: None,
            yield_on_poll: false,
        }
    }

    /// The URI backing, if the port has one.
    pub fn uri_backing(&self) -> Option<&UriBackingInfo> {
        self.backing.as_ref().and_then(SerialBacking::as_uri)
    }
}

/// `VirtualDeviceConfigSpec.device`: a serial port, or another device kept as read.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum VirtualDevice {
    /// `VirtualSerialPort`.
    SerialPort(VirtualSerialPort),
    /// Any other device type.
    Unknown(UnknownObject),
}

impl From<VirtualSerialPort> for VirtualDevice {
    fn from(p: VirtualSerialPort) -> VirtualDevice {
        VirtualDevice::SerialPort(p)
    }
}

/// `VirtualDeviceConfigSpecOperation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum Operation {
    /// `add`.
    Add,
    /// `edit`.
    Edit,
    /// `remove`.
    Remove,
}

/// `VirtualDeviceConfigSpec`: one device change. `fileOperation` is never used for serial
/// ports and is not modelled.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(
        tag = "_typeName",
        rename = "VirtualDeviceConfigSpec",
        rename_all = "camelCase"
    )
)]
pub struct VirtualDeviceConfigSpec {
    /// `operation`.
    pub operation: Operation,
    /// `device`.
    pub device: VirtualDevice,
}

impl VirtualDeviceConfigSpec {
    /// A change with this operation.
    pub fn new(operation: Operation, device: impl Into<VirtualDevice>) -> VirtualDeviceConfigSpec {
        VirtualDeviceConfigSpec {
            operation,
            device: device.into(),
        }
    }

    /// Adds a port (give it a fresh negative key).
    pub fn add(port: VirtualSerialPort) -> VirtualDeviceConfigSpec {
        VirtualDeviceConfigSpec::new(Operation::Add, port)
    }

    /// Edits a port (with the server's key).
    pub fn edit(port: VirtualSerialPort) -> VirtualDeviceConfigSpec {
        VirtualDeviceConfigSpec::new(Operation::Edit, port)
    }

    /// Removes the port with this server key.
    pub fn remove(key: i32) -> VirtualDeviceConfigSpec {
        VirtualDeviceConfigSpec::new(Operation::Remove, VirtualSerialPort::with_key(key))
    }

    /// The serial port, if the device is one.
    pub const fn serial_port(&self) -> Option<&VirtualSerialPort> {
        match &self.device {
            VirtualDevice::SerialPort(p) => Some(p),
            VirtualDevice::Unknown(_) => None,
        }
    }
}

/// `OptionValue`: one `extraConfig` entry. Only string values are modelled (advanced
/// options such as `serial0.keepIdle` are strings); see the `serde` notes in the crate docs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(tag = "_typeName", rename = "OptionValue"))]
pub struct OptionValue {
    /// `key`, such as `serial0.keepIdle`.
    pub key: String,
    /// `value` (boxed as `{"_typeName": "string", "_value": ...}` in JSON).
    #[cfg_attr(feature = "serde", serde(with = "crate::json::boxed_string", default))]
    pub value: String,
}

impl OptionValue {
    /// An option.
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> OptionValue {
        OptionValue {
            key: key.into(),
            value: value.into(),
        }
    }
}

/// `VirtualMachineConfigSpec`: the argument of `CreateVM_Task` and `ReconfigVM_Task`,
/// reduced to what a serial port needs (`deviceChange`, `extraConfig`). Other fields are
/// ignored when read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(
        tag = "_typeName",
        rename = "VirtualMachineConfigSpec",
        rename_all = "camelCase"
    )
)]
pub struct VirtualMachineConfigSpec {
    /// `deviceChange`.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Vec::is_empty")
    )]
    pub device_change: Vec<VirtualDeviceConfigSpec>,
    /// `extraConfig`.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Vec::is_empty")
    )]
    pub extra_config: Vec<OptionValue>,
}

impl VirtualMachineConfigSpec {
    /// An empty spec.
    pub const fn new() -> VirtualMachineConfigSpec {
        VirtualMachineConfigSpec {
            device_change: Vec::new(),
            extra_config: Vec::new(),
        }
    }

    /// Validates every URI backing among the serial ports of `deviceChange` (removals
    /// excepted), returning their warnings in order.
    pub fn validate(
        &self,
        policy: &crate::ValidationPolicy,
    ) -> Result<Vec<crate::Warning>, ValidationError> {
        let mut warnings = Vec::new();
        for change in &self.device_change {
            if change.operation == Operation::Remove {
                continue;
            }
            if let Some(backing) = change
                .serial_port()
                .and_then(VirtualSerialPort::uri_backing)
            {
                warnings.extend(backing.validate_with(policy)?.warnings().iter().cloned());
            }
        }
        Ok(warnings)
    }
}
