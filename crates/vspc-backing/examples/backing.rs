//! Prints the vSphere JSON body (ReconfigVM_Task) and the `.vmx` lines of a serial port
//! behind a concentrator.
//!
//! ```text
//! cargo run -p vspc-backing --example backing --features serde -- \
//!     'telnets://vspc.example.com:13370#thumbprint=AB:CD:...' server vSPC.py [port index]
//! ```

use std::process::ExitCode;

use vspc_backing::{
    Direction, KeepIdle, PortIndex, ProxiedPortBuilder, ProxyUri, ReconfigVmTaskBody, VmxSerialPort,
};

const USAGE: &str = "usage: backing <proxyURI> <server|client> <serviceURI> [port index 0-31]

Prints the ReconfigVM_Task JSON body that adds the port (with serialN.keepIdle at its
default of 300 s) and the serialN.* lines of the same port in a .vmx file.

example: backing 'telnets://vspc.example.com:13370#thumbprint=AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01' server vSPC.py";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    match run(&args) {
        Ok(output) => {
            print!("{output}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("error: {message}\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &[String]) -> Result<String, String> {
    let (proxy, direction, service, index) = match args {
        [p, d, s] => (p, d, s, None),
        [p, d, s, i] => (p, d, s, Some(i)),
        _ => return Err(format!("expected 3 or 4 arguments, got {}", args.len())),
    };
    let proxy: ProxyUri = proxy.parse().map_err(|e| format!("{e}"))?;
    let direction: Direction = direction.parse().map_err(|e| format!("{e}"))?;
    let index: PortIndex = match index {
        Some(i) => i.parse().map_err(|e| format!("{e}"))?,
        None => PortIndex::default(),
    };

    let builder = ProxiedPortBuilder::new(proxy, direction, service.as_str())
        .port_index(index)
        .keep_idle(KeepIdle::DEFAULT);
    let spec = builder.build().map_err(|e| format!("{e}"))?;
    let body = ReconfigVmTaskBody::new(spec);
    let json = serde_json::to_string_pretty(&body).map_err(|e| format!("{e}"))?;

    let port = builder.build_port().map_err(|e| format!("{e}"))?;
    let mut vmx = VmxSerialPort::new(index, port);
    vmx.keep_idle = Some(KeepIdle::DEFAULT);
    let lines = vmx.render().map_err(|e| format!("{e}"))?;

    Ok(format!(
        "# ReconfigVM_Task body (POST /sdk/vim25/{{release}}/VirtualMachine/{{moid}}/ReconfigVM_Task)\n\
         {json}\n\n# .vmx lines\n{lines}"
    ))
}
