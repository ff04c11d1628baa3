//! vSphere virtual serial port backings: how a VM's serial port is wired to the network,
//! with or without a virtual serial port concentrator (vSPC).
//!
//! This crate is the configuration side of the vSPC protocol. It models the vSphere data
//! objects involved ([`VirtualSerialPort`], [`UriBackingInfo`] and the other
//! [`SerialBacking`]s, [`VirtualDeviceConnectInfo`], [`VirtualDeviceConfigSpec`],
//! [`VirtualMachineConfigSpec`], and on the capability side
//! [`VirtualMachineConfigOption`] with [`network_backing`]), and provides:
//!
//! - typed parsers for the URIs ESXi reads: [`ServiceUri`] (the ten direct forms, including
//!   `host:port`, bracketed IPv6 and the empty listener host `telnet://:12345`),
//!   [`ProxyUri`] (`telnet`/`telnets` only) and [`AuthParams`] (`#key[=value]&...`).
//!   [`FromStr`](std::str::FromStr) and [`Display`](std::fmt::Display) round-trip exactly;
//!   conversions to and from [`url::Url`] exist where `url` can represent the URI;
//! - validation ([`UriBackingInfo::validate`]) returning a typed [`ValidationError`] or the
//!   typed parts with typed [`Warning`]s; behind a proxy the service URI is opaque and never
//!   rejected;
//! - [`ProxiedPortBuilder`], which produces a valid config spec for a port behind a
//!   concentrator, and [`Thumbprint`], which formats a certificate's SHA-1 fingerprint as
//!   vSphere expects;
//! - the keepalive maths of `serialN.keepIdle` ([`KeepIdle`]) and `serialN.vmotionLimit`
//!   ([`VmotionLimit`]);
//! - the `.vmx` view of a port ([`VmxSerialPort`], [`parse_vmx`]);
//! - with the `serde` feature, the vSphere JSON shapes (`_typeName` on every object, boxed
//!   `anyType` values, unknown fields and types tolerated on read) and
//!   [`ReconfigVmTaskBody`].
//!
//! The crate performs no I/O and depends on no runtime.
//!
//! # Panics
//!
//! Nothing in this crate panics, whatever the input: every parser returns a typed error,
//! and the library code uses no `unwrap`, `expect` or unchecked indexing.
//!
//! # Example: a port behind a TLS concentrator
//!
//! ```
//! use vspc_backing::{Direction, KeepIdle, ProxiedPortBuilder, ProxyUri, Thumbprint};
//!
//! # let der_certificate: &[u8] = b"...";
//! let thumbprint = Thumbprint::sha1_of_der(der_certificate);
//! let proxy: ProxyUri = format!("telnets://vspc.example.com:13370#thumbprint={thumbprint}").parse()?;
//! let spec = ProxiedPortBuilder::new(proxy, Direction::Server, "vSPC.py")
//!     .keep_idle(KeepIdle::DEFAULT)
//!     .build()?;
//! assert_eq!(spec.device_change.len(), 1);
//! assert_eq!(spec.extra_config[0].key, "serial0.keepIdle");
//! assert_eq!(spec.extra_config[0].value, "300");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Example: validating what a user typed
//!
//! ```
//! use vspc_backing::{Direction, ServiceTarget, UriBackingInfo, Warning};
//!
//! // A direct listener on a privileged port: valid, with a warning.
//! let checked = UriBackingInfo::new("telnet://:80", Direction::Server).validate()?;
//! assert!(matches!(checked.warnings(), [Warning::ServerPortBlocked { port: 80, .. }]));
//!
//! // An unknown scheme is an error naming the offending part.
//! let err = UriBackingInfo::new("udp://10.0.0.5:2000", Direction::Client).validate().unwrap_err();
//! assert!(err.to_string().starts_with(r#"serviceURI "udp://10.0.0.5:2000": unknown scheme "udp""#));
//!
//! // Behind a proxy the service URI is opaque.
//! let proxied = UriBackingInfo::from_parts("vSPC.py?port=console", "client", Some("telnet://vspc:13370".into()));
//! assert!(matches!(proxied.validate()?.target(), ServiceTarget::Proxied { .. }));
//! # Ok::<(), vspc_backing::ValidationError>(())
//! ```
//!
//! # Features
//!
//! - `serde`: `Serialize`/`Deserialize` in the vSphere JSON shapes (VI/JSON). Only string
//!   `OptionValue` values are modelled: a boxed number or boolean is read as its text and
//!   written back as a string.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod builder;
mod error;
#[cfg(feature = "serde")]
mod json;
mod keepalive;
mod model;
mod option;
mod thumbprint;
mod uri;
mod validate;
mod vmx;

pub use builder::ProxiedPortBuilder;
pub use error::ValidationError;
#[cfg(feature = "serde")]
pub use json::ReconfigVmTaskBody;
pub use keepalive::{KeepIdle, OptionValueError, PortIndex, PortIndexError, VmotionLimit};
pub use model::{
    ConnectStatus, ConnectionAction, DeviceBackingInfo, Direction, FileBackingInfo, Operation,
    OptionValue, PipeBackingInfo, SerialBacking, ThinPrintBackingInfo, UnknownObject,
    UriBackingInfo, VirtualDevice, VirtualDeviceConfigSpec, VirtualDeviceConnectInfo,
    VirtualMachineConfigSpec, VirtualSerialPort,
};
pub use option::{
    network_backing, BackingOption, BoolOption, ChoiceOption, DeviceOption, ElementDescription,
    NetworkBacking, NetworkBackingError, VirtualDeviceUriBackingOption, VirtualHardwareOption,
    VirtualMachineConfigOption, VirtualSerialPortOption,
};
pub use thumbprint::{Thumbprint, ThumbprintError};
pub use uri::{
    AddressFamily, AuthKey, AuthParam, AuthParams, Host, ProxyScheme, ProxyUri, Scheme, ServiceUri,
    Transport, UriError, UriErrorKind, UriRole, UrlConversionError,
};
pub use validate::{ServiceTarget, ValidatedBacking, ValidationPolicy, Warning};
pub use vmx::{parse_vmx, VmxError, VmxSerialPort, VMX_KEY_BASE};

// The README's example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
