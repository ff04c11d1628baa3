//! A builder for the common case: one serial port behind a concentrator.

use crate::error::ValidationError;
use crate::keepalive::{KeepIdle, PortIndex, VmotionLimit};
use crate::model::{
    Direction, UriBackingInfo, VirtualDeviceConfigSpec, VirtualDeviceConnectInfo,
    VirtualMachineConfigSpec, VirtualSerialPort,
};
use crate::uri::ProxyUri;
use crate::validate::ValidationPolicy;

/// Builds the config spec that adds a serial port wired to a concentrator.
///
/// Defaults: key `-1`, connected at power-on and now, guest control allowed
/// (`VirtualDeviceConnectInfo::new(true)`), `yieldOnPoll` true, port index 0, no advanced
/// options. [`build`](Self::build) validates the backing, so the spec it returns is valid.
///
/// ```
/// use vspc_backing::{Direction, KeepIdle, ProxiedPortBuilder, ProxyUri};
///
/// let proxy: ProxyUri = "telnets://vspc.example.com:13370#thumbprint=AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01".parse()?;
/// let spec = ProxiedPortBuilder::new(proxy, Direction::Server, "vSPC.py")
///     .keep_idle(KeepIdle::DEFAULT)
///     .build()?;
/// let port = spec.device_change[0].serial_port().unwrap();
/// assert_eq!(port.uri_backing().unwrap().service_uri, "vSPC.py");
/// assert_eq!(spec.extra_config[0].key, "serial0.keepIdle");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct ProxiedPortBuilder {
    proxy: ProxyUri,
    direction: Direction,
    service_uri: String,
    key: i32,
    connectable: VirtualDeviceConnectInfo,
    yield_on_poll: bool,
    controller_key: Option<i32>,
    unit_number: Option<i32>,
    index: PortIndex,
    keep_idle: Option<KeepIdle>,
    vmotion_limit: Option<VmotionLimit>,
    policy: ValidationPolicy,
}

impl ProxiedPortBuilder {
    /// A port reaching `proxy`, forwarding `direction` and the opaque `service_uri`.
    pub fn new(proxy: ProxyUri, direction: Direction, service_uri: impl Into<String>) -> Self {
        ProxiedPortBuilder {
            proxy,
            direction,
            service_uri: service_uri.into(),
            key: -1,
            connectable: VirtualDeviceConnectInfo::new(true),
            yield_on_poll: true,
            controller_key: None,
            unit_number: None,
            index: PortIndex::default(),
            keep_idle: None,
            vmotion_limit: None,
            policy: ValidationPolicy::default(),
        }
    }

    /// The temporary device key (negative, unique within the spec; default `-1`).
    pub fn key(mut self, key: i32) -> Self {
        self.key = key;
        self
    }

    /// The connect state (default: all true).
    pub fn connectable(mut self, connectable: VirtualDeviceConnectInfo) -> Self {
        self.connectable = connectable;
        self
    }

    /// `yieldOnPoll` (default true).
    pub fn yield_on_poll(mut self, yield_on_poll: bool) -> Self {
        self.yield_on_poll = yield_on_poll;
        self
    }

    /// `controllerKey` (default: let the server choose).
    pub fn controller_key(mut self, controller_key: i32) -> Self {
        self.controller_key = Some(controller_key);
        self
    }

    /// `unitNumber` (default: let the server choose).
    pub fn unit_number(mut self, unit_number: i32) -> Self {
        self.unit_number = Some(unit_number);
        self
    }

    /// The index the port will have among the VM's serial ports (the `N` of
    /// `serialN.keepIdle`; default 0). Only used to name advanced options.
    pub fn port_index(mut self, index: PortIndex) -> Self {
        self.index = index;
        self
    }

    /// Adds `serialN.keepIdle` to `extraConfig`.
    pub fn keep_idle(mut self, keep_idle: KeepIdle) -> Self {
        self.keep_idle = Some(keep_idle);
        self
    }

    /// Adds `serialN.vmotionLimit` to `extraConfig`.
    pub fn vmotion_limit(mut self, limit: VmotionLimit) -> Self {
        self.vmotion_limit = Some(limit);
        self
    }

    /// The validation policy (default: lenient).
    pub fn policy(mut self, policy: ValidationPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The port alone, validated.
    pub fn build_port(&self) -> Result<VirtualSerialPort, ValidationError> {
        let backing =
            UriBackingInfo::proxied(&self.proxy, self.direction, self.service_uri.clone());
        backing.validate_with(&self.policy)?;
        let mut port = VirtualSerialPort::new(self.key, backing);
        port.connectable = Some(self.connectable.clone());
        port.yield_on_poll = self.yield_on_poll;
        port.controller_key = self.controller_key;
        port.unit_number = self.unit_number;
        Ok(port)
    }

    /// The config spec: one `add` device change and the advanced options asked for.
    pub fn build(&self) -> Result<VirtualMachineConfigSpec, ValidationError> {
        let mut spec = VirtualMachineConfigSpec::new();
        spec.device_change
            .push(VirtualDeviceConfigSpec::add(self.build_port()?));
        if let Some(k) = self.keep_idle {
            spec.extra_config.push(k.to_option(self.index));
        }
        if let Some(v) = self.vmotion_limit {
            spec.extra_config.push(v.to_option(self.index));
        }
        Ok(spec)
    }
}
