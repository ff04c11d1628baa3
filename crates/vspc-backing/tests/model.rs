//! The data model: connect-state semantics, config specs, the builder, capability
//! discovery, keepIdle maths and thumbprints.

use std::time::Duration;

use vspc_backing::{
    network_backing, BackingOption, ConnectionAction, DeviceOption, Direction, KeepIdle,
    NetworkBackingError, Operation, PortIndex, ProxiedPortBuilder, ProxyUri, SerialBacking,
    Thumbprint, UnknownObject, UriBackingInfo, UriErrorKind, ValidationError, ValidationPolicy,
    VirtualDeviceConfigSpec, VirtualDeviceConnectInfo, VirtualDeviceUriBackingOption,
    VirtualMachineConfigOption, VirtualMachineConfigSpec, VirtualSerialPort,
    VirtualSerialPortOption, VmotionLimit, Warning,
};

const THUMB: &str = "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01";

fn proxy() -> ProxyUri {
    format!("telnets://vspc.example.com:13370#thumbprint={THUMB}")
        .parse()
        .expect("valid proxy")
}

// ---- connect state ----

#[test]
fn power_on_copies_start_connected_into_connected() {
    let mut on = VirtualDeviceConnectInfo::new(false);
    on.start_connected = true;
    assert_eq!(on.power_on(), ConnectionAction::Open);
    assert!(on.connected);

    let mut off = VirtualDeviceConnectInfo::new(true);
    off.start_connected = false;
    assert_eq!(off.power_on(), ConnectionAction::None);
    assert!(
        !off.connected,
        "connected follows startConnected even when it was true"
    );
}

#[test]
fn reconfigure_with_connected_true_while_running_reconnects_even_if_connected() {
    let mut info = VirtualDeviceConnectInfo::new(true);
    assert_eq!(
        info.reconfigure(&VirtualDeviceConnectInfo::new(true), true),
        ConnectionAction::Reconnect
    );
    let mut info = VirtualDeviceConnectInfo::new(false);
    assert_eq!(
        info.reconfigure(&VirtualDeviceConnectInfo::new(true), true),
        ConnectionAction::Reconnect
    );
    assert!(info.connected);
}

#[test]
fn reconfigure_with_connected_false_while_running_closes() {
    let mut info = VirtualDeviceConnectInfo::new(true);
    assert_eq!(
        info.reconfigure(&VirtualDeviceConnectInfo::new(false), true),
        ConnectionAction::Close
    );
    assert!(!info.connected);
    assert_eq!(
        info.reconfigure(&VirtualDeviceConnectInfo::new(false), true),
        ConnectionAction::None
    );
}

#[test]
fn reconfigure_while_powered_off_only_stores_the_settings() {
    let mut info = VirtualDeviceConnectInfo::new(false);
    assert_eq!(
        info.reconfigure(&VirtualDeviceConnectInfo::new(true), false),
        ConnectionAction::None
    );
    assert!(!info.connected);
    assert!(info.start_connected && info.allow_guest_control);
    assert_eq!(info.power_on(), ConnectionAction::Open);
}

// ---- config specs ----

#[test]
fn device_config_specs_for_add_edit_and_remove() {
    let port = VirtualSerialPort::new(-1, UriBackingInfo::new("telnet://:2000", Direction::Server));
    assert_eq!(
        VirtualDeviceConfigSpec::add(port.clone()).operation,
        Operation::Add
    );
    assert_eq!(
        VirtualDeviceConfigSpec::edit(port.clone()).operation,
        Operation::Edit
    );
    let remove = VirtualDeviceConfigSpec::remove(9000);
    assert_eq!(remove.operation, Operation::Remove);
    assert_eq!(remove.serial_port().map(|p| p.key), Some(9000));
    assert_eq!(remove.serial_port().and_then(|p| p.backing.as_ref()), None);
    let other = VirtualDeviceConfigSpec::new(
        Operation::Add,
        vspc_backing::VirtualDevice::Unknown(UnknownObject::new("VirtualDisk")),
    );
    assert_eq!(other.serial_port(), None);
}

#[test]
fn a_config_spec_validates_its_serial_ports_and_collects_warnings() {
    let mut spec = VirtualMachineConfigSpec::new();
    spec.device_change
        .push(VirtualDeviceConfigSpec::add(VirtualSerialPort::new(
            -1,
            UriBackingInfo::new("telnet://:80", Direction::Server),
        )));
    spec.device_change
        .push(VirtualDeviceConfigSpec::remove(9001));
    let w = spec.validate(&ValidationPolicy::default()).expect("valid");
    assert_eq!(
        w,
        [Warning::ServerPortBlocked {
            uri: "telnet://:80".into(),
            port: 80
        }]
    );

    spec.device_change
        .push(VirtualDeviceConfigSpec::edit(VirtualSerialPort::new(
            9002,
            UriBackingInfo::new("udp://h:1", Direction::Client),
        )));
    let e = spec
        .validate(&ValidationPolicy::default())
        .expect_err("invalid");
    assert!(
        e.to_string()
            .starts_with(r#"serviceURI "udp://h:1": unknown scheme"#),
        "{e}"
    );
}

// ---- builder ----

#[test]
fn the_builder_defaults_match_the_spec_example() {
    let spec = ProxiedPortBuilder::new(proxy(), Direction::Server, "vSPC.py")
        .build()
        .expect("valid");
    assert_eq!(spec.extra_config, []);
    let change = &spec.device_change[0];
    assert_eq!(change.operation, Operation::Add);
    let port = change.serial_port().expect("serial port");
    let mut expected = VirtualSerialPort::new(
        -1,
        UriBackingInfo::proxied(&proxy(), Direction::Server, "vSPC.py"),
    );
    expected.connectable = Some(VirtualDeviceConnectInfo::new(true));
    assert_eq!(port, &expected);
}

#[test]
fn the_builder_sets_every_field_and_names_options_after_the_port_index() {
    let index = PortIndex::new(3).expect("in range");
    let mut connect = VirtualDeviceConnectInfo::new(true);
    connect.connected = false;
    let spec = ProxiedPortBuilder::new(proxy(), Direction::Client, "vSPC.py?port=console")
        .key(-42)
        .connectable(connect.clone())
        .yield_on_poll(false)
        .controller_key(400)
        .unit_number(0)
        .port_index(index)
        .keep_idle(KeepIdle::from_secs(60))
        .vmotion_limit(VmotionLimit::from_millis(8000))
        .policy(ValidationPolicy::strict())
        .build()
        .expect("valid");
    let port = spec.device_change[0].serial_port().expect("serial port");
    assert_eq!(
        (
            port.key,
            port.controller_key,
            port.unit_number,
            port.yield_on_poll
        ),
        (-42, Some(400), Some(0), false)
    );
    assert_eq!(port.connectable.as_ref(), Some(&connect));
    assert_eq!(
        port.uri_backing().map(|b| b.direction.as_str()),
        Some("client")
    );
    let options: Vec<(&str, &str)> = spec
        .extra_config
        .iter()
        .map(|o| (o.key.as_str(), o.value.as_str()))
        .collect();
    assert_eq!(
        options,
        [("serial3.keepIdle", "60"), ("serial3.vmotionLimit", "8000")]
    );
}

#[test]
fn the_builder_refuses_an_invalid_port() {
    let e = ProxiedPortBuilder::new(proxy(), Direction::Server, "")
        .build()
        .expect_err("empty service URI");
    assert_eq!(e, ValidationError::MissingServiceUri);
    let bad_thumb: ProxyUri = "telnets://p:1#thumbprint=nope"
        .parse()
        .expect("syntactically valid");
    let e = ProxiedPortBuilder::new(bad_thumb, Direction::Server, "vSPC.py")
        .policy(ValidationPolicy::strict())
        .build_port()
        .expect_err("strict thumbprint");
    assert_eq!(
        e.uri_error().map(|u| u.kind().clone()),
        Some(UriErrorKind::MalformedThumbprint {
            value: "nope".into()
        })
    );
}

// ---- capability discovery ----

fn config_option(backings: Vec<BackingOption>) -> VirtualMachineConfigOption {
    VirtualMachineConfigOption::new([
        DeviceOption::Other(UnknownObject::new("VirtualIDEControllerOption")),
        DeviceOption::SerialPort(VirtualSerialPortOption::new(backings)),
    ])
}

#[test]
fn network_backing_is_available_when_the_uri_backing_option_is_listed() {
    let option = config_option(vec![
        BackingOption::Other(UnknownObject::new("VirtualSerialPortFileBackingOption")),
        BackingOption::Uri(VirtualDeviceUriBackingOption::new(
            "VirtualSerialPortURIBackingInfo",
            [Direction::Server, Direction::Client],
        )),
    ]);
    let n = option.network_backing().expect("available");
    assert_eq!(n.backing_type, "VirtualSerialPortURIBackingInfo");
    assert_eq!(n.directions, [Direction::Server, Direction::Client]);
    assert_eq!(n.yield_on_poll, None);
}

#[test]
fn network_backing_is_unavailable_without_serial_port_or_uri_option() {
    assert_eq!(
        network_backing(&VirtualMachineConfigOption::default()),
        Err(NetworkBackingError::NoSerialPortOption)
    );
    let no_uri = config_option(vec![BackingOption::Other(UnknownObject::new(
        "VirtualSerialPortFileBackingOption",
    ))]);
    assert_eq!(
        network_backing(&no_uri),
        Err(NetworkBackingError::NoUriBackingOption)
    );
    assert_eq!(
        NetworkBackingError::NoUriBackingOption.to_string(),
        "VirtualSerialPortOption.backingOption has no VirtualDeviceURIBackingOption: the host offers no network backing"
    );
    let empty_type = config_option(vec![BackingOption::Uri(
        VirtualDeviceUriBackingOption::new("", [Direction::Server]),
    )]);
    assert_eq!(
        network_backing(&empty_type),
        Err(NetworkBackingError::EmptyBackingType)
    );
}

// ---- keepIdle and vmotionLimit ----

#[test]
fn keep_idle_default_gives_a_315_second_detection_bound() {
    let k = KeepIdle::DEFAULT;
    assert_eq!(k.secs(), 300);
    assert_eq!(k.idle(), Duration::from_secs(300));
    assert_eq!(k.probe_interval(), Duration::from_secs(3));
    assert_eq!(KeepIdle::PROBES, 5);
    assert_eq!(k.detection_bound(), Duration::from_secs(315));
    assert_eq!(KeepIdle::default(), KeepIdle::DEFAULT);
}

#[test]
fn keep_idle_maths_is_exact_in_milliseconds() {
    let k = KeepIdle::from_secs(7);
    assert_eq!(k.probe_interval(), Duration::from_millis(70));
    assert_eq!(k.detection_bound(), Duration::from_millis(7350));
    let k = KeepIdle::from_secs(1);
    assert_eq!(k.detection_bound(), Duration::from_millis(1050));
    let max = KeepIdle::from_secs(u32::MAX);
    assert_eq!(
        max.detection_bound(),
        Duration::from_millis(u64::from(u32::MAX) * 1050)
    );
    assert_eq!(KeepIdle::from_secs(0).detection_bound(), Duration::ZERO);
}

#[test]
fn option_names_use_the_port_index_not_the_device_key() {
    let idx = PortIndex::new(31).expect("in range");
    assert_eq!(KeepIdle::option_name(idx), "serial31.keepIdle");
    assert_eq!(VmotionLimit::option_name(idx), "serial31.vmotionLimit");
    let o = KeepIdle::DEFAULT.to_option(PortIndex::default());
    assert_eq!(
        (o.key.as_str(), o.value.as_str()),
        ("serial0.keepIdle", "300")
    );
}

#[test]
fn vmotion_limit_defaults_to_five_seconds() {
    assert_eq!(VmotionLimit::DEFAULT.millis(), 5000);
    assert_eq!(VmotionLimit::default().duration(), Duration::from_secs(5));
    assert_eq!(
        VmotionLimit::from_millis(250).duration(),
        Duration::from_millis(250)
    );
}

#[test]
fn option_values_parse_strictly() {
    assert_eq!("300".parse::<KeepIdle>(), Ok(KeepIdle::DEFAULT));
    assert_eq!("5000".parse::<VmotionLimit>(), Ok(VmotionLimit::DEFAULT));
    for bad in ["", "-1", "+5", "1.5", "4294967296", " 300"] {
        assert!(bad.parse::<KeepIdle>().is_err(), "{bad:?}");
    }
    assert_eq!(
        "5m".parse::<KeepIdle>().map_err(|e| e.to_string()),
        Err(r#"keepIdle "5m": expected a whole number from 0 to 4294967295"#.to_owned())
    );
}

#[test]
fn port_indices_range_from_0_to_31() {
    assert_eq!(PortIndex::new(0).map(PortIndex::get), Ok(0));
    assert_eq!(PortIndex::new(31).map(PortIndex::get), Ok(31));
    assert_eq!(
        PortIndex::new(32).map_err(|e| e.to_string()),
        Err(
            "serial port index 32 is out of range (a VM has at most 32 serial ports: 0 to 31)"
                .to_owned()
        )
    );
    assert!(PortIndex::new(u32::MAX).is_err());
    assert_eq!("7".parse::<PortIndex>().map(PortIndex::get), Ok(7));
    assert!("x".parse::<PortIndex>().is_err());
    assert!("99999999999999999999999".parse::<PortIndex>().is_err());
    assert_eq!(VirtualSerialPort::MAX_PER_VM, 32);
}

// ---- thumbprints ----

#[test]
fn thumbprint_of_a_der_certificate_matches_openssl() {
    // `openssl x509 -inform DER -in tests/data/vspc-example-cert.der -noout -sha1 -fingerprint`
    let der = include_bytes!("data/vspc-example-cert.der");
    assert_eq!(
        Thumbprint::sha1_of_der(der).to_string(),
        "BE:1D:77:0D:7F:08:E0:E9:90:19:EA:28:D4:B5:3B:B9:3D:18:FB:6C"
    );
}

#[test]
fn thumbprint_of_known_sha1_vectors() {
    assert_eq!(
        Thumbprint::sha1_of_der(b"").to_string(),
        "DA:39:A3:EE:5E:6B:4B:0D:32:55:BF:EF:95:60:18:90:AF:D8:07:09"
    );
    assert_eq!(Thumbprint::sha1_of_der(b"abc").as_bytes().len(), 20);
}

#[test]
fn thumbprints_parse_in_either_case_and_display_upper_case() {
    let t: Thumbprint = THUMB.to_lowercase().parse().expect("valid");
    assert_eq!(t.to_string(), THUMB);
    let sha256 = ["ab"; 32].join(":");
    assert_eq!(
        sha256.parse::<Thumbprint>().map(|t| t.as_bytes().len()),
        Ok(32)
    );
    for bad in [
        "",
        "AB",
        "AB:CD:",
        "ABC:DE",
        "GG:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00",
        "ABCDEF",
    ] {
        assert!(bad.parse::<Thumbprint>().is_err(), "{bad:?}");
    }
    assert_eq!(
        "AB".parse::<Thumbprint>().map_err(|e| e.to_string()),
        Err(r#"malformed thumbprint "AB" (expected 20 or 32 colon-separated hex pairs, such as AB:CD:...)"#.to_owned())
    );
}

#[test]
fn a_thumbprint_auth_param_built_from_a_certificate_makes_a_valid_proxy() {
    let t = Thumbprint::sha1_of_der(include_bytes!("data/vspc-example-cert.der"));
    let p = ProxyUri::new(
        vspc_backing::ProxyScheme::Telnets,
        "vspc.example.com".parse().expect("host"),
        13370,
    )
    .expect("host present")
    .with_auth(vspc_backing::AuthParams::new().with(vspc_backing::AuthParam::thumbprint(&t)));
    assert_eq!(
        p.to_string(),
        "telnets://vspc.example.com:13370#thumbprint=BE:1D:77:0D:7F:08:E0:E9:90:19:EA:28:D4:B5:3B:B9:3D:18:FB:6C"
    );
    let b = UriBackingInfo::proxied(&p, Direction::Server, "vSPC.py");
    assert!(b.validate_with(&ValidationPolicy::strict()).is_ok());
}

#[test]
fn serial_backing_reports_its_wsdl_type_name() {
    let b: SerialBacking = UriBackingInfo::new("telnet://:1", Direction::Server).into();
    assert_eq!(b.type_name(), "VirtualSerialPortURIBackingInfo");
    assert_eq!(
        SerialBacking::Unknown(UnknownObject::new("X")).type_name(),
        "X"
    );
}
