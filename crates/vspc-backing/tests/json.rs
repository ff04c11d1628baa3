//! The vSphere JSON shapes (docs/uri-backing.md, "The JSON shapes"), behind the `serde` feature.
#![cfg(feature = "serde")]

use serde_json::{json, Value};
use vspc_backing::{
    network_backing, Direction, KeepIdle, Operation, OptionValue, ProxiedPortBuilder,
    ReconfigVmTaskBody, SerialBacking, VirtualDevice, VirtualMachineConfigOption,
    VirtualMachineConfigSpec,
};

/// The example body of docs/uri-backing.md ("The JSON shapes"), verbatim.
const SPEC_EXAMPLE: &str = r#"{"spec": {"_typeName": "VirtualMachineConfigSpec",
  "deviceChange": [{"_typeName": "VirtualDeviceConfigSpec", "operation": "add",
    "device": {"_typeName": "VirtualSerialPort", "key": -1,
      "backing": {"_typeName": "VirtualSerialPortURIBackingInfo", "serviceURI": "vSPC.py",
        "direction": "server",
        "proxyURI": "telnets://vspc.example.com:13370#thumbprint=AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01"},
      "connectable": {"_typeName": "VirtualDeviceConnectInfo", "startConnected": true,
        "allowGuestControl": true, "connected": true},
      "yieldOnPoll": true}}],
  "extraConfig": [{"_typeName": "OptionValue", "key": "serial0.keepIdle",
    "value": {"_typeName": "string", "_value": "300"}}]}}"#;

const PROXY: &str = "telnets://vspc.example.com:13370#thumbprint=AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01";

fn spec_example() -> Value {
    serde_json::from_str(SPEC_EXAMPLE).expect("the example body is JSON")
}

#[test]
fn spec_example_parses_and_serializes_back_to_the_same_json() {
    let body: ReconfigVmTaskBody = serde_json::from_str(SPEC_EXAMPLE).expect("parses");
    let change = &body.spec.device_change[0];
    assert_eq!(change.operation, Operation::Add);
    let port = change.serial_port().expect("a serial port");
    assert_eq!(port.key, -1);
    assert!(port.yield_on_poll);
    let backing = port.uri_backing().expect("a URI backing");
    assert_eq!(backing.service_uri, "vSPC.py");
    assert_eq!(backing.direction, "server");
    assert_eq!(backing.proxy_uri.as_deref(), Some(PROXY));
    let connect = port.connectable.as_ref().expect("connectable");
    assert!(connect.start_connected && connect.allow_guest_control && connect.connected);
    assert_eq!(connect.status, None);
    assert_eq!(
        body.spec.extra_config,
        [OptionValue::new("serial0.keepIdle", "300")]
    );

    assert_eq!(
        serde_json::to_value(&body).expect("serializes"),
        spec_example()
    );
}

#[test]
fn the_builder_produces_the_spec_example() {
    let spec = ProxiedPortBuilder::new(
        PROXY.parse().expect("valid proxy"),
        Direction::Server,
        "vSPC.py",
    )
    .keep_idle(KeepIdle::DEFAULT)
    .build()
    .expect("valid");
    let body = ReconfigVmTaskBody::new(spec);
    assert_eq!(
        serde_json::to_value(&body).expect("serializes"),
        spec_example()
    );
}

#[test]
fn every_object_carries_its_type_name_and_required_booleans_are_written_even_when_false() {
    let spec = ProxiedPortBuilder::new(
        PROXY.parse().expect("valid proxy"),
        Direction::Client,
        "vSPC.py",
    )
    .connectable(vspc_backing::VirtualDeviceConnectInfo::new(false))
    .yield_on_poll(false)
    .build()
    .expect("valid");
    let v = serde_json::to_value(&spec).expect("serializes");
    assert_eq!(
        v,
        json!({"_typeName": "VirtualMachineConfigSpec",
            "deviceChange": [{"_typeName": "VirtualDeviceConfigSpec", "operation": "add",
                "device": {"_typeName": "VirtualSerialPort", "key": -1,
                    "backing": {"_typeName": "VirtualSerialPortURIBackingInfo",
                        "serviceURI": "vSPC.py", "direction": "client", "proxyURI": PROXY},
                    "connectable": {"_typeName": "VirtualDeviceConnectInfo",
                        "startConnected": false, "allowGuestControl": false, "connected": false},
                    "yieldOnPoll": false}}]})
    );
}

#[test]
fn absent_optional_fields_are_omitted_and_present_ones_written() {
    let mut spec = VirtualMachineConfigSpec::new();
    let mut port = vspc_backing::VirtualSerialPort::new(
        -7,
        vspc_backing::UriBackingInfo::new("telnet://:2000", Direction::Server),
    );
    port.controller_key = Some(400);
    port.unit_number = Some(0);
    if let Some(c) = port.connectable.as_mut() {
        c.status = Some(vspc_backing::ConnectStatus::Untried);
    }
    spec.device_change
        .push(vspc_backing::VirtualDeviceConfigSpec::add(port));
    spec.device_change
        .push(vspc_backing::VirtualDeviceConfigSpec::remove(9001));
    let v = serde_json::to_value(&spec).expect("serializes");
    assert_eq!(
        v["deviceChange"][0]["device"],
        json!({"_typeName": "VirtualSerialPort", "key": -7,
            "backing": {"_typeName": "VirtualSerialPortURIBackingInfo",
                "serviceURI": "telnet://:2000", "direction": "server"},
            "connectable": {"_typeName": "VirtualDeviceConnectInfo", "startConnected": true,
                "allowGuestControl": true, "connected": true, "status": "untried"},
            "controllerKey": 400, "unitNumber": 0, "yieldOnPoll": true})
    );
    assert_eq!(
        v["deviceChange"][1],
        json!({"_typeName": "VirtualDeviceConfigSpec", "operation": "remove",
            "device": {"_typeName": "VirtualSerialPort", "key": 9001, "yieldOnPoll": false}})
    );
    let back: VirtualMachineConfigSpec = serde_json::from_value(v).expect("parses back");
    assert_eq!(back, spec);
}

#[test]
fn unknown_fields_are_ignored_on_read() {
    let mut v = spec_example();
    v["spec"]["memoryMB"] = json!(4096);
    v["spec"]["deviceChange"][0]["device"]["deviceInfo"] =
        json!({"_typeName": "Description", "label": "Serial port 1", "summary": "Remote vSPC.py"});
    v["spec"]["deviceChange"][0]["device"]["backing"]["futureField"] = json!([1, 2, 3]);
    v["spec"]["deviceChange"][0]["device"]["connectable"]["migrateConnect"] = json!("unset");
    let body: ReconfigVmTaskBody = serde_json::from_value(v).expect("tolerant");
    assert_eq!(
        serde_json::to_value(&body).expect("serializes"),
        spec_example()
    );
}

#[test]
fn unknown_backing_types_are_kept_and_written_back() {
    let future =
        json!({"_typeName": "VirtualSerialPortQuantumBackingInfo", "entangled": true, "n": [1]});
    let mut v = spec_example();
    v["spec"]["deviceChange"][0]["device"]["backing"] = future.clone();
    let body: ReconfigVmTaskBody = serde_json::from_value(v.clone()).expect("tolerant");
    let port = body.spec.device_change[0].serial_port().expect("port");
    match &port.backing {
        Some(SerialBacking::Unknown(u)) => {
            assert_eq!(u.type_name(), "VirtualSerialPortQuantumBackingInfo");
            assert_eq!(u.json(), &future);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(serde_json::to_value(&body).expect("serializes"), v);
}

#[test]
fn unknown_device_types_are_kept_and_written_back() {
    let disk = json!({"_typeName": "VirtualDisk", "key": -2, "capacityInKB": 1024});
    let v = json!({"_typeName": "VirtualMachineConfigSpec",
        "deviceChange": [{"_typeName": "VirtualDeviceConfigSpec", "operation": "add",
            "fileOperation": "create", "device": disk}]});
    let spec: VirtualMachineConfigSpec = serde_json::from_value(v.clone()).expect("tolerant");
    match &spec.device_change[0].device {
        VirtualDevice::Unknown(u) => assert_eq!(u.type_name(), "VirtualDisk"),
        other => panic!("{other:?}"),
    }
    // fileOperation is not modelled (never used for serial ports), so it is dropped.
    let mut expected = v;
    if let Some(change) = expected["deviceChange"][0].as_object_mut() {
        change.remove("fileOperation");
    }
    assert_eq!(serde_json::to_value(&spec).expect("serializes"), expected);
}

#[test]
fn every_known_backing_type_round_trips() {
    let backings = json!([
        {"_typeName": "VirtualSerialPortURIBackingInfo", "serviceURI": "telnet://:2000", "direction": "server"},
        {"_typeName": "VirtualSerialPortFileBackingInfo", "fileName": "[ds1] vm/console.log"},
        {"_typeName": "VirtualSerialPortDeviceBackingInfo", "deviceName": "/dev/char/serial/uart0", "useAutoDetect": false},
        {"_typeName": "VirtualSerialPortPipeBackingInfo", "pipeName": "\\\\.\\pipe\\com1", "endpoint": "client", "noRxLoss": true},
        {"_typeName": "VirtualSerialPortThinPrintBackingInfo"}
    ]);
    let parsed: Vec<SerialBacking> = serde_json::from_value(backings.clone()).expect("parses");
    let names: Vec<&str> = parsed.iter().map(SerialBacking::type_name).collect();
    assert_eq!(
        names,
        [
            "VirtualSerialPortURIBackingInfo",
            "VirtualSerialPortFileBackingInfo",
            "VirtualSerialPortDeviceBackingInfo",
            "VirtualSerialPortPipeBackingInfo",
            "VirtualSerialPortThinPrintBackingInfo"
        ]
    );
    assert!(matches!(parsed[2], SerialBacking::Device(_)));
    assert_eq!(serde_json::to_value(&parsed).expect("serializes"), backings);
}

#[test]
fn a_polymorphic_slot_without_type_name_is_an_error_naming_the_slot() {
    let e =
        serde_json::from_value::<SerialBacking>(json!({"serviceURI": "x"})).expect_err("no type");
    assert_eq!(e.to_string(), "backing: an object with a string _typeName");
    let e = serde_json::from_value::<SerialBacking>(
        json!({"_typeName": "VirtualSerialPortPipeBackingInfo", "noRxLoss": "yes"}),
    )
    .expect_err("bad field");
    assert!(
        e.to_string()
            .starts_with("backing VirtualSerialPortPipeBackingInfo: invalid type: string \"yes\""),
        "{e}"
    );
}

#[test]
fn a_missing_service_uri_reads_as_empty_and_fails_validation() {
    let b: SerialBacking = serde_json::from_value(
        json!({"_typeName": "VirtualSerialPortURIBackingInfo", "direction": "client"}),
    )
    .expect("tolerant");
    let uri = b.as_uri().expect("uri backing");
    assert_eq!(
        uri.validate(),
        Err(vspc_backing::ValidationError::MissingServiceUri)
    );
}

#[test]
fn option_values_are_boxed_and_read_leniently() {
    let o = OptionValue::new("serial1.vmotionLimit", "8000");
    assert_eq!(
        serde_json::to_value(&o).expect("serializes"),
        json!({"_typeName": "OptionValue", "key": "serial1.vmotionLimit",
            "value": {"_typeName": "string", "_value": "8000"}})
    );
    for value in [
        json!({"_typeName": "string", "_value": "300"}),
        json!({"_typeName": "int", "_value": 300}),
        json!("300"),
    ] {
        let read: OptionValue =
            serde_json::from_value(json!({"_typeName": "OptionValue", "key": "k", "value": value}))
                .expect("reads");
        assert_eq!(read.value, "300");
    }
}

#[test]
fn query_config_option_json_answers_network_backing() {
    let option = json!({"_typeName": "VirtualMachineConfigOption", "version": "vmx-21",
        "hardwareOptions": {"_typeName": "VirtualHardwareOption", "hwVersion": 21,
            "virtualDeviceOption": [
                {"_typeName": "VirtualIDEControllerOption", "type": "VirtualIDEController"},
                {"_typeName": "VirtualSerialPortOption", "type": "VirtualSerialPort",
                    "yieldOnPoll": {"_typeName": "BoolOption", "valueIsReadonly": false,
                        "supported": true, "defaultValue": true},
                    "backingOption": [
                        {"_typeName": "VirtualSerialPortFileBackingOption", "type": "VirtualSerialPortFileBackingInfo"},
                        {"_typeName": "VirtualSerialPortURIBackingOption", "type": "VirtualSerialPortURIBackingInfo",
                            "directions": {"_typeName": "ChoiceOption", "valueIsReadonly": false,
                                "choiceInfo": [
                                    {"_typeName": "ElementDescription", "key": "server", "label": "Server", "summary": "Server"},
                                    {"_typeName": "ElementDescription", "key": "client", "label": "Client", "summary": "Client"}],
                                "defaultIndex": 0}}]}]}});
    let parsed: VirtualMachineConfigOption = serde_json::from_value(option).expect("tolerant");
    let network = network_backing(&parsed).expect("available");
    assert_eq!(network.backing_type, "VirtualSerialPortURIBackingInfo");
    assert_eq!(network.directions, [Direction::Server, Direction::Client]);
    assert_eq!(
        network.yield_on_poll,
        Some(vspc_backing::BoolOption::new(true, true))
    );
}
