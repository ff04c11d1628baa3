//! Emulated VMs pointed at a proxy: `vm [proxy URI] [count] [seconds] [--ca cert.pem]`.
//!
//! `cargo run --example vm -- telnet://127.0.0.1:13370 10`
//! runs ten VMs (`vm-00000`...) for 10 s, each sending a numbered console line every 100 ms,
//! and prints what happened.

use std::time::Duration;

use vspc_emulator::driver::{run_fleet, Target};
use vspc_emulator::{EmulatorConfig, OutputConfig, Pattern, ProxyUri, Rate, VmIdentity};

const USAGE: &str =
    "usage: vm [telnet://host:port | telnets://host:port] [count] [seconds] [--ca cert.pem]
  defaults: telnet://127.0.0.1:13370, 1 VM, 10 seconds; --ca trusts a PEM root for telnets";

#[tokio::main]
async fn main() {
    let mut positional = Vec::new();
    let mut ca = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return println!("{USAGE}"),
            "--ca" => ca = args.next(),
            _ => positional.push(arg),
        }
    }
    let parsed = (|| -> Result<(ProxyUri, u64, u64), String> {
        let uri = positional
            .first()
            .map_or("telnet://127.0.0.1:13370", String::as_str)
            .parse::<ProxyUri>()
            .map_err(|e| e.to_string())?;
        let count = match positional.get(1) {
            Some(c) => c.parse().map_err(|_| format!("bad count {c:?}"))?,
            None => 1,
        };
        let seconds = match positional.get(2) {
            Some(s) => s.parse().map_err(|_| format!("bad seconds {s:?}"))?,
            None => 10,
        };
        Ok((uri, count, seconds))
    })();
    let (uri, count, seconds) = match parsed {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let mut target = Target::new(uri.clone(), 256);
    if let Some(path) = ca {
        let pem = std::fs::read(&path).unwrap_or_else(|e| {
            eprintln!("{path}: {e}");
            std::process::exit(2)
        });
        let roots = Target::roots_from_pem(&pem).unwrap_or_default();
        target = target.with_roots(roots).unwrap_or_else(|e| {
            eprintln!("{path}: {e}");
            std::process::exit(2)
        });
    }
    println!("{count} VM(s) -> {uri} for {seconds} s");
    let report = run_fleet(count, target, Duration::from_secs(seconds), |n| {
        let identity = VmIdentity::numbered(n);
        let mut config = EmulatorConfig::new(identity.clone());
        config.output = Some(OutputConfig {
            pattern: Pattern::Lines {
                tag: identity.name.into_bytes(),
            },
            rate: Rate::new(20, Duration::from_millis(100)),
            limit: None,
        });
        config
    })
    .await;
    println!("{report:#?}");
}
