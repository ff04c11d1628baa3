//! Emulated VMs pointed at a proxy, as ESXi runs them:
//! `vm [proxyURI] [count] [seconds] [--vmotion-every 2s] [--reconnect-every 5s] ...`.
//!
//! `cargo run --example vm -- 'telnets://127.0.0.1:13371#thumbprint=AB:...' 10 30 --vmotion-every 2s`
//! runs ten VMs (`vm-00000`...) for 30 s, each sending a numbered console line every 100 ms
//! and vMotioning every 2 s; the proxy is verified by the URI's thumbprint as ESXi does.
//! It prints what happens (every failure with its reason) and a report; the exit status is 1
//! when any VM saw an error or none was identified.
//!
//! While it runs, commands on stdin (one per line) act on every VM: `v` vMotion, `r`
//! reconnect, `d` disconnect, `c` connect, `f <fault>` inject a fault, `q` quit.
#![forbid(unsafe_code)]
// An application around the driver: it may read the clock.
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use clap::Parser;
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;
use vspc_emulator::driver::{Event, EventKind, Fleet, Report, Spawner, Target, VmHandle};
use vspc_emulator::vspc_backing::ProxyUri;
use vspc_emulator::{
    EmulatorConfig, EmulatorEvent, Fault, OutputConfig, Pattern, Rate, VmIdentity, VmotionOutcome,
    VmotionPlan,
};

#[derive(Debug, Parser)]
#[command(
    name = "vm",
    about = "Emulated ESXi VMs whose serial ports point at a vSPC proxy"
)]
struct Cli {
    /// The proxyURI (`telnet://host:port` or `telnets://host:port#thumbprint=...`).
    #[arg(default_value = "telnet://127.0.0.1:13370")]
    uri: ProxyUri,
    /// How many VMs.
    #[arg(default_value_t = 1)]
    count: u64,
    /// How long to run, in seconds.
    #[arg(default_value_t = 10)]
    seconds: u64,
    /// Trust these PEM root certificates for a telnets proxyURI that pins nothing.
    #[arg(long, value_name = "PEM")]
    ca: Option<std::path::PathBuf>,
    /// vMotion every VM this often (e.g. 2s, 500ms).
    #[arg(long, value_parser = duration, value_name = "DURATION")]
    vmotion_every: Option<Duration>,
    /// Reconnect every VM this often (reconfigures `connected`: a new connection, no vMotion).
    #[arg(long, value_parser = duration, value_name = "DURATION")]
    reconnect_every: Option<Duration>,
    /// Reconnect this long after the proxy closed a VM's connection (default: stay
    /// disconnected, as ESXi does until reconfigured).
    #[arg(long, value_parser = duration, value_name = "DURATION")]
    reconnect_after: Option<Duration>,
    /// Inject this fault on every VM (noise, unknown, oversized, garbage, abrupt, silence)...
    #[arg(long, value_parser = fault, value_name = "FAULT")]
    fault: Option<Fault>,
    /// ...this often (default: once, a second after start).
    #[arg(long, value_parser = duration, value_name = "DURATION")]
    fault_every: Option<Duration>,
    /// Clients are expected to type `Pattern::Noise { seed: n }` into VM `n`; the report
    /// counts the VMs that got anything else (`client_mismatches`).
    #[arg(long)]
    expect_typed: bool,
    /// Print only failures and the report.
    #[arg(long, short)]
    quiet: bool,
}

fn duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("bad duration {text:?} (e.g. 2s, 500ms, 1m)"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(number)),
        "s" | "" => Ok(Duration::from_secs(number)),
        "m" => Ok(Duration::from_secs(number * 60)),
        _ => Err(format!("bad duration unit in {text:?} (ms, s or m)")),
    }
}

fn fault(text: &str) -> Result<Fault, String> {
    Ok(match text {
        "noise" => Fault::TelnetNoise,
        "unknown" => Fault::UnknownSuboption {
            code: 99,
            payload: bytes::Bytes::from_static(b"x"),
        },
        "oversized" => Fault::OversizedSubnegotiation { len: 64 * 1024 },
        "garbage" => Fault::Garbage(bytes::Bytes::from_static(b"\xff\xfa\xe8garbage")),
        "abrupt" => Fault::AbruptClose,
        "silence" => Fault::Silence,
        _ => {
            return Err(format!(
                "unknown fault {text:?} (noise, unknown, oversized, garbage, abrupt, silence)"
            ))
        }
    })
}

fn config(cli: &Cli, n: u64) -> EmulatorConfig {
    let identity = VmIdentity::numbered(n);
    let mut config = EmulatorConfig::new(identity.clone());
    config.output = Some(OutputConfig {
        pattern: Pattern::Lines {
            tag: identity.name.into_bytes(),
        },
        rate: Rate::new(20, Duration::from_millis(100)),
        limit: None,
    });
    config.reconnect_after = cli.reconnect_after;
    if cli.expect_typed {
        config.client_pattern = Some(Pattern::Noise { seed: n });
    }
    config
}

/// One line per event worth a person's attention; failures always.
fn show(event: &Event, quiet: bool) {
    let name = VmIdentity::numbered(event.vm).name;
    let failure = match &event.kind {
        EventKind::ConnectFailed { conn, error } => {
            Some(format!("conn {}: connect failed: {error}", conn.0))
        }
        EventKind::Io { conn, error } => Some(format!("conn {}: {error}", conn.0)),
        EventKind::Emulator(EmulatorEvent::ProtocolError { conn, error }) => {
            Some(format!("conn {}: protocol error: {error}", conn.0))
        }
        EventKind::Emulator(EmulatorEvent::ProxyAnswered {
            conn,
            accepted: false,
        }) => Some(format!("conn {}: the proxy refused DO-PROXY", conn.0)),
        _ => None,
    };
    if let Some(failure) = failure {
        return eprintln!("{name} {failure}");
    }
    if quiet {
        return;
    }
    let line = match &event.kind {
        EventKind::Connected { conn, tls } => {
            let over = if *tls {
                "telnets, proxy verified"
            } else {
                "telnet"
            };
            format!("conn {}: connected ({over})", conn.0)
        }
        EventKind::VmotionBegun { conn } => format!("conn {}: vMotion begun", conn.0),
        EventKind::VmotionGoahead { destination } => {
            format!("conn {}: GOAHEAD, destination connecting", destination.0)
        }
        EventKind::Emulator(EmulatorEvent::ProxyAnswered { conn, .. }) => {
            format!("conn {}: identified", conn.0)
        }
        EventKind::Emulator(EmulatorEvent::Vmotion(outcome)) => match outcome {
            VmotionOutcome::Completed { from, to } => {
                format!("vMotion completed: conn {} -> conn {}", from.0, to.0)
            }
            other => format!("vMotion ended: {other:?}"),
        },
        EventKind::Emulator(EmulatorEvent::Disconnected { conn }) => {
            format!("conn {}: disconnected", conn.0)
        }
        EventKind::Emulator(EmulatorEvent::ClientData { bytes, .. }) => {
            format!("client typed {:?}", String::from_utf8_lossy(bytes))
        }
        _ => return,
    };
    println!("{name} {line}");
}

/// What a stdin line (or a timer) asks of every VM.
#[derive(Debug, Clone)]
enum Command {
    Vmotion,
    Reconnect,
    Connected(bool),
    Fault(Fault),
    Quit,
}

fn act(vms: &[VmHandle], command: &Command, sequence: &mut u32) {
    for vm in vms {
        let result = match command {
            Command::Vmotion => {
                *sequence = sequence.wrapping_add(1);
                vm.vmotion(VmotionPlan::new(sequence.to_be_bytes().to_vec()))
            }
            Command::Reconnect => vm.reconnect(),
            Command::Connected(on) => vm.set_connected(*on),
            Command::Fault(fault) => vm.inject(fault.clone()),
            Command::Quit => Ok(()),
        };
        if let Err(error) = result {
            eprintln!(
                "{} {command:?}: {error}",
                VmIdentity::numbered(vm.number()).name
            );
        }
    }
}

fn stdin_commands(tx: mpsc::Sender<Command>) {
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let line = line.trim();
            let command = match line.split_once(' ').map_or((line, ""), |(a, b)| (a, b)) {
                ("v", _) => Command::Vmotion,
                ("r", _) => Command::Reconnect,
                ("d", _) => Command::Connected(false),
                ("c", _) => Command::Connected(true),
                ("q", _) => Command::Quit,
                ("f", name) => match fault(name.trim()) {
                    Ok(fault) => Command::Fault(fault),
                    Err(e) => {
                        eprintln!("{e}");
                        continue;
                    }
                },
                ("", _) => continue,
                _ => {
                    eprintln!("commands: v (vMotion), r (reconnect), d, c, f <fault>, q");
                    continue;
                }
            };
            if tx.send(command).await.is_err() {
                return;
            }
        }
    });
}

/// A timer firing every `every` (never when `None`).
async fn tick(timer: &mut Option<tokio::time::Interval>) {
    match timer {
        Some(timer) => {
            timer.tick().await;
        }
        None => std::future::pending().await,
    }
}

fn interval(every: Option<Duration>) -> Option<tokio::time::Interval> {
    every.map(|every| {
        let every = every.max(Duration::from_millis(1));
        let mut timer = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        timer
    })
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let mut builder = Target::builder(cli.uri.clone());
    if let Some(path) = &cli.ca {
        let roots = std::fs::read(path).and_then(|pem| Target::roots_from_pem(&pem));
        match roots {
            Ok(roots) => builder = builder.roots(roots),
            Err(e) => {
                eprintln!("{}: {e}", path.display());
                return std::process::ExitCode::from(2);
            }
        }
    }
    let target = match builder.build() {
        Ok(target) => target,
        Err(e) => {
            eprintln!("{}: {e}", cli.uri);
            return std::process::ExitCode::from(2);
        }
    };
    println!("{} VM(s) -> {} for {} s", cli.count, cli.uri, cli.seconds);
    let (events_tx, mut events) = mpsc::channel(4096);
    let spawner = Spawner::new(target).events(events_tx);
    let fleet: Fleet = (0..cli.count)
        .map(|n| spawner.spawn(n, config(&cli, n)))
        .collect();
    drop(spawner);
    let handles: Vec<VmHandle> = fleet.vms().iter().map(|vm| vm.handle()).collect();
    let (commands_tx, mut commands) = mpsc::channel(16);
    stdin_commands(commands_tx);
    let mut vmotions = interval(cli.vmotion_every);
    let mut reconnects = interval(cli.reconnect_every);
    let mut faults = cli.fault.as_ref().map(|_| {
        let every = cli.fault_every.unwrap_or(Duration::from_secs(1));
        let mut timer =
            tokio::time::interval_at(tokio::time::Instant::now() + Duration::from_secs(1), every);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        timer
    });
    let mut faults_left = if cli.fault_every.is_some() {
        u64::MAX
    } else {
        1
    };
    let end = tokio::time::sleep(Duration::from_secs(cli.seconds));
    tokio::pin!(end);
    let started = Instant::now();
    let mut sequence = 0u32;
    loop {
        let command = tokio::select! {
            () = &mut end => break,
            Some(event) = events.recv() => {
                show(&event, cli.quiet);
                continue;
            }
            Some(command) = commands.recv() => command,
            () = tick(&mut vmotions) => Command::Vmotion,
            () = tick(&mut reconnects) => Command::Reconnect,
            () = tick(&mut faults), if faults_left > 0 => {
                faults_left -= 1;
                match &cli.fault {
                    Some(fault) => Command::Fault(fault.clone()),
                    None => continue,
                }
            }
        };
        if matches!(command, Command::Quit) {
            break;
        }
        act(&handles, &command, &mut sequence);
    }
    let report: Report = fleet.stop().await;
    while let Ok(event) = events.try_recv() {
        show(&event, cli.quiet);
    }
    println!(
        "after {:.1} s: {report:#?}",
        started.elapsed().as_secs_f64()
    );
    if report.errors > 0 || report.identified == 0 || report.client_mismatches > 0 {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    }
}
