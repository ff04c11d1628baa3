//! Capability discovery: does the host support network backing for serial ports, and which
//! backing type should be created? (`EnvironmentBrowser.QueryConfigOption`)

use crate::model::{Direction, UnknownObject};

/// `BoolOption`: whether a boolean setting is supported and its default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(tag = "_typeName", rename = "BoolOption", rename_all = "camelCase")
)]
pub struct BoolOption {
    /// `supported`.
    #[cfg_attr(feature = "serde", serde(default))]
    pub supported: bool,
    /// `defaultValue`.
    #[cfg_attr(feature = "serde", serde(default))]
    pub default_value: bool,
}

impl BoolOption {
    /// A bool option.
    pub const fn new(supported: bool, default_value: bool) -> BoolOption {
        BoolOption {
            supported,
            default_value,
        }
    }
}

/// `ElementDescription`: one choice of a [`ChoiceOption`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(tag = "_typeName", rename = "ElementDescription")
)]
pub struct ElementDescription {
    /// `key`: the value itself (`server`, `client`).
    #[cfg_attr(feature = "serde", serde(default))]
    pub key: String,
    /// `label`.
    #[cfg_attr(feature = "serde", serde(default))]
    pub label: String,
    /// `summary`.
    #[cfg_attr(feature = "serde", serde(default))]
    pub summary: String,
}

impl ElementDescription {
    /// A choice whose label and summary are its key.
    pub fn new(key: impl Into<String>) -> ElementDescription {
        let key = key.into();
        ElementDescription {
            label: key.clone(),
            summary: key.clone(),
            key,
        }
    }
}

/// `ChoiceOption`: the values a string setting may take.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(tag = "_typeName", rename = "ChoiceOption", rename_all = "camelCase")
)]
pub struct ChoiceOption {
    /// `choiceInfo`.
    #[cfg_attr(feature = "serde", serde(default))]
    pub choice_info: Vec<ElementDescription>,
    /// `defaultIndex`.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub default_index: Option<i32>,
}

impl ChoiceOption {
    /// The choices, no default.
    pub fn new(choices: impl IntoIterator<Item = ElementDescription>) -> ChoiceOption {
        ChoiceOption {
            choice_info: choices.into_iter().collect(),
            default_index: None,
        }
    }
}

/// `VirtualDeviceURIBackingOption` (or its subtype `VirtualSerialPortURIBackingOption`):
/// network backing is possible.
#[doc(alias = "VirtualDeviceURIBackingOption")]
#[doc(alias = "VirtualSerialPortURIBackingOption")]
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(tag = "_typeName", rename = "VirtualSerialPortURIBackingOption")
)]
pub struct VirtualDeviceUriBackingOption {
    /// `type`: the name of the backing class to create
    /// (`VirtualSerialPortURIBackingInfo`).
    #[cfg_attr(feature = "serde", serde(rename = "type", default))]
    pub type_name: String,
    /// `directions`: `server`, `client`.
    #[cfg_attr(feature = "serde", serde(default))]
    pub directions: ChoiceOption,
}

impl VirtualDeviceUriBackingOption {
    /// An option for the given backing type and directions.
    pub fn new(
        type_name: impl Into<String>,
        directions: impl IntoIterator<Item = Direction>,
    ) -> VirtualDeviceUriBackingOption {
        VirtualDeviceUriBackingOption {
            type_name: type_name.into(),
            directions: ChoiceOption::new(
                directions
                    .into_iter()
                    .map(|d| ElementDescription::new(d.as_str())),
            ),
        }
    }
}

/// An entry of `VirtualSerialPortOption.backingOption`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackingOption {
    /// A URI backing option (`VirtualSerialPortURIBackingOption` or
    /// `VirtualDeviceURIBackingOption`).
    Uri(VirtualDeviceUriBackingOption),
    /// Any other backing option (file, device, pipe, ThinPrint, ...), kept as read.
    Other(UnknownObject),
}

/// `VirtualSerialPortOption`: what the host supports for serial ports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(
        tag = "_typeName",
        rename = "VirtualSerialPortOption",
        rename_all = "camelCase"
    )
)]
pub struct VirtualSerialPortOption {
    /// `backingOption`.
    #[cfg_attr(feature = "serde", serde(default))]
    pub backing_option: Vec<BackingOption>,
    /// `yieldOnPoll`.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub yield_on_poll: Option<BoolOption>,
}

impl VirtualSerialPortOption {
    /// A serial port option with these backing options.
    pub fn new(backing_option: impl IntoIterator<Item = BackingOption>) -> VirtualSerialPortOption {
        VirtualSerialPortOption {
            backing_option: backing_option.into_iter().collect(),
            yield_on_poll: None,
        }
    }
}

/// An entry of `VirtualHardwareOption.virtualDeviceOption`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeviceOption {
    /// `VirtualSerialPortOption`.
    SerialPort(VirtualSerialPortOption),
    /// Any other device option, kept as read.
    Other(UnknownObject),
}

/// `VirtualHardwareOption`, reduced to `virtualDeviceOption`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(
        tag = "_typeName",
        rename = "VirtualHardwareOption",
        rename_all = "camelCase"
    )
)]
pub struct VirtualHardwareOption {
    /// `virtualDeviceOption`.
    #[cfg_attr(feature = "serde", serde(default))]
    pub virtual_device_option: Vec<DeviceOption>,
}

/// `VirtualMachineConfigOption`, as `QueryConfigOption` returns it, reduced to
/// `hardwareOptions` (other fields are ignored when read).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(
        tag = "_typeName",
        rename = "VirtualMachineConfigOption",
        rename_all = "camelCase"
    )
)]
pub struct VirtualMachineConfigOption {
    /// `hardwareOptions`.
    #[cfg_attr(feature = "serde", serde(default))]
    pub hardware_options: VirtualHardwareOption,
}

impl VirtualMachineConfigOption {
    /// A config option with these device options.
    pub fn new(
        device_options: impl IntoIterator<Item = DeviceOption>,
    ) -> VirtualMachineConfigOption {
        VirtualMachineConfigOption {
            hardware_options: VirtualHardwareOption {
                virtual_device_option: device_options.into_iter().collect(),
            },
        }
    }

    /// Whether network backing is available, and how to create it.
    pub fn network_backing(&self) -> Result<NetworkBacking, NetworkBackingError> {
        network_backing(self)
    }
}

/// How to create a network backing on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NetworkBacking {
    /// The backing class to create (`VirtualDeviceURIBackingOption.type`), normally
    /// `VirtualSerialPortURIBackingInfo`.
    pub backing_type: String,
    /// The directions offered, in order (unknown literals are left out).
    pub directions: Vec<Direction>,
    /// `VirtualSerialPortOption.yieldOnPoll`, when the host reports it.
    pub yield_on_poll: Option<BoolOption>,
}

/// Why network backing is not available.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NetworkBackingError {
    /// `hardwareOptions.virtualDeviceOption` has no `VirtualSerialPortOption`.
    #[error("hardwareOptions.virtualDeviceOption has no VirtualSerialPortOption: the host offers no serial ports")]
    NoSerialPortOption,
    /// The serial port option has no URI backing option.
    #[error("VirtualSerialPortOption.backingOption has no VirtualDeviceURIBackingOption: the host offers no network backing")]
    NoUriBackingOption,
    /// The URI backing option names no backing type.
    #[error("VirtualDeviceURIBackingOption.type is empty: no backing type to create")]
    EmptyBackingType,
}

/// Answers, from a `VirtualMachineConfigOption`, whether network backing is available and
/// which backing type to create (the first URI backing option of the first serial port
/// option).
///
/// ```
/// use vspc_backing::{
///     network_backing, BackingOption, VirtualMachineConfigOption, DeviceOption, Direction, VirtualSerialPortOption,
///     VirtualDeviceUriBackingOption,
/// };
///
/// let option = VirtualMachineConfigOption::new([DeviceOption::SerialPort(VirtualSerialPortOption::new([
///     BackingOption::Uri(VirtualDeviceUriBackingOption::new(
///         "VirtualSerialPortURIBackingInfo",
///         [Direction::Server, Direction::Client],
///     )),
/// ]))]);
/// let network = network_backing(&option)?;
/// assert_eq!(network.backing_type, "VirtualSerialPortURIBackingInfo");
/// assert_eq!(network.directions, [Direction::Server, Direction::Client]);
/// # Ok::<(), vspc_backing::NetworkBackingError>(())
/// ```
pub fn network_backing(
    option: &VirtualMachineConfigOption,
) -> Result<NetworkBacking, NetworkBackingError> {
    let serial = option
        .hardware_options
        .virtual_device_option
        .iter()
        .find_map(|d| match d {
            DeviceOption::SerialPort(s) => Some(s),
            DeviceOption::Other(_) => None,
        })
        .ok_or(NetworkBackingError::NoSerialPortOption)?;
    let uri = serial
        .backing_option
        .iter()
        .find_map(|b| match b {
            BackingOption::Uri(u) => Some(u),
            BackingOption::Other(_) => None,
        })
        .ok_or(NetworkBackingError::NoUriBackingOption)?;
    if uri.type_name.is_empty() {
        return Err(NetworkBackingError::EmptyBackingType);
    }
    Ok(NetworkBacking {
        backing_type: uri.type_name.clone(),
        directions: uri
            .directions
            .choice_info
            .iter()
            .filter_map(|c| c.key.parse().ok())
            .collect(),
        yield_on_poll: serial.yield_on_poll.clone(),
    })
}
