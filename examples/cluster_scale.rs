//! Scale benchmark of several concentrator instances sharing vMotions through one Redis
//! (docs/cluster.md), beside one instance with the in-memory backend for comparison.
//!
//! ```text
//! cargo build --release --examples
//! target/release/examples/cluster_scale --instances 4 --vms-per-instance 10000
//! ```
//!
//! This process is the conductor: it starts its own `redis-server` (loopback, no persistence),
//! `--instances` example proxies sharing it, and generator workers (this program again, with a
//! hidden `--worker` flag), each driving up to `--vms-per-worker` emulated VMs of one
//! instance, so that no process needs more descriptors than one machine's limit allows. Then,
//! for the cluster and for one in-memory instance:
//! - handshakes/s: every VM connects at once, wall time until the instances' admin `/metrics`
//!   list them all;
//! - proxy RSS per idle VM: the proxies' VmRSS growth over the VMs; Redis commands per second
//!   while the VMs idle (by name, from `INFO commandstats`);
//! - GOAHEAD and handover p50/p99, one vMotion at a time in the whole system: on the VM side,
//!   from writing VMOTION-BEGIN to reading GOAHEAD, and to reading PEER-OK on the destination
//!   connection (the vMotion completed); local and cross-instance handovers apart;
//! - the vMotion phase: every VM (or `--vmotion-share` of them, and every VM a client types
//!   to) vMotions once (at most `--vmotions-in-flight` at once), half
//!   of them with their destination host connecting to another instance (which carries it to
//!   the instance holding the VM); every one must complete, and clients typing to a sample of
//!   VMs before, during and after must arrive byte for byte; Redis commands per vMotion (the
//!   `INFO commandstats` delta over the phase, by name).
//!
//! Exits non-zero, with the reason, if a vMotion fails, a typed byte is lost or a VM is not
//! held.
#![forbid(unsafe_code)]
// A load generator timing the proxies: reading the clock is its job.
#![allow(clippy::disallowed_methods)]

#[path = "support/redis.rs"]
mod redis;
mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use redis::{delta, per, Calls, Redis};
use serde::{Deserialize, Serialize};
use support::fleet::{target, verify, Fleet, Typist};
use support::proxy::{metric, percentile, rss, spawn_proxy, ProxyProc};
use support::WAIT;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::sync::Semaphore;
use vspc_emulator::driver::Target;

/// How long a worker may take over one phase (a whole fleet's vMotions on a busy machine).
const PHASE: Duration = Duration::from_secs(600);

/// How long the instances' idle background is counted (lease renewals come every third of a
/// lease, 10 s by default: a few rounds of each instance).
const IDLE: Duration = Duration::from_secs(10);

/// Descriptors each process may hold (raised to this when the process may).
const NOFILE: u64 = 65_536;

#[derive(Debug, Parser)]
#[command(about = "Scale benchmark of vSPC concentrator instances sharing vMotions through Redis")]
struct Cli {
    /// Instances sharing one Redis.
    #[arg(long, default_value_t = 4)]
    instances: usize,
    /// Emulated VMs connected to each instance.
    #[arg(long, default_value_t = 1000)]
    vms_per_instance: u64,
    /// At most this many VMs per generator process.
    #[arg(long, default_value_t = 5000)]
    vms_per_worker: u64,
    /// GOAHEAD/handover samples, one vMotion at a time (each run).
    #[arg(long, default_value_t = 400)]
    samples: usize,
    /// vMotions in flight at once in the vMotion phase, over all workers (more only queue in
    /// the instances, past the store's bound on a command: docs/performance.md).
    #[arg(long, default_value_t = 400)]
    vmotions_in_flight: usize,
    /// The share of VMs that vMotion in the vMotion phase (every VM with a typing client
    /// does): below 1 when the instances' descriptors cannot hold every carried destination
    /// (each costs the instance it reached two descriptors while the VM stays).
    #[arg(long, default_value_t = 1.0)]
    vmotion_share: f64,
    /// Connects in flight at once, over all workers.
    #[arg(long, default_value_t = 512)]
    connecting: usize,
    /// Clients typing to VMs across the vMotions, over all workers.
    #[arg(long, default_value_t = 100)]
    typists: u64,
    /// Skip the comparison run (one instance, in-memory backend).
    #[arg(long)]
    no_comparison: bool,
    /// The proxy binary (default: `proxy` beside this one).
    #[arg(long)]
    proxy: Option<PathBuf>,
    /// The proxy's log filter.
    #[arg(long, default_value = "warn")]
    proxy_log: String,
    /// The Redis server binary.
    #[arg(long, default_value = "redis-server")]
    redis_server: PathBuf,
    /// Run as a generator worker (JSON spec; started by the conductor).
    #[arg(long, hide = true)]
    worker: Option<String>,
}

// ----- the worker: one process driving some VMs of one instance -----

/// What a worker drives.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct WorkerSpec {
    /// Its VMs are numbered `first..first + count` (unique across the run).
    first: u64,
    count: u64,
    /// The instance its VMs connect to.
    vm: SocketAddr,
    /// The same instance's client port (the typists attach there).
    client: SocketAddr,
    /// The other instances' VM listeners: odd-numbered VMs vMotion to one of them.
    peers: Vec<SocketAddr>,
    connecting: usize,
    in_flight: usize,
    typists: u64,
    vmotion_share: f64,
}

impl WorkerSpec {
    /// Whether the VM at `at` vMotions in the vMotion phase: VMs go in pairs (one local, one
    /// crossing), spread evenly at `vmotion_share`.
    fn moves(&self, at: usize) -> bool {
        let pair = (at / 2) as f64;
        (self.vmotion_share * (pair + 1.0)).floor() > (self.vmotion_share * pair).floor()
    }

    /// Where VM `n`'s destination host connects: another instance for half of the VMs (spread
    /// over the peers), else its own.
    fn destination(&self, n: u64) -> Option<usize> {
        (n % 2 == 1 && !self.peers.is_empty()).then(|| (n / 2) as usize % self.peers.len())
    }
}

/// Latencies in microseconds.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Timings {
    goahead: Vec<u64>,
    local: Vec<u64>,
    cross: Vec<u64>,
}

impl Timings {
    fn add(&mut self, cross: bool, goahead: Option<Duration>, handover: Option<Duration>) {
        let us = |d: Duration| d.as_micros() as u64;
        self.goahead.extend(goahead.map(us));
        let list = if cross {
            &mut self.cross
        } else {
            &mut self.local
        };
        list.extend(handover.map(us));
    }

    fn merge(&mut self, other: Timings) {
        self.goahead.extend(other.goahead);
        self.local.extend(other.local);
        self.cross.extend(other.cross);
    }

    /// `p50/p99` in ms of one list.
    fn p50_p99(list: &[u64]) -> String {
        if list.is_empty() {
            return "-".into();
        }
        let mut sorted: Vec<Duration> = list.iter().map(|&us| Duration::from_micros(us)).collect();
        sorted.sort();
        format!(
            "{:.3}/{:.3} (n={})",
            percentile(&sorted, 0.5),
            percentile(&sorted, 0.99),
            sorted.len()
        )
    }
}

/// What a worker did in the vMotion phase.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Moved {
    /// vMotions started.
    attempted: u64,
    failed: u64,
    /// From the first vMotion command to the last outcome.
    secs: f64,
    /// Of the completed vMotions (one handover each).
    timings: Timings,
    typists: u64,
    exact: u64,
    lost: u64,
}

impl Moved {
    fn completed(&self) -> u64 {
        (self.timings.local.len() + self.timings.cross.len()) as u64
    }

    fn cross_completed(&self) -> u64 {
        self.timings.cross.len() as u64
    }
}

/// A worker's answer to a command, one JSON line on its stdout.
#[derive(Debug, Serialize, Deserialize)]
enum Reply {
    Ready,
    Connected,
    Sampled(Timings),
    Attached,
    Moved(Moved),
    Stopped { errors: u64 },
}

fn say(reply: &Reply) {
    println!("{}", serde_json::to_string(reply).unwrap_or_default());
}

async fn worker(spec: WorkerSpec) -> Result<(), String> {
    let peers: Vec<Target> = spec
        .peers
        .iter()
        .map(|&peer| target(peer, spec.connecting))
        .collect();
    let mut commands = BufReader::new(tokio::io::stdin()).lines();
    let mut fleet: Option<Arc<Fleet>> = None;
    let mut typists: Vec<(usize, Typist)> = Vec::new();
    let mut sequence = 0u32;
    say(&Reply::Ready);
    while let Some(line) = commands.next_line().await.map_err(|e| e.to_string())? {
        let mut words = line.split_whitespace();
        let command = words.next().unwrap_or_default();
        if command == "connect" {
            let started = Fleet::start(spec.first, spec.count, spec.vm, spec.connecting).await;
            fleet = Some(Arc::new(started));
            say(&Reply::Connected);
            continue;
        }
        let fleet = fleet.as_ref().ok_or("no fleet yet")?;
        let destination = |at: usize| {
            let n = spec.first + at as u64;
            spec.destination(n).map(|peer| peers[peer].clone())
        };
        match command {
            "sample" => {
                // One vMotion at a time, alternately local and cross-instance.
                let count: usize = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
                let stride = (fleet.len() / count.max(1)).max(1);
                let mut timings = Timings::default();
                for i in 0..count {
                    let mut at = (i * stride + 7) % fleet.len();
                    if (spec.first + at as u64) % 2 != i as u64 % 2 {
                        at = (at + 1) % fleet.len();
                    }
                    sequence += 1;
                    let to = destination(at);
                    let cross = to.is_some();
                    let motion = fleet.vmotion(at, sequence, to).await;
                    if motion.completed {
                        timings.add(cross, motion.goahead, motion.handover);
                    }
                }
                say(&Reply::Sampled(timings));
            }
            "attach" => {
                let stride = (fleet.len() as u64 / spec.typists.max(1)).max(1) as usize;
                for at in (0..fleet.len()).step_by(stride).take(spec.typists as usize) {
                    let n = spec.first + at as u64;
                    let mut typist = Typist::new(spec.client, n)
                        .await
                        .ok_or_else(|| format!("a client could not attach to VM {n}"))?;
                    typist.type_chunk(1000).await;
                    typists.push((at, typist));
                }
                say(&Reply::Attached);
            }
            "vmotion" => {
                let mut moved = Moved::default();
                let in_flight = Arc::new(Semaphore::new(spec.in_flight.max(1)));
                let start = Instant::now();
                let mut motions = Vec::new();
                let typed: Vec<usize> = typists.iter().map(|(at, _)| *at).collect();
                for at in 0..fleet.len() {
                    if !spec.moves(at) && !typed.contains(&at) {
                        continue;
                    }
                    moved.attempted += 1;
                    let (fleet, in_flight, to) =
                        (fleet.clone(), in_flight.clone(), destination(at));
                    motions.push(tokio::spawn(async move {
                        let _permit = in_flight.acquire_owned().await;
                        let cross = to.is_some();
                        (cross, fleet.vmotion(at, 1 << 30, to).await)
                    }));
                }
                for (_, typist) in &mut typists {
                    typist.type_chunk(1000).await;
                }
                for motion in motions {
                    match motion.await {
                        Ok((cross, motion)) if motion.completed => {
                            moved.timings.add(cross, motion.goahead, motion.handover);
                        }
                        _ => moved.failed += 1,
                    }
                }
                moved.secs = start.elapsed().as_secs_f64();
                for (_, typist) in &mut typists {
                    typist.type_chunk(1000).await;
                }
                let (exact, lost) = verify(fleet, &typists).await;
                (moved.typists, moved.exact, moved.lost) =
                    (typists.len() as u64, exact as u64, lost);
                say(&Reply::Moved(moved));
            }
            "stop" => break,
            other => return Err(format!("unknown command {other:?}")),
        }
    }
    typists.clear();
    let errors = match fleet.map(Arc::try_unwrap) {
        Some(Ok(fleet)) => fleet.stop().await,
        _ => 1,
    };
    say(&Reply::Stopped { errors });
    Ok(())
}

/// A worker process, as the conductor sees it.
struct Worker {
    child: Child,
    stdin: ChildStdin,
    replies: Lines<BufReader<ChildStdout>>,
}

impl Worker {
    async fn spawn(spec: &WorkerSpec) -> Result<Worker, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut child = tokio::process::Command::new(exe)
            .arg("--worker")
            .arg(serde_json::to_string(spec).map_err(|e| e.to_string())?)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start a worker: {e}"))?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut worker = Worker {
            child,
            stdin,
            replies: BufReader::new(stdout).lines(),
        };
        worker.reply().await?;
        Ok(worker)
    }

    async fn send(&mut self, command: &str) -> Result<(), String> {
        let line = format!("{command}\n");
        self.stdin
            .write_all(line.as_bytes())
            .await
            .map_err(|e| format!("a worker is gone: {e}"))
    }

    async fn reply(&mut self) -> Result<Reply, String> {
        let line = tokio::time::timeout(PHASE, self.replies.next_line())
            .await
            .map_err(|_| "a worker did not answer in time".to_string())?
            .map_err(|e| e.to_string())?
            .ok_or("a worker exited early")?;
        serde_json::from_str(&line).map_err(|e| format!("a worker said {line:?}: {e}"))
    }
}

/// Sends `command` to every worker, then collects their replies in order.
async fn all(workers: &mut [Worker], command: &str) -> Result<Vec<Reply>, String> {
    for worker in workers.iter_mut() {
        worker.send(command).await?;
    }
    let mut replies = Vec::new();
    for worker in workers.iter_mut() {
        replies.push(worker.reply().await?);
    }
    Ok(replies)
}

// ----- one run -----

/// The figures of one run.
#[derive(Debug, Default)]
struct Column {
    title: String,
    vms: u64,
    held: u64,
    handshakes_per_sec: f64,
    rss_per_vm: f64,
    /// Redis commands over a phase, and its seconds: idle, one at a time, all VMs.
    idle_calls: Option<(Calls, f64)>,
    sampled: Timings,
    sampled_calls: Option<(Calls, f64)>,
    moved: Moved,
    /// Seconds of the vMotion phase (the slowest worker's).
    moved_secs: f64,
    vmotion_calls: Option<(Calls, f64)>,
    carried: u64,
    /// The instances' other shared-vMotion counters over the run: unshared GOAHEADs, refused
    /// PEERs, PEERs refused for want of the store.
    not_shared: [u64; 3],
    held_after: u64,
    errors: u64,
    /// Why the run failed, if it did.
    problems: Vec<String>,
}

/// Sum of one metric over the instances.
async fn total(proxies: &[ProxyProc], name: &str) -> u64 {
    let mut sum = 0;
    for proxy in proxies {
        sum += metric(proxy.admin, name).await.unwrap_or(0);
    }
    sum
}

async fn run(cli: &Cli, instances: usize, redis: Option<&Redis>) -> Result<Column, String> {
    let vms = cli.vms_per_instance * instances as u64;
    let mut column = Column {
        title: match redis {
            Some(_) => format!("{instances} instances, Redis"),
            None => format!("{instances} instance, in memory"),
        },
        vms,
        ..Column::default()
    };
    let extra = redis.map_or(String::new(), |redis| {
        format!("[cluster]\nredis_url = \"redis://{}/0\"\n", redis.addr)
    });
    // Each instance holds its own VMs' connections and, after the vMotions, relays the
    // destinations that reached it for other instances' VMs (two descriptors each, for as
    // long as the VM stays: docs/cluster.md): with half of the vMotions crossing, evenly
    // spread, half as many as its own VMs that vMotion.
    let moving = (cli.vms_per_instance as f64 * cli.vmotion_share.clamp(0.0, 1.0)) as u64;
    let needed = cli.vms_per_instance + moving + 100;
    let limit = rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(0, |(soft, _)| soft);
    if redis.is_some() && instances > 1 && needed > limit {
        eprintln!(
            "  warning: after the vMotions each instance may hold about {needed} descriptors, \
             over this machine's limit of {limit} (a lower --vmotion-share needs fewer)"
        );
    }
    let mut proxies = Vec::new();
    for _ in 0..instances {
        proxies.push(spawn_proxy(cli.proxy.as_deref(), &cli.proxy_log, &extra)?);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss0: u64 = proxies.iter().map(|p| rss(p.pid())).sum();

    let per_instance = cli
        .vms_per_instance
        .div_ceil(cli.vms_per_worker.max(1))
        .max(1);
    let count = per_instance * instances as u64;
    let mut workers = Vec::new();
    for (i, proxy) in proxies.iter().enumerate() {
        let first_of_instance = i as u64 * cli.vms_per_instance;
        for w in 0..per_instance {
            let first = w * cli.vms_per_worker;
            let spec = WorkerSpec {
                first: first_of_instance + first,
                count: cli.vms_per_worker.min(cli.vms_per_instance - first),
                vm: proxy.vm,
                client: proxy.client,
                peers: (proxies.iter().enumerate())
                    .filter(|&(j, _)| j != i)
                    .map(|(_, p)| p.vm)
                    .collect(),
                connecting: (cli.connecting / count as usize).max(16),
                in_flight: cli.vmotions_in_flight / count as usize,
                typists: cli.typists.div_ceil(count),
                vmotion_share: cli.vmotion_share.clamp(0.0, 1.0),
            };
            workers.push(Worker::spawn(&spec).await?);
        }
    }

    eprintln!("  {vms} VMs connecting to {instances} instance(s)");
    let start = Instant::now();
    for worker in &mut workers {
        worker.send("connect").await?;
    }
    while total(&proxies, "vspc_vms_connected").await < vms && start.elapsed() < PHASE {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    column.handshakes_per_sec = vms as f64 / start.elapsed().as_secs_f64();
    for worker in &mut workers {
        worker.reply().await?;
    }
    column.held = total(&proxies, "vspc_vms_connected").await;

    eprintln!("  idle");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = redis_calls(redis).await?;
    tokio::time::sleep(IDLE).await;
    let rss1: u64 = proxies.iter().map(|p| rss(p.pid())).sum();
    column.rss_per_vm = rss1.saturating_sub(rss0) as f64 / vms as f64;
    column.idle_calls = delta_of(before, redis).await?;

    eprintln!("  GOAHEAD and handover, one at a time");
    let each = cli.samples.div_ceil(workers.len());
    let before = redis_calls(redis).await?;
    for worker in &mut workers {
        worker.send(&format!("sample {each}")).await?;
        if let Reply::Sampled(timings) = worker.reply().await? {
            column.sampled.merge(timings);
        }
    }
    column.sampled_calls = delta_of(before, redis).await?;

    eprintln!("  the VMs vMotion");
    all(&mut workers, "attach").await?;
    let carried0 = total(&proxies, "vspc_shared_vmotions_total{event=\"carried\"}").await;
    let before = redis_calls(redis).await?;
    for reply in all(&mut workers, "vmotion").await? {
        if let Reply::Moved(moved) = reply {
            let sum = &mut column.moved;
            sum.attempted += moved.attempted;
            sum.failed += moved.failed;
            sum.typists += moved.typists;
            sum.exact += moved.exact;
            sum.lost += moved.lost;
            sum.timings.merge(moved.timings);
            column.moved_secs = column.moved_secs.max(moved.secs);
        }
    }
    column.vmotion_calls = delta_of(before, redis).await?;
    column.carried =
        total(&proxies, "vspc_shared_vmotions_total{event=\"carried\"}").await - carried0;
    column.held_after = total(&proxies, "vspc_vms_connected").await;
    for (i, event) in ["unshared", "refused", "store_unavailable"]
        .iter()
        .enumerate()
    {
        let name = format!("vspc_shared_vmotions_total{{event=\"{event}\"}}");
        column.not_shared[i] = total(&proxies, &name).await;
    }

    for reply in all(&mut workers, "stop").await? {
        if let Reply::Stopped { errors } = reply {
            column.errors += errors;
        }
    }
    for mut worker in workers {
        let _ = tokio::time::timeout(WAIT, worker.child.wait()).await;
    }
    drop(proxies);

    let moved = &column.moved;
    let mut problems = Vec::new();
    if column.held < vms || column.held_after < vms {
        problems.push(format!(
            "VMs held {} before and {} after the vMotions, of {vms}",
            column.held, column.held_after
        ));
    }
    if moved.failed > 0 || moved.completed() < moved.attempted || moved.attempted == 0 {
        problems.push(format!(
            "{} vMotions of {} completed, {} failed",
            moved.completed(),
            moved.attempted,
            moved.failed
        ));
    }
    if moved.exact < moved.typists || moved.lost > 0 || moved.typists == 0 {
        problems.push(format!(
            "typed bytes: {}/{} VMs received them exactly, {} B lost",
            moved.exact, moved.typists, moved.lost
        ));
    }
    if redis.is_some() && column.carried != moved.cross_completed() {
        problems.push(format!(
            "the instances carried {} destinations, {} vMotions crossed",
            column.carried,
            moved.cross_completed()
        ));
    }
    column.problems = problems;
    Ok(column)
}

/// Redis's command counts now (none without Redis), and when.
async fn redis_calls(redis: Option<&Redis>) -> Result<(Calls, Instant), String> {
    let calls = match redis {
        Some(redis) => redis.calls().await?,
        None => Calls::new(),
    };
    Ok((calls, Instant::now()))
}

/// The commands since `before`, and the seconds since.
async fn delta_of(
    before: (Calls, Instant),
    redis: Option<&Redis>,
) -> Result<Option<(Calls, f64)>, String> {
    match redis {
        Some(redis) => {
            let after = redis.calls().await?;
            Ok(Some((
                delta(&before.0, &after),
                before.1.elapsed().as_secs_f64(),
            )))
        }
        None => Ok(None),
    }
}

// ----- the table -----

fn print_table(cli: &Cli, columns: &[Column]) {
    let mut header = format!("{:<44}", "figure");
    for column in columns {
        header += &format!(" | {:>50}", column.title);
    }
    println!("{header}");
    println!("{}", "-".repeat(header.len()));
    let line = |name: &str, cell: &dyn Fn(&Column) -> String| {
        let mut out = format!("{name:<44}");
        for column in columns {
            out += &format!(" | {:>50}", cell(column));
        }
        println!("{out}");
    };
    // A phase's commands by name, each divided by `by`.
    let redis = |phase: &Option<(Calls, f64)>, by: f64| {
        phase
            .as_ref()
            .map_or("-".into(), |(calls, _)| per(calls, by))
    };
    line("VMs held (identified)", &|c| {
        format!("{}/{}", c.held, c.vms)
    });
    line("handshakes/s (all connect at once)", &|c| {
        format!("{:.0}", c.handshakes_per_sec)
    });
    line("proxy RSS per idle VM, bytes (all proxies)", &|c| {
        format!("{:.0}", c.rss_per_vm)
    });
    line(
        &format!("Redis commands/s, idle ({} s)", IDLE.as_secs()),
        &|c| {
            let secs = c.idle_calls.as_ref().map_or(1.0, |(_, secs)| *secs);
            redis(&c.idle_calls, secs)
        },
    );
    line("GOAHEAD p50/p99 ms, one at a time", &|c| {
        Timings::p50_p99(&c.sampled.goahead)
    });
    line("handover p50/p99 ms, one at a time, local", &|c| {
        Timings::p50_p99(&c.sampled.local)
    });
    line("  cross-instance", &|c| Timings::p50_p99(&c.sampled.cross));
    line("Redis commands per vMotion, one at a time", &|c| {
        let sampled = c.sampled.local.len() + c.sampled.cross.len();
        redis(&c.sampled_calls, sampled.max(1) as f64)
    });
    line(
        &format!("vMotions/s (all, {} in flight)", cli.vmotions_in_flight),
        &|c| {
            let m = &c.moved;
            format!(
                "{:.0} ({}/{})",
                m.completed() as f64 / c.moved_secs,
                m.completed(),
                m.attempted
            )
        },
    );
    line("  cross-instance vMotions/s", &|c| {
        let m = &c.moved;
        format!(
            "{:.0} ({})",
            m.cross_completed() as f64 / c.moved_secs,
            m.cross_completed()
        )
    });
    line("  GOAHEAD p50/p99 ms", &|c| {
        Timings::p50_p99(&c.moved.timings.goahead)
    });
    line("  handover p50/p99 ms, local", &|c| {
        Timings::p50_p99(&c.moved.timings.local)
    });
    line("  handover p50/p99 ms, cross-instance", &|c| {
        Timings::p50_p99(&c.moved.timings.cross)
    });
    line("  client bytes across them", &|c| {
        let m = &c.moved;
        format!("{}/{} exact, {} B lost", m.exact, m.typists, m.lost)
    });
    line("  Redis commands per vMotion", &|c| {
        redis(&c.vmotion_calls, c.moved.completed().max(1) as f64)
    });
    line("  destinations carried (metrics)", &|c| {
        c.carried.to_string()
    });
    line("  unshared / refused / store unavailable", &|c| {
        let [unshared, refused, unavailable] = c.not_shared;
        format!("{unshared} / {refused} / {unavailable}")
    });
    line("VMs held after / VM errors", &|c| {
        format!("{}/{} / {}", c.held_after, c.vms, c.errors)
    });
}

/// Raises this process's descriptor limit (its children inherit it): past the hard limit when
/// allowed (root), else up to it.
fn raise_nofile() {
    let raised = rlimit::setrlimit(rlimit::Resource::NOFILE, NOFILE, NOFILE)
        .map(|()| NOFILE)
        .or_else(|_| rlimit::increase_nofile_limit(NOFILE));
    match raised {
        Ok(limit) => eprintln!("RLIMIT_NOFILE {limit}"),
        Err(error) => eprintln!("cannot raise RLIMIT_NOFILE: {error}"),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(spec) = &cli.worker {
        let result = match serde_json::from_str::<WorkerSpec>(spec) {
            Ok(spec) => worker(spec).await,
            Err(error) => Err(format!("bad worker spec: {error}")),
        };
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("cluster_scale worker: {error}");
                ExitCode::FAILURE
            }
        };
    }
    if cli.instances == 0 || cli.vms_per_instance == 0 || cli.vms_per_worker == 0 {
        eprintln!(
            "cluster_scale: --instances, --vms-per-instance and --vms-per-worker must be > 0"
        );
        return ExitCode::FAILURE;
    }
    raise_nofile();
    let mut columns = Vec::new();
    let redis = match Redis::start(&cli.redis_server).await {
        Ok(redis) => redis,
        Err(error) => {
            eprintln!("cluster_scale: {error}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "{} instances sharing Redis at {} ...",
        cli.instances, redis.addr
    );
    let mut runs = vec![run(&cli, cli.instances, Some(&redis)).await];
    drop(redis);
    if !cli.no_comparison {
        eprintln!("1 instance, in-memory backend ...");
        runs.push(run(&cli, 1, None).await);
    }
    for result in runs {
        match result {
            Ok(column) => columns.push(column),
            Err(error) => {
                eprintln!("cluster_scale: {error}");
                return ExitCode::FAILURE;
            }
        }
    }
    print_table(&cli, &columns);
    let problems: Vec<String> = columns
        .iter()
        .flat_map(|c| c.problems.iter().map(move |p| format!("{}: {p}", c.title)))
        .collect();
    if problems.is_empty() {
        return ExitCode::SUCCESS;
    }
    for problem in problems {
        eprintln!("cluster_scale: FAILED: {problem}");
    }
    ExitCode::FAILURE
}
