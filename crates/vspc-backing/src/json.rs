//! The vSphere JSON shapes (VI/JSON, vCenter 8.0 U1+), behind the `serde` feature.
//!
//! Every object carries `"_typeName"`; `anyType` values (`OptionValue.value`) are boxed as
//! `{"_typeName": "string", "_value": "300"}`; required booleans are always written and
//! absent optional fields omitted. Readers ignore unknown fields; on a monomorphic slot
//! (whose type the schema fixes, such as `connectable`) `_typeName` is not checked and may
//! be missing; on a polymorphic slot (a backing, a device, a device or backing option) it is
//! required, and an object of a type this crate does not model is kept as an
//! [`UnknownObject`] and written back unchanged.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::model::{
    DeviceBackingInfo, FileBackingInfo, PipeBackingInfo, SerialBacking, ThinPrintBackingInfo,
    UnknownObject, UriBackingInfo, VirtualDevice, VirtualMachineConfigSpec, VirtualSerialPort,
};
use crate::option::{
    BackingOption, DeviceOption, VirtualDeviceUriBackingOption, VirtualSerialPortOption,
};

/// The body of `POST /sdk/vim25/{release}/VirtualMachine/{moid}/ReconfigVM_Task`:
/// `{"spec": ...}` (the body itself has no `_typeName`).
///
/// ```
/// use vspc_backing::{ReconfigVmTaskBody, VirtualMachineConfigSpec};
///
/// let body = ReconfigVmTaskBody::new(VirtualMachineConfigSpec::new());
/// assert_eq!(
///     serde_json::to_string(&body)?,
///     r#"{"spec":{"_typeName":"VirtualMachineConfigSpec"}}"#
/// );
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ReconfigVmTaskBody {
    /// `spec`.
    pub spec: VirtualMachineConfigSpec,
}

impl ReconfigVmTaskBody {
    /// The body for this spec.
    pub const fn new(spec: VirtualMachineConfigSpec) -> ReconfigVmTaskBody {
        ReconfigVmTaskBody { spec }
    }
}

/// `OptionValue.value` as a boxed `anyType` string.
pub(crate) mod boxed_string {
    use super::{Deserialize, Deserializer, Serialize, Serializer, Value};

    #[derive(Serialize)]
    struct Boxed<'a> {
        #[serde(rename = "_typeName")]
        type_name: &'static str,
        #[serde(rename = "_value")]
        value: &'a str,
    }

    pub(crate) fn serialize<S: Serializer>(value: &str, s: S) -> Result<S::Ok, S::Error> {
        Boxed {
            type_name: "string",
            value,
        }
        .serialize(s)
    }

    /// Reads a boxed value; a bare string is accepted too. A boxed number or boolean is
    /// read as its JSON text (`{"_typeName":"int","_value":300}` reads as `"300"`).
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        let value = Value::deserialize(d)?;
        let inner = match &value {
            Value::Object(map) => map.get("_value").unwrap_or(&Value::Null),
            other => other,
        };
        match inner {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            Value::Bool(b) => Ok(b.to_string()),
            Value::Null => Ok(String::new()),
            _ => Err(serde::de::Error::custom(
                "OptionValue.value: expected a string, a number or a boolean",
            )),
        }
    }
}

/// Reads an object of a polymorphic slot: dispatches on `_typeName` with `known`, or keeps
/// it as an [`UnknownObject`].
fn read_polymorphic<'de, D, T>(
    d: D,
    slot: &'static str,
    known: impl FnOnce(&str, Value) -> Option<Result<T, serde_json::Error>>,
    unknown: impl FnOnce(UnknownObject) -> T,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    let value = Value::deserialize(d)?;
    let type_name = value
        .get("_typeName")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| D::Error::custom(format!("{slot}: an object with a string _typeName")))?;
    match known(&type_name, value.clone()) {
        Some(result) => result.map_err(|e| D::Error::custom(format!("{slot} {type_name}: {e}"))),
        None => UnknownObject::from_json(value)
            .map(unknown)
            .ok_or_else(|| D::Error::custom(format!("{slot}: an object with a string _typeName"))),
    }
}

fn from_value<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, serde_json::Error> {
    serde_json::from_value(v)
}

impl Serialize for UnknownObject {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.json().serialize(s)
    }
}

impl<'de> Deserialize<'de> for UnknownObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<UnknownObject, D::Error> {
        let value = Value::deserialize(d)?;
        UnknownObject::from_json(value)
            .ok_or_else(|| D::Error::custom("expected an object with a string _typeName"))
    }
}

impl Serialize for SerialBacking {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            SerialBacking::Uri(b) => b.serialize(s),
            SerialBacking::File(b) => b.serialize(s),
            SerialBacking::Device(b) => b.serialize(s),
            SerialBacking::Pipe(b) => b.serialize(s),
            SerialBacking::ThinPrint(b) => b.serialize(s),
            SerialBacking::Unknown(b) => b.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for SerialBacking {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<SerialBacking, D::Error> {
        read_polymorphic(
            d,
            "backing",
            |type_name, v| {
                Some(match type_name {
                    "VirtualSerialPortURIBackingInfo" => {
                        from_value::<UriBackingInfo>(v).map(SerialBacking::Uri)
                    }
                    "VirtualSerialPortFileBackingInfo" => {
                        from_value::<FileBackingInfo>(v).map(SerialBacking::File)
                    }
                    "VirtualSerialPortDeviceBackingInfo" => {
                        from_value::<DeviceBackingInfo>(v).map(SerialBacking::Device)
                    }
                    "VirtualSerialPortPipeBackingInfo" => {
                        from_value::<PipeBackingInfo>(v).map(SerialBacking::Pipe)
                    }
                    "VirtualSerialPortThinPrintBackingInfo" => {
                        from_value::<ThinPrintBackingInfo>(v).map(SerialBacking::ThinPrint)
                    }
                    _ => return None,
                })
            },
            SerialBacking::Unknown,
        )
    }
}

impl Serialize for VirtualDevice {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            VirtualDevice::SerialPort(p) => p.serialize(s),
            VirtualDevice::Unknown(u) => u.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for VirtualDevice {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<VirtualDevice, D::Error> {
        read_polymorphic(
            d,
            "device",
            |type_name, v| {
                (type_name == "VirtualSerialPort")
                    .then(|| from_value::<VirtualSerialPort>(v).map(VirtualDevice::SerialPort))
            },
            VirtualDevice::Unknown,
        )
    }
}

impl Serialize for BackingOption {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            BackingOption::Uri(o) => o.serialize(s),
            BackingOption::Other(u) => u.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for BackingOption {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<BackingOption, D::Error> {
        read_polymorphic(
            d,
            "backingOption",
            |type_name, v| {
                matches!(
                    type_name,
                    "VirtualSerialPortURIBackingOption" | "VirtualDeviceURIBackingOption"
                )
                .then(|| from_value::<VirtualDeviceUriBackingOption>(v).map(BackingOption::Uri))
            },
            BackingOption::Other,
        )
    }
}

impl Serialize for DeviceOption {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            DeviceOption::SerialPort(o) => o.serialize(s),
            DeviceOption::Other(u) => u.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for DeviceOption {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<DeviceOption, D::Error> {
        read_polymorphic(
            d,
            "virtualDeviceOption",
            |type_name, v| {
                (type_name == "VirtualSerialPortOption")
                    .then(|| from_value::<VirtualSerialPortOption>(v).map(DeviceOption::SerialPort))
            },
            DeviceOption::Other,
        )
    }
}
