//! End-to-end scale benchmark of the concentrator: the example proxy in a child process, a
//! fleet of emulated VMs (vspc-emulator's tokio driver, one task each) and telnet clients in
//! this one, over loopback. One table for each fleet size.
//!
//! ```text
//! cargo build --release --examples
//! target/release/examples/scale --vms 100,1000,10000 --burst 5000
//! ```
//!
//! Figures, for each fleet size N (a fresh proxy each time):
//! - held: VMs the proxy lists as connected after the burst (admin `/metrics`);
//! - handshakes/s: N VMs connect at once (at most `--connecting` connects in flight), wall
//!   time from the first connect to the proxy listing all N;
//! - GOAHEAD p50/p99: on the VM side, from writing VMOTION-BEGIN to reading GOAHEAD, one
//!   vMotion at a time on 16 held probe VMs (on a runtime of their own thread); idle, then
//!   while `--burst` more VMs handshake (the burst's generator runs at SCHED_IDLE so that it
//!   cannot starve the probes of CPU on a small machine; its achieved handshake rate is
//!   printed beside the figure);
//! - vMotions/s: all N VMs vMotion at once; every one must complete, and up to 100 clients
//!   type a pattern before, during and after, which the VMs verify byte for byte;
//! - RSS per idle VM: the proxy's VmRSS growth from no VM to N idle VMs, divided by N;
//! - stream: one VM writes `--stream-mib` MiB as fast as it can, one client reads and
//!   verifies every byte; fan-out: the same to `--fanout` clients at once (per client).
#![forbid(unsafe_code)]
// A load generator timing the proxy: reading the clock is its job.
#![allow(clippy::disallowed_methods)]

mod support;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use support::fleet::{attach, fleet_config, target, verify, Fleet, Motion, Typist};
use support::proxy::{metric, percentile, rss, spawn_proxy, ProxyProc};
use support::WAIT;
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, Semaphore};
use vspc_emulator::driver::{self, EventKind, Spawner};
use vspc_emulator::{EmulatorEvent, VmIdentity};
use vspc_proto::vspc_telnet::TelnetEvent;

#[derive(Debug, Parser)]
#[command(
    name = "scale",
    about = "End-to-end scale benchmark of the vSPC concentrator"
)]
struct Cli {
    /// Fleet sizes, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "100,1000,10000")]
    vms: Vec<u64>,
    /// Connects in flight at once.
    #[arg(long, default_value_t = 512)]
    connecting: usize,
    /// VMs handshaking while GOAHEAD latency is sampled.
    #[arg(long, default_value_t = 1000)]
    burst: u64,
    /// GOAHEAD samples (each phase).
    #[arg(long, default_value_t = 400)]
    samples: usize,
    /// Threads of the burst's load generator (at SCHED_IDLE).
    #[arg(long, default_value_t = 1)]
    burst_threads: usize,
    /// vMotions in flight at once (each holds two connections until it completes).
    #[arg(long, default_value_t = 2000)]
    vmotions_in_flight: usize,
    /// MiB the single stream carries (each fan-out client gets a quarter of it).
    #[arg(long, default_value_t = 1024)]
    stream_mib: u64,
    /// Clients of the fan-out stream.
    #[arg(long, default_value_t = 10)]
    fanout: usize,
    /// The proxy binary (default: `proxy` beside this one).
    #[arg(long)]
    proxy: Option<PathBuf>,
    /// The proxy's log filter.
    #[arg(long, default_value = "warn")]
    proxy_log: String,
}

// ----- the stream -----

/// Stream pattern: `offset mod 255`, so it never holds IAC and telnet passes it unescaped.
fn stream_byte(offset: u64) -> u8 {
    (offset % 255) as u8
}

/// One chunk of the stream: a whole number of periods, so every chunk is the same.
const STREAM_CHUNK: usize = 255 * 256;

/// How far the stream writer may run ahead of its slowest client.
const STREAM_WINDOW: u64 = 8 << 20;

/// A VM writing `total` stream bytes as fast as it can to `clients` clients, each verifying
/// every byte. Returns MB/s per client (slowest) and whether every byte was right.
async fn stream(proxy: &ProxyProc, n: u64, clients: usize, total: u64) -> Option<(f64, bool)> {
    // One VM on the emulator's driver; the guest writes the stream to its serial port.
    let (tx, mut events) = mpsc::channel(driver::VM_EVENTS);
    let vm = Spawner::new(target(proxy.vm, 1))
        .events(tx)
        .without_client_data()
        .spawn(n, fleet_config(n));
    let identified = async {
        while let Some(event) = events.recv().await {
            if matches!(
                event.kind,
                EventKind::Emulator(EmulatorEvent::ProxyAnswered { accepted: true, .. })
            ) {
                return Some(());
            }
        }
        None
    };
    tokio::time::timeout(Duration::from_secs(10), identified)
        .await
        .ok()??;
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(events);
    let name = VmIdentity::numbered(n).name;
    let mut readers = Vec::new();
    // The writer keeps at most STREAM_WINDOW ahead of the slowest client: the proxy drops a
    // client whose queue passes its output budget (by design: a slow client never stalls the
    // VM), so an unpaced writer measures the drop, not the throughput.
    let progress: Vec<Arc<std::sync::atomic::AtomicU64>> = (0..clients)
        .map(|_| Arc::new(std::sync::atomic::AtomicU64::new(0)))
        .collect();
    let advanced = Arc::new(tokio::sync::Notify::new());
    for client in 0..clients {
        let (mut stream, mut telnet, mut first) = attach(proxy.client, &name).await?;
        let (progress, advanced) = (progress[client].clone(), advanced.clone());
        readers.push(tokio::spawn(async move {
            let mut expected: Vec<u8> = (0..STREAM_CHUNK as u64 + 255 * 2)
                .map(stream_byte)
                .collect();
            expected.truncate(STREAM_CHUNK + 255);
            let mut offset = 0u64;
            let mut ok = true;
            let check = |data: &[u8], offset: &mut u64, ok: &mut bool| {
                for piece in data.chunks(STREAM_CHUNK) {
                    let at = (*offset % 255) as usize;
                    *ok &= expected[at..at + piece.len()] == *piece;
                    *offset += piece.len() as u64;
                }
            };
            check(&first, &mut offset, &mut ok);
            first.clear();
            let mut buf = vec![0u8; 256 * 1024];
            while offset < total && ok {
                let len = match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(len) => len,
                };
                let mut input = &buf[..len];
                while let Some(event) = telnet.next_event(&mut input) {
                    if let TelnetEvent::Data(bytes) = event {
                        check(bytes, &mut offset, &mut ok);
                    }
                }
                progress.store(offset, Ordering::Relaxed);
                advanced.notify_one();
            }
            progress.store(u64::MAX, Ordering::Relaxed);
            advanced.notify_one();
            if offset != total || !ok {
                eprintln!("stream client: {offset} of {total} bytes, pattern ok: {ok}");
            }
            (Instant::now(), offset == total && ok)
        }));
    }
    let chunk: Vec<u8> = (0..STREAM_CHUNK as u64).map(stream_byte).collect();
    let start = Instant::now();
    let mut written = 0u64;
    while written < total {
        loop {
            let wait = advanced.notified();
            let slowest = progress
                .iter()
                .map(|p| p.load(Ordering::Relaxed))
                .min()
                .unwrap_or(u64::MAX);
            if written.saturating_sub(slowest) <= STREAM_WINDOW {
                break;
            }
            if tokio::time::timeout(WAIT, wait).await.is_err() {
                return None;
            }
        }
        let len = (total - written).min(chunk.len() as u64) as usize;
        vm.write(&chunk[..len]).ok()?;
        written += len as u64;
    }
    let mut slowest = start;
    let mut all_ok = true;
    for reader in readers {
        let (done, ok) = tokio::time::timeout(WAIT, reader).await.ok()?.ok()?;
        slowest = slowest.max(done);
        all_ok &= ok;
    }
    vm.stop().await;
    let secs = slowest.duration_since(start).as_secs_f64();
    Some((total as f64 / secs / 1e6, all_ok))
}

// ----- one fleet size -----

#[derive(Debug, Default, Clone)]
struct Row {
    vms: u64,
    held: u64,
    handshakes_per_sec: f64,
    goahead_idle: (f64, f64),
    goahead_busy: (f64, f64),
    busy_samples: usize,
    /// Handshakes per second the burst completed while GOAHEAD was sampled.
    busy_handshakes_per_sec: f64,
    vmotions_per_sec: f64,
    vmotions_completed: u64,
    verified: String,
    rss_per_vm: f64,
    stream_mbps: f64,
    fanout_mbps: f64,
    stream_ok: bool,
    errors: u64,
}

/// VMs that only sample GOAHEAD (one vMotion at a time, spread over them), on a runtime of
/// their own thread: the wake-up of the VM that reads GOAHEAD then never waits behind the
/// fleet's 10,000 tasks or the burst's (p50 idle 0.055-0.07 -> 0.045-0.063 ms).
const PROBES: u64 = 16;

/// Runs the calling thread at SCHED_IDLE: the load generator of the GOAHEAD-under-load
/// figure. On a 2-core machine a CPU-bound generator (its `connect` calls carry the kernel's
/// loopback work) otherwise delays the sampling VMs' own wake-ups by a scheduler slice, and
/// the figure would time this process's run queue, not the proxy's answer. The proxy runs at
/// normal priority and does all of its share of the handshakes; the generator gets every cycle
/// nobody else wants, and its achieved rate is reported beside the latency.
fn idle_priority() {
    use thread_priority::{
        set_thread_priority_and_policy, thread_native_id, NormalThreadSchedulePolicy,
        ThreadPriority, ThreadSchedulePolicy,
    };
    let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
    if let Err(error) =
        set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Min, idle)
    {
        eprintln!("cannot run the load generator at SCHED_IDLE: {error:?}");
    }
}

/// Sequential vMotions on held VMs (spread over the fleet) until `count` or `stop`.
async fn sample_goahead(
    fleet: &Fleet,
    count: usize,
    stop: Option<&AtomicBool>,
    seq: &mut u32,
    offset: usize,
) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(count);
    let stride = (fleet.len() / count.max(1)).max(1);
    for i in 0..count {
        if stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
            break;
        }
        *seq += 1;
        let at = (i * stride + 7 + offset) % fleet.len();
        if let Motion {
            goahead: Some(latency),
            completed: true,
            ..
        } = fleet.vmotion(at, *seq, None).await
        {
            samples.push(latency);
        }
    }
    samples.sort();
    samples
}

async fn run_size(cli: &Cli, n: u64) -> Result<Row, String> {
    let proxy = spawn_proxy(cli.proxy.as_deref(), &cli.proxy_log, "")?;
    let pid = proxy.pid();
    let mut row = Row {
        vms: n,
        ..Row::default()
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss0 = rss(pid);

    // Handshakes: all at once, until the proxy lists every VM.
    let start = Instant::now();
    let admin = proxy.admin;
    let watch = tokio::spawn(async move {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if metric(admin, "vspc_vms_connected").await >= Some(n) {
                return Some(Instant::now());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        None
    });
    let fleet = Fleet::start(0, n, proxy.vm, cli.connecting).await;
    let listed = watch.await.ok().flatten();
    row.held = metric(proxy.admin, "vspc_vms_connected").await.unwrap_or(0);
    if let Some(done) = listed {
        row.handshakes_per_sec = n as f64 / done.duration_since(start).as_secs_f64();
    }

    // Memory: idle VMs.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let rss1 = rss(pid);
    row.rss_per_vm = rss1.saturating_sub(rss0) as f64 / n as f64;

    // GOAHEAD: idle, then while a burst handshakes.
    let fleet = Arc::new(fleet);
    eprintln!("  GOAHEAD, idle");
    let burst_done = Arc::new(AtomicBool::new(false));
    let (idle_tx, idle_rx) = std::sync::mpsc::channel::<Vec<Duration>>();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let probes = {
        let (addr, done, samples) = (proxy.vm, burst_done.clone(), cli.samples);
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async move {
                let probes = Fleet::start(3_000_000, PROBES, addr, PROBES as usize).await;
                let mut seq = 0u32;
                let idle = sample_goahead(&probes, samples, None, &mut seq, 0).await;
                idle_tx.send(idle).ok()?;
                tokio::task::spawn_blocking(move || go_rx.recv_timeout(WAIT).ok())
                    .await
                    .ok()??;
                let busy = sample_goahead(&probes, samples, Some(&done), &mut seq, 0).await;
                let errors = probes.stop().await;
                Some((busy, errors))
            })
        })
    };
    let idle = tokio::task::spawn_blocking(move || idle_rx.recv_timeout(WAIT).unwrap_or_default())
        .await
        .unwrap_or_default();
    row.goahead_idle = (percentile(&idle, 0.5), percentile(&idle, 0.99));
    // The burst runs on a runtime of its own, at SCHED_IDLE (see `idle_priority`): in the
    // probes' runtime, a VM that read GOAHEAD would wait its turn behind thousands of
    // handshaking tasks, and the figure would be the bench's queue, not the proxy's answer.
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let burst = {
        let done = burst_done.clone();
        let (addr, connecting, count) = (proxy.vm, cli.connecting, cli.burst);
        let burst_threads = cli.burst_threads.max(1);
        std::thread::spawn(move || {
            idle_priority();
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(burst_threads)
                .on_thread_start(idle_priority)
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async move {
                let started = Instant::now();
                let fleet = Fleet::start(1_000_000, count, addr, connecting).await;
                let rate = count as f64 / started.elapsed().as_secs_f64();
                done.store(true, Ordering::Relaxed);
                let _ = tokio::task::spawn_blocking(move || release_rx.recv_timeout(WAIT)).await;
                Some((fleet.stop().await, rate))
            })
        })
    };
    eprintln!("  GOAHEAD, {} handshaking", cli.burst);
    // The probes sample one vMotion at a time, as when idle: 16 samplers side by side
    // measured their own 16 concurrent vMotions (each with its destination's handshake) more
    // than the burst (p50 0.5-0.8 ms against 0.06 ms alone).
    let _ = go_tx.send(());
    let busy = match tokio::task::spawn_blocking(move || probes.join().ok().flatten())
        .await
        .ok()
        .flatten()
    {
        Some((samples, errors)) => {
            row.errors += errors;
            samples
        }
        None => {
            row.errors += 1;
            Vec::new()
        }
    };
    row.busy_samples = busy.len();
    row.goahead_busy = (percentile(&busy, 0.5), percentile(&busy, 0.99));
    let _ = release_tx.send(());
    match tokio::task::spawn_blocking(move || burst.join().ok().flatten())
        .await
        .ok()
        .flatten()
    {
        Some((errors, rate)) => {
            row.errors += errors;
            row.busy_handshakes_per_sec = rate;
        }
        None => row.errors += 1,
    }

    eprintln!("  vMotions");
    // vMotions: all at once, clients typing before, during and after.
    let typists_wanted = n.min(100);
    let mut typists = Vec::new();
    for vm in 0..typists_wanted {
        if let Some(typist) = Typist::new(proxy.client, vm).await {
            typists.push((vm as usize, typist));
        }
    }
    for (_, typist) in &mut typists {
        typist.type_chunk(1000).await;
    }
    let start = Instant::now();
    let mut motions = Vec::new();
    // A vMotion holds two connections (two descriptors on each side) until it completes:
    // bound how many run at once so both processes stay under their descriptor limit.
    let in_flight = Arc::new(Semaphore::new(cli.vmotions_in_flight));
    for at in 0..n as usize {
        let (fleet, in_flight) = (fleet.clone(), in_flight.clone());
        motions.push(tokio::spawn(async move {
            let _permit = in_flight.acquire_owned().await;
            fleet.vmotion(at, 1 << 30, None).await
        }));
    }
    for (_, typist) in &mut typists {
        typist.type_chunk(1000).await;
    }
    let mut completed = 0;
    for motion in motions {
        if matches!(
            motion.await,
            Ok(Motion {
                completed: true,
                ..
            })
        ) {
            completed += 1;
        }
    }
    row.vmotions_per_sec = completed as f64 / start.elapsed().as_secs_f64();
    row.vmotions_completed = completed;
    for (_, typist) in &mut typists {
        typist.type_chunk(1000).await;
    }
    let (exact, lost) = verify(&fleet, &typists).await;
    row.verified = format!("{exact}/{} exact, {lost} B lost", typists_wanted);
    drop(typists);

    eprintln!("  streams");
    // Streams, with the fleet still held.
    let total = cli.stream_mib << 20;
    if let Some((mbps, ok)) = stream(&proxy, 2_000_000, 1, total).await {
        row.stream_mbps = mbps;
        row.stream_ok = ok;
    }
    if let Some((mbps, ok)) = stream(&proxy, 2_000_001, cli.fanout, total / 4).await {
        row.fanout_mbps = mbps;
        row.stream_ok &= ok;
    }

    match Arc::try_unwrap(fleet) {
        Ok(fleet) => row.errors += fleet.stop().await,
        Err(_) => row.errors += 1,
    }
    drop(proxy);
    Ok(row)
}

fn print_table(cli: &Cli, rows: &[Row]) {
    let mut header = format!("{:<34}", "figure");
    for row in rows {
        header += &format!(" | {:>22}", format!("{} VMs", row.vms));
    }
    header += &format!(" | {:>14} | {:>14}", "target", "vSPC.py 0.8.2");
    println!("{header}");
    println!("{}", "-".repeat(header.len()));
    let line = |name: &str, cell: &dyn Fn(&Row) -> String, target: &str, python: &str| {
        let mut out = format!("{name:<34}");
        for row in rows {
            out += &format!(" | {:>22}", cell(row));
        }
        out += &format!(" | {target:>14} | {python:>14}");
        println!("{out}");
    };
    line(
        "VMs held (identified)",
        &|r| format!("{}/{}", r.held, r.vms),
        "10,000",
        "4,000",
    );
    line(
        "handshakes/s (burst of N)",
        &|r| format!("{:.0}", r.handshakes_per_sec),
        "5,000",
        "~700",
    );
    line(
        "GOAHEAD p50/p99 ms, idle",
        &|r| format!("{:.3}/{:.3}", r.goahead_idle.0, r.goahead_idle.1),
        "",
        "p99 0.4",
    );
    line(
        &format!("GOAHEAD p50/p99 ms, {} handshaking", cli.burst),
        &|r| {
            format!(
                "{:.3}/{:.3} (n={})",
                r.goahead_busy.0, r.goahead_busy.1, r.busy_samples
            )
        },
        "p99 < 0.25",
        "",
    );
    line(
        "  the burst's handshakes/s meanwhile",
        &|r| format!("{:.0}", r.busy_handshakes_per_sec),
        "",
        "",
    );
    line(
        &format!("vMotions/s (N, {} at once)", cli.vmotions_in_flight),
        &|r| {
            format!(
                "{:.0} ({}/{})",
                r.vmotions_per_sec, r.vmotions_completed, r.vms
            )
        },
        "2,000",
        "~400",
    );
    line(
        "vMotion bytes verified (clients)",
        &|r| r.verified.clone(),
        "zero loss",
        "",
    );
    line(
        "proxy RSS per idle VM, bytes",
        &|r| format!("{:.0}", r.rss_per_vm),
        "< 2,048",
        "2,970",
    );
    line(
        "stream VM->1 client, MB/s",
        &|r| format!("{:.0}", r.stream_mbps),
        "1,000",
        "",
    );
    line(
        &format!("fan-out VM->{} clients, MB/s each", cli.fanout),
        &|r| format!("{:.0}", r.fanout_mbps),
        "",
        "",
    );
    line(
        "streams byte-exact / VM errors",
        &|r| format!("{} / {}", if r.stream_ok { "yes" } else { "NO" }, r.errors),
        "yes / 0",
        "",
    );
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => eprintln!("RLIMIT_NOFILE {limit}"),
        Err(error) => eprintln!("cannot raise RLIMIT_NOFILE: {error}"),
    }
    let mut rows = Vec::new();
    for &n in &cli.vms {
        eprintln!("{n} VMs ...");
        match run_size(&cli, n).await {
            Ok(row) => {
                eprintln!("{row:?}");
                rows.push(row);
            }
            Err(error) => {
                eprintln!("scale: {error}");
                return std::process::ExitCode::FAILURE;
            }
        }
    }
    print_table(&cli, &rows);
    std::process::ExitCode::SUCCESS
}
