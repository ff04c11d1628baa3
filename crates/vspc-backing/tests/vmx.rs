//! The `.vmx` view of a port (docs/uri-backing.md, "The .vmx view"): rendering, parsing, round
//! trips.

use proptest::prelude::*;
use vspc_backing::{
    parse_vmx, DeviceBackingInfo, Direction, FileBackingInfo, KeepIdle, PipeBackingInfo, PortIndex,
    SerialBacking, ThinPrintBackingInfo, UnknownObject, UriBackingInfo, VirtualDeviceConnectInfo,
    VirtualSerialPort, VmotionLimit, VmxError, VmxSerialPort, VMX_KEY_BASE,
};

const PROXY: &str = "telnets://vspc.example.com:13370#thumbprint=AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01";

fn index(n: u32) -> PortIndex {
    PortIndex::new(n).expect("in range")
}

/// A port as `.vmx` can hold it: key 9000 + N, `connected`/`allowGuestControl` false.
fn vmx_port(n: u32, backing: impl Into<SerialBacking>, start_connected: bool) -> VmxSerialPort {
    let mut port = VirtualSerialPort::new(VMX_KEY_BASE + n as i32, backing);
    let mut connect = VirtualDeviceConnectInfo::new(false);
    connect.start_connected = start_connected;
    port.connectable = Some(connect);
    VmxSerialPort::new(index(n), port)
}

#[test]
fn a_proxied_port_renders_as_its_serial_lines() {
    let mut p = vmx_port(
        0,
        UriBackingInfo::from_parts("vSPC.py", "server", Some(PROXY.into())),
        true,
    );
    p.keep_idle = Some(KeepIdle::DEFAULT);
    p.vmotion_limit = Some(VmotionLimit::DEFAULT);
    assert_eq!(
        p.render().expect("renders"),
        format!(
            "serial0.present = \"TRUE\"\n\
             serial0.startConnected = \"TRUE\"\n\
             serial0.fileType = \"network\"\n\
             serial0.fileName = \"vSPC.py\"\n\
             serial0.network.endPoint = \"server\"\n\
             serial0.vspc = \"{PROXY}\"\n\
             serial0.yieldOnMsrRead = \"TRUE\"\n\
             serial0.keepIdle = \"300\"\n\
             serial0.vmotionLimit = \"5000\"\n"
        )
    );
}

#[test]
fn every_backing_type_round_trips_through_vmx() {
    let mut device = DeviceBackingInfo::new("/dev/ttyS0");
    device.use_auto_detect = Some(true);
    let mut pipe = PipeBackingInfo::new("/tmp/com1", Direction::Client);
    pipe.no_rx_loss = Some(false);
    let backings: Vec<SerialBacking> = vec![
        UriBackingInfo::new("telnet://:2000", Direction::Server).into(),
        UriBackingInfo::from_parts("vSPC.py", "client", Some(PROXY.into())).into(),
        FileBackingInfo::new("[ds1] vm/console.log").into(),
        device.into(),
        pipe.into(),
        ThinPrintBackingInfo::new().into(),
    ];
    for (n, backing) in backings.into_iter().enumerate() {
        let p = vmx_port(n as u32, backing, n % 2 == 0);
        let text = p.render().expect("renders");
        assert_eq!(parse_vmx(&text), Ok(vec![p]), "{text}");
    }
}

#[test]
fn several_ports_parse_in_index_order_ignoring_other_keys() {
    let text = "\
.encoding = \"UTF-8\"
# a comment
displayName = \"vm01\"
serial1.present = \"TRUE\"
serial1.fileType = \"file\"
serial1.fileName = \"[ds1] vm01/serial1.log\"
serial0.present = \"TRUE\"
serial0.fileType = \"network\"
serial0.fileName = \"telnet://:2000\"
serial2.present = \"FALSE\"
serial2.fileType = \"network\"
ethernet0.present = \"TRUE\"
";
    let ports = parse_vmx(text).expect("parses");
    let summary: Vec<(u8, i32, &str)> = ports
        .iter()
        .map(|p| {
            (
                p.index.get(),
                p.port.key,
                p.port.backing.as_ref().map_or("", |b| b.type_name()),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (0, 9000, "VirtualSerialPortURIBackingInfo"),
            (1, 9001, "VirtualSerialPortFileBackingInfo")
        ]
    );
}

#[test]
fn defaults_apply_when_keys_are_absent() {
    let ports = parse_vmx("serial3.present = \"TRUE\"\nserial3.fileType = \"network\"\nserial3.fileName = \"telnet://:2000\"\n")
        .expect("parses");
    let p = &ports[0];
    assert_eq!(p.index.get(), 3);
    let backing = p.port.uri_backing().expect("network");
    assert_eq!(
        backing.direction, "server",
        "network.endPoint defaults to server"
    );
    assert_eq!(backing.proxy_uri, None);
    assert!(
        p.port
            .connectable
            .as_ref()
            .is_some_and(|c| c.start_connected),
        "startConnected defaults to true"
    );
    assert!(!p.port.yield_on_poll, "yieldOnMsrRead defaults to false");
    assert_eq!((p.keep_idle, p.vmotion_limit), (None, None));
}

#[test]
fn keys_and_booleans_are_read_case_insensitively_and_values_may_be_unquoted() {
    let text = "SERIAL0.Present = true\nserial0.FILETYPE = \"Network\"\nSerial0.filename=\"telnet://:2000\"\nserial0.yieldonmsrread = \"True\"\n";
    let ports = parse_vmx(text).expect("parses");
    assert!(ports[0].port.yield_on_poll);
    assert_eq!(
        ports[0].port.uri_backing().map(|b| b.service_uri.as_str()),
        Some("telnet://:2000")
    );
}

#[test]
fn the_last_occurrence_of_a_key_wins() {
    let text = "serial0.present = \"TRUE\"\nserial0.keepIdle = \"60\"\nSERIAL0.KEEPIDLE = \"120\"\nserial0.x = \"1\"\nserial0.X = \"2\"\n";
    assert_eq!(
        parse_vmx(text).expect("parses")[0].other,
        [("X".to_owned(), "2".to_owned())]
    );
    assert_eq!(
        parse_vmx(text).expect("parses")[0].keep_idle,
        Some(KeepIdle::from_secs(120))
    );
}

#[test]
fn unmodelled_keys_are_kept_verbatim_and_written_back() {
    let text = "serial0.present = \"TRUE\"\nserial0.fileType = \"network\"\nserial0.fileName = \"telnet://:2000\"\nserial0.allowGuestConnectionControl = \"FALSE\"\n";
    let ports = parse_vmx(text).expect("parses");
    assert_eq!(
        ports[0].other,
        [("allowGuestConnectionControl".to_owned(), "FALSE".to_owned())]
    );
    let rendered = ports[0].render().expect("renders");
    assert!(
        rendered.ends_with("serial0.allowGuestConnectionControl = \"FALSE\"\n"),
        "{rendered}"
    );
    assert_eq!(parse_vmx(&rendered), Ok(ports));
}

#[test]
fn an_unknown_file_type_is_kept_in_other_and_written_back() {
    let text =
        "serial0.present = \"TRUE\"\nserial0.fileType = \"hologram\"\nserial0.fileName = \"x\"\n";
    let ports = parse_vmx(text).expect("parses");
    assert_eq!(ports[0].port.backing, None);
    assert_eq!(
        ports[0].other,
        [
            ("fileType".to_owned(), "hologram".to_owned()),
            ("fileName".to_owned(), "x".to_owned())
        ]
    );
    let rendered = ports[0].render().expect("renders");
    assert_eq!(parse_vmx(&rendered), Ok(ports));
}

#[test]
fn special_characters_are_escaped_with_the_vmx_pipe_convention() {
    let cert = "telnets://h:1#certificate=-----BEGIN CERTIFICATE-----\nMIIB\"|x\n-----END CERTIFICATE-----";
    let p = vmx_port(0, UriBackingInfo::new(cert, Direction::Client), true);
    let text = p.render().expect("renders");
    assert!(
        text.contains("serial0.fileName = \"telnets://h:1#certificate=-----BEGIN CERTIFICATE-----|0AMIIB|22|7Cx|0A-----END CERTIFICATE-----\"\n"),
        "{text}"
    );
    assert_eq!(parse_vmx(&text), Ok(vec![p]));
}

#[test]
fn malformed_vmx_is_an_error_naming_the_line() {
    assert_eq!(
        parse_vmx("serial0.present = \"TRUE\"\nthis is not a line\n"),
        Err(VmxError::MalformedLine {
            line: 2,
            text: "this is not a line".into()
        })
    );
    assert_eq!(
        parse_vmx("serial0.fileName = \"a\" trailing\n").map_err(|e| e.to_string()),
        Err(
            "line 1 \"serial0.fileName = \\\"a\\\" trailing\": expected key = \"value\"".to_owned()
        )
    );
    assert_eq!(
        parse_vmx("serial32.present = \"TRUE\"\n"),
        Err(VmxError::IndexOutOfRange {
            line: 1,
            key: "serial32.present".into()
        })
    );
    assert_eq!(
        parse_vmx("serial0.present = \"TRUE\"\nserial0.startConnected = \"maybe\"\n")
            .map_err(|e| e.to_string()),
        Err("serial0.startConnected = \"maybe\": expected TRUE or FALSE".to_owned())
    );
    assert_eq!(
        parse_vmx("serial0.present = \"TRUE\"\nserial0.keepIdle = \"5m\"\n")
            .map_err(|e| e.to_string()),
        Err("serial0.keepIdle = \"5m\": expected a whole number of seconds".to_owned())
    );
}

#[test]
fn rendering_an_unknown_backing_or_a_colliding_extra_key_is_an_error() {
    let p = vmx_port(
        2,
        SerialBacking::Unknown(UnknownObject::new("VirtualSerialPortFutureBackingInfo")),
        true,
    );
    assert_eq!(
        p.render().map_err(|e| e.to_string()),
        Err("serial2: backing type VirtualSerialPortFutureBackingInfo has no .vmx form".to_owned())
    );
    let mut p = vmx_port(0, FileBackingInfo::new("x"), true);
    p.other.push(("FILENAME".into(), "y".into()));
    assert_eq!(
        p.render(),
        Err(VmxError::InvalidExtraKey {
            index: index(0),
            suffix: "FILENAME".into()
        })
    );
    p.other = vec![("a b".into(), "y".into())];
    assert!(matches!(p.render(), Err(VmxError::InvalidExtraKey { .. })));
}

fn arb_backing() -> impl Strategy<Value = SerialBacking> {
    let text = "[^\u{0}]{0,30}";
    prop_oneof![
        (
            text,
            prop_oneof![Just("server"), Just("client")],
            proptest::option::of(text)
        )
            .prop_map(|(s, d, p)| UriBackingInfo::from_parts(s, d, p).into()),
        text.prop_map(|f| FileBackingInfo::new(f).into()),
        (text, proptest::option::of(any::<bool>())).prop_map(|(d, a)| {
            let mut b = DeviceBackingInfo::new(d);
            b.use_auto_detect = a;
            b.into()
        }),
        (
            text,
            prop_oneof![Just(Direction::Server), Just(Direction::Client)],
            proptest::option::of(any::<bool>())
        )
            .prop_map(|(n, e, l)| {
                let mut b = PipeBackingInfo::new(n, e);
                b.no_rx_loss = l;
                b.into()
            }),
        Just(ThinPrintBackingInfo::new().into()),
    ]
}

proptest! {
    #[test]
    fn generated_ports_round_trip_through_vmx(
        n in 0u32..32,
        backing in arb_backing(),
        start_connected in any::<bool>(),
        yield_on_poll in any::<bool>(),
        keep_idle in proptest::option::of(any::<u32>()),
        vmotion_limit in proptest::option::of(any::<u32>()),
    ) {
        let mut p = vmx_port(n, backing, start_connected);
        p.port.yield_on_poll = yield_on_poll;
        p.keep_idle = keep_idle.map(KeepIdle::from_secs);
        p.vmotion_limit = vmotion_limit.map(VmotionLimit::from_millis);
        let text = p.render().map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(parse_vmx(&text), Ok(vec![p]));
    }

    #[test]
    fn arbitrary_text_never_panics_the_vmx_parser_and_what_it_reads_renders_back(
        s in "(serial[0-3]\\.present = \"TRUE\"\n(serial[0-3]\\.(fileType|fileName|[a-zA-Z.]{1,12}) ?= ?\"?[\\PC]{0,20}\"?\n){0,8}){1,3}|[\\PC\n]{0,200}"
    ) {
        if let Ok(ports) = parse_vmx(&s) {
            for p in ports {
                let text = p.render().map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(parse_vmx(&text), Ok(vec![p]));
            }
        }
    }
}
