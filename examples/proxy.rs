//! The vSPC concentrator: VMs connect on 127.0.0.1:13370 (telnet) and optionally telnets;
//! people and tools attach on 127.0.0.1:13371; `http://127.0.0.1:13372/vms` lists VMs and
//! `/metrics` serves Prometheus metrics; `--web 127.0.0.1:13373` adds the web console.
//!
//! ```text
//! cargo run --example proxy -- --help
//! ```
#![forbid(unsafe_code)]

/// jemalloc, as servers holding many connections tend to use: glibc's malloc gave back the
/// top of its heap after every freed 64 KiB read buffer and faulted the pages in again on
/// the next read (a single stream ran at 0.7-0.8 GB/s, 1.4-1.7 with jemalloc), and its
/// per-allocation headers cost idle VMs about 100 bytes each (`examples/scale.rs`).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use vspc_server::{Server, ServerConfig};

/// Command-line flags; each overrides the configuration file.
#[derive(Debug, Parser)]
#[command(
    name = "proxy",
    about = "VMware virtual serial port concentrator (vSPC)"
)]
struct Cli {
    /// TOML configuration file.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// VM telnet listener (repeatable; replaces the configured list).
    #[arg(long = "listen", value_name = "ADDR")]
    listen: Vec<SocketAddr>,
    /// VM telnets listener (repeatable; needs --cert and --key).
    #[arg(long = "tls-listen", value_name = "ADDR")]
    tls_listen: Vec<SocketAddr>,
    /// PEM certificate chain for telnets.
    #[arg(long)]
    cert: Option<PathBuf>,
    /// PEM private key for telnets.
    #[arg(long)]
    key: Option<PathBuf>,
    /// Client selection port.
    #[arg(long, value_name = "ADDR")]
    client_listen: Option<SocketAddr>,
    /// Admit VM connections only from this network (CIDR; repeatable; replaces vm.allow).
    #[arg(long = "vm-allow", value_name = "CIDR")]
    vm_allow: Vec<vspc_server::IpNet>,
    /// Give each VM a sticky client port.
    #[arg(long)]
    sticky_ports: bool,
    /// Admin (JSON + metrics) listener.
    #[arg(long, value_name = "ADDR")]
    admin_listen: Option<SocketAddr>,
    /// Disable the admin listener.
    #[arg(long)]
    no_admin: bool,
    /// Web console listener (a page of VM ports and a terminal per VM); its token is
    /// web.token from the configuration file, else made at start and printed.
    #[arg(long = "web", value_name = "ADDR")]
    web_listen: Option<SocketAddr>,
    /// Directory of console logs (one file per VM port).
    #[arg(long)]
    log_dir: Option<PathBuf>,
    /// Console log file name scheme ({name}, {uuid}, {label}, {id}).
    #[arg(long)]
    log_name: Option<String>,
    /// Console bytes reach the log file within this many milliseconds (default 100).
    #[arg(long, value_name = "MS")]
    log_flush_ms: Option<u64>,
    /// keepIdle model for TCP keepalive on VM connections, in seconds.
    #[arg(long)]
    keep_idle: Option<u32>,
    /// Refuse every vMotion (NOTNOW).
    #[arg(long)]
    no_vmotion: bool,
    /// vMotion expiry in milliseconds.
    #[arg(long)]
    vmotion_timeout_ms: Option<u64>,
    /// Share vMotions with other instances through this Redis or Valkey
    /// (`redis://host:port/db`): a destination reaching another instance is carried back.
    #[arg(long, value_name = "URL")]
    redis_url: Option<String>,
    /// SSH client listener (off unless set; see `[ssh]` in the configuration).
    #[arg(long, value_name = "ADDR")]
    ssh_listen: Option<SocketAddr>,
    /// SSH host key (OpenSSH format; generated, 0600, when missing).
    #[arg(long, value_name = "PATH")]
    ssh_host_key: Option<PathBuf>,
    /// SSH users: an authorized_keys file whose console="PATTERN:RIGHTS" options are grants.
    #[arg(long, value_name = "PATH")]
    ssh_authorized_keys: Option<PathBuf>,
    /// Audit log of client events (appended, 0600).
    #[arg(long, value_name = "PATH")]
    audit_log: Option<PathBuf>,
    /// Tokio worker threads (default 1; see `[runtime]` in the configuration).
    #[arg(long, value_name = "N")]
    worker_threads: Option<usize>,
    /// Log filter (tracing EnvFilter syntax; RUST_LOG wins when set).
    #[arg(long, default_value = "info")]
    log_level: String,
}

impl Cli {
    fn into_config(self) -> Result<ServerConfig, vspc_server::ConfigError> {
        let mut config = match &self.config {
            Some(path) => ServerConfig::from_file(path)?,
            None => ServerConfig::default(),
        };
        if !self.listen.is_empty() {
            config.vm.listen = self.listen;
        }
        if !self.tls_listen.is_empty() {
            config.vm.tls_listen = self.tls_listen;
        }
        config.vm.tls_cert = self.cert.or(config.vm.tls_cert);
        config.vm.tls_key = self.key.or(config.vm.tls_key);
        if !self.vm_allow.is_empty() {
            config.vm.allow = self.vm_allow;
        }
        if let Some(ms) = self.log_flush_ms {
            config.log.flush_ms = ms;
        }
        if self.redis_url.is_some() {
            config.cluster.redis_url = self.redis_url;
        }
        if let Some(addr) = self.client_listen {
            config.client.listen = addr;
        }
        config.client.sticky_ports |= self.sticky_ports;
        if let Some(addr) = self.admin_listen {
            config.admin.listen = Some(addr);
        }
        if self.no_admin {
            config.admin.listen = None;
        }
        if let Some(addr) = self.web_listen {
            config.web.listen = Some(addr);
        }
        if self.log_dir.is_some() {
            config.log.dir = self.log_dir;
        }
        if let Some(name) = self.log_name {
            config.log.name = name;
        }
        if let Some(secs) = self.keep_idle {
            config.vm.keep_idle_secs = secs;
        }
        if self.no_vmotion {
            config.vmotion.allow = false;
        }
        if let Some(ms) = self.vmotion_timeout_ms {
            config.vmotion.timeout_ms = ms;
        }
        config.ssh.listen = self.ssh_listen.or(config.ssh.listen);
        if let Some(path) = self.ssh_host_key {
            config.ssh.host_key = path;
        }
        if let Some(path) = self.ssh_authorized_keys {
            config.ssh.authorized_keys = path;
        }
        config.log.audit = self.audit_log.or(config.log.audit);
        if let Some(threads) = self.worker_threads {
            config.runtime.worker_threads = threads;
        }
        Ok(config)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&cli.log_level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    // Each VM holds a descriptor (two during a vMotion): raise the soft limit to the hard one.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "RLIMIT_NOFILE"),
        Err(error) => tracing::warn!(%error, "cannot raise RLIMIT_NOFILE"),
    }
    let config = match cli.into_config() {
        Ok(config) => config,
        Err(error) => {
            tracing::error!(%error, "configuration");
            return ExitCode::from(2);
        }
    };
    // One worker unless configured: see `RuntimeConfig` for why.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.runtime.worker_threads.max(1))
        .enable_all()
        .build();
    match runtime {
        Ok(runtime) => runtime.block_on(serve(config)),
        Err(error) => {
            tracing::error!(%error, "cannot start the async runtime");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: ServerConfig) -> ExitCode {
    let server = match Server::start(config).await {
        Ok(server) => server,
        Err(error) => {
            tracing::error!(%error, "cannot start");
            return ExitCode::FAILURE;
        }
    };
    // Printed on stdout, not only logged: operators paste these into the VMs' backings and
    // scripts read them.
    for addr in &server.vm_addrs {
        println!("vm telnet://{addr}");
    }
    for (addr, uri) in server.tls_addrs.iter().zip(&server.proxy_uris) {
        println!("vm telnets {addr} proxyURI {uri}");
    }
    println!("clients telnet {}", server.client_addr);
    if let Some(addr) = server.admin_addr {
        println!("admin http://{addr}/vms http://{addr}/metrics");
    }
    if let Some(url) = &server.web_url {
        println!("web {url}");
    }
    if let (Some(addr), Some(fingerprint)) = (server.ssh_addr, &server.ssh_fingerprint) {
        println!("clients ssh {addr} host key {fingerprint}");
    }
    let handle = server.handle();
    server.run_until(signals(handle)).await;
    ExitCode::SUCCESS
}

/// Resolves on SIGTERM or SIGINT; reopens the console and audit logs and reloads the SSH
/// users on every SIGHUP.
async fn signals(handle: vspc_server::Handle) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot watch signals; stop with SIGKILL");
        return std::future::pending().await;
    };
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM"); return; }
            _ = tokio::signal::ctrl_c() => { tracing::info!("SIGINT"); return; }
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reopening logs, reloading SSH keys");
                handle.reopen_logs();
                match handle.reload_ssh_keys() {
                    Ok(keys) => tracing::info!(keys, "SSH keys in force"),
                    Err(error) => tracing::error!(%error, "SSH keys not reloaded; the old set stays in force"),
                }
            }
        }
    }
}
