//! Configuration: what a TOML file holds (every field has a default), and how it maps onto
//! the core's [`ConcentratorConfig`].
//!
//! Every bound the concentrator enforces is here, with a default that suits a loopback
//! start (`cargo run --example proxy`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use vspc_concentrator::ConcentratorConfig;

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this configuration.
    #[error("invalid configuration in {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: toml::de::Error,
    },
    /// A value is out of range.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// `[vm]`: VM listeners and per-VM bounds.
    pub vm: VmConfig,
    /// `[client]`: the client port and per-client bounds.
    pub client: ClientConfig,
    /// `[admin]`: the JSON listing and metrics.
    pub admin: AdminConfig,
    /// `[log]`: console logs.
    pub log: LogConfig,
    /// `[vmotion]`: vMotion policy.
    pub vmotion: VmotionConfig,
    /// `[runtime]`: the async runtime (read by the binary that builds it).
    pub runtime: RuntimeConfig,
    /// `[cluster]`: vMotions shared with other instances.
    pub cluster: ClusterConfig,
    /// `[web]`: the web console (served with the `web` feature; off by default).
    pub web: WebConfig,
    /// `[ssh]`: the SSH client listener (off unless `listen` is set).
    pub ssh: SshConfig,
}

/// Concentrators that behave as one: where they share vMotions and the directory of VM
/// ports (see `docs/cluster.md`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Redis or Valkey (`redis://host:port/db`) holding the instances' vMotion handover
    /// records and leases. Unset (the default): this instance answers every PEER itself.
    pub redis_url: Option<String>,
    /// Prefix of this site's keys in the store.
    pub prefix: Option<String>,
    /// This instance's VM listener as the other instances reach it (default: the first VM
    /// listener's bound address).
    pub advertise: Option<SocketAddr>,
    /// This instance's name in the site, unique among the instances (default: the host name
    /// and the advertised VM address, `host@addr`). The leases of its VM ports are held
    /// under it; a restart under the same name is a new run, whose last run's ports are free.
    pub instance: Option<String>,
    /// How long a VM port's lease lasts without renewal, in milliseconds (default 10000);
    /// it is renewed every third of that. The longest a dead instance's VMs wait before
    /// another instance holds them, and how long a store outage may last before the leases
    /// lapse.
    pub lease_ms: u64,
    /// Where this instance accepts links from the other instances' clients attaching to its
    /// VMs (default: an ephemeral port on the first VM listener's address).
    pub link_listen: Option<SocketAddr>,
    /// The link listener as the other instances reach it (default: its bound address): the
    /// address this instance publishes in the site's directory.
    pub link_advertise: Option<SocketAddr>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            redis_url: None,
            prefix: None,
            advertise: None,
            instance: None,
            lease_ms: 10_000,
            link_listen: None,
            link_advertise: None,
        }
    }
}

impl ClusterConfig {
    /// The longest and shortest lease: a lease shorter than the store's round trips is
    /// lost between renewals.
    const LEASE_MS: std::ops::RangeInclusive<u64> = 300..=3_600_000;

    /// The lease of a VM port.
    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms)
    }

    /// Checks what serde cannot.
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        if !Self::LEASE_MS.contains(&self.lease_ms) {
            return invalid("cluster.lease_ms must be 300..=3600000");
        }
        // The name goes into the store's key names, log lines and the listing.
        if self.instance.as_ref().is_some_and(|id| {
            id.is_empty() || id.len() > 128 || !id.chars().all(|c| c.is_ascii_graphic())
        }) {
            return invalid(
                "cluster.instance must be 1..=128 printable ASCII characters, no spaces",
            );
        }
        Ok(())
    }
}

/// The web console: a page listing the VM ports and a terminal per VM over a WebSocket.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebConfig {
    /// Where to listen; `None` (the default) disables the console. Loopback unless the
    /// console is meant to be reached from elsewhere, and then with TLS.
    pub listen: Option<SocketAddr>,
    /// The bearer token every request must carry (an `Authorization: Bearer` header, or the
    /// cookie the page sets after `/?token=...`). `None`: a random one is made at start and
    /// logged with the console's address.
    pub token: Option<String>,
    /// PEM certificate chain: with `tls_key`, the console is served over HTTPS (the same
    /// format as `vm.tls_cert`; point both at the same files to reuse the telnets
    /// certificate).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for HTTPS.
    pub tls_key: Option<PathBuf>,
    /// Cap on one WebSocket message from a page, in bytes (a larger one closes it).
    pub max_message: usize,
    /// Cap on pages following the live VM listing at once.
    pub max_listeners: usize,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            listen: None,
            token: None,
            tls_cert: None,
            tls_key: None,
            max_message: 64 * 1024,
            max_listeners: 64,
        }
    }
}

/// The SSH client listener (the `ssh` feature): consoles reachable with keys, per-key
/// grants, an audit trail. See the crate docs for the `authorized_keys` grants.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SshConfig {
    /// Where to listen; `None` (the default) disables SSH.
    pub listen: Option<SocketAddr>,
    /// The host key (OpenSSH format). Generated (Ed25519, mode 0600) on first start when
    /// missing; its fingerprint is logged at every start.
    pub host_key: PathBuf,
    /// The users: an OpenSSH `authorized_keys` file whose `console="PATTERN:RIGHTS"`
    /// options are the grants. Reloaded on SIGHUP (a bad file keeps the old set).
    pub authorized_keys: PathBuf,
    /// Seconds a connection may take to authenticate and open its session.
    pub auth_timeout_secs: u64,
}

impl Default for SshConfig {
    fn default() -> Self {
        SshConfig {
            listen: None,
            host_key: PathBuf::from("ssh_host_ed25519_key"),
            authorized_keys: PathBuf::from("authorized_keys"),
            auth_timeout_secs: 30,
        }
    }
}

/// The async runtime.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Tokio worker threads. One by default: all connection work goes through the hub's one
    /// lock, and a second worker mostly waited for it (GOAHEAD p99 under a handshake storm
    /// 0.10-0.18 ms with one, 0.22-0.47 with two; a `current_thread` runtime was as fast but
    /// less steady, 0.11-1.2 ms); more can help when many telnets (TLS) handshakes arrive at
    /// once, whose cryptography runs outside the lock.
    pub worker_threads: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig { worker_threads: 1 }
    }
}

/// The VM side.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VmConfig {
    /// Plain telnet listeners for VMs.
    pub listen: Vec<SocketAddr>,
    /// telnets (TLS from the first byte) listeners for VMs; needs `tls_cert` and `tls_key`.
    pub tls_listen: Vec<SocketAddr>,
    /// PEM certificate chain for telnets.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for telnets.
    pub tls_key: Option<PathBuf>,
    /// Networks VM connections are admitted from (CIDR: the ESXi hosts' management
    /// networks). Empty: every source, with a warning at start when a VM listener is bound
    /// beyond loopback. See the README's trust model.
    pub allow: Vec<crate::IpNet>,
    /// Cap on simultaneous VM connections; beyond it a connection is closed at once.
    pub max_connections: usize,
    /// The keepIdle model (seconds) for TCP keepalive: idle, then 5 probes every keepIdle/100.
    pub keep_idle_secs: u32,
    /// Cap on one telnet subnegotiation from a VM, in bytes.
    pub max_subnegotiation: usize,
    /// Cap on client bytes held for a VM during a vMotion.
    pub max_held: usize,
    /// Cap on bytes queued toward one VM before its clients are paused (backpressure).
    pub max_pending_to_vm: usize,
    /// Cap on VM output kept for a connection that has not identified yet.
    pub max_unbound: usize,
    /// Seconds a VM connection may take to identify itself (VC UUID and DO-PROXY) before
    /// it is closed.
    pub identify_timeout_secs: u64,
    /// Cap on VM entries lingering at once (oldest removed first, counted).
    pub max_lingering: usize,
    /// Accept ESXi's `WILL COM-PORT` (RFC 2217): the guest UART settings it reports are the
    /// truth of the port that RFC 2217 clients see (`docs/rfc2217.md`). Off: refused, and
    /// the port is emulated.
    pub com_port: bool,
    /// How long a VM entry (clients, log, sticky port, scrollback) is kept after its
    /// connection went away, waiting for a reconnect.
    pub linger_secs: u64,
}

/// The client side.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientConfig {
    /// The port where a client picks a VM by name or UUID.
    pub listen: SocketAddr,
    /// Give every VM its own port (on `sticky_host`, ephemeral unless `sticky_base` is set).
    pub sticky_ports: bool,
    /// Address of sticky ports.
    pub sticky_host: std::net::IpAddr,
    /// First sticky port (0: ephemeral ports).
    pub sticky_base: u16,
    /// Cap on simultaneous clients.
    pub max_clients: usize,
    /// Seconds a client may take to choose a VM before it is dropped.
    pub select_timeout_secs: u64,
    /// Cap on clients still choosing a VM (the one choosing longest makes room).
    pub max_selecting: usize,
    /// How far a client may fall behind its VM: with this much queued for it, the VM is not
    /// read until it catches up (for at most `slow_grace_ms`). Twice this bounds the memory
    /// per client.
    pub output_budget: usize,
    /// Milliseconds a client may stay a whole budget behind before it is dropped with a
    /// message: the longest a stuck client delays its VM's other clients.
    pub slow_grace_ms: u64,
    /// Bytes of VM output replayed to a client that joins.
    pub scrollback: usize,
}

/// The admin listener (JSON listing and Prometheus metrics).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Where to listen; `None` disables it. Keep it on loopback: it is unauthenticated.
    pub listen: Option<SocketAddr>,
}

/// Console logs.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Directory of console logs; `None` disables them.
    pub dir: Option<PathBuf>,
    /// File name scheme: `{name}`, `{uuid}`, `{label}` and `{id}` are replaced. Names
    /// stay one per VM port: when two ports would share a file (names that differ only in
    /// characters made safe, or a flagged duplicate identity), the later one gets `-{id}`
    /// before the extension, and a flagged entry's file starts with `FLAGGED-`.
    pub name: String,
    /// Console bytes reach the file at most this many milliseconds after they arrived (what
    /// a crash of the concentrator can lose).
    pub flush_ms: u64,
    /// The audit trail of client events (SSH connects and authentication, attach with the
    /// mode, kick, break, detach with the bytes each way), appended to this file (created
    /// 0600, reopened on SIGHUP); `None`: to tracing only (target `vspc::audit`).
    pub audit: Option<PathBuf>,
}

/// vMotion.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VmotionConfig {
    /// Answer VMOTION-BEGIN with GOAHEAD (`false`: always NOTNOW).
    pub allow: bool,
    /// How long a vMotion may stay pending after GOAHEAD, in milliseconds.
    pub timeout_ms: u64,
    /// Length of minted secrets.
    pub secret_len: usize,
}

impl Default for VmConfig {
    fn default() -> Self {
        VmConfig {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 13370))],
            tls_listen: Vec::new(),
            tls_cert: None,
            tls_key: None,
            allow: Vec::new(),
            max_connections: 10_000,
            keep_idle_secs: 300,
            max_subnegotiation: vspc_proto::vspc_telnet::DEFAULT_MAX_SUBNEGOTIATION,
            max_held: 1 << 20,
            max_pending_to_vm: 256 * 1024,
            max_unbound: 16 * 1024,
            identify_timeout_secs: 30,
            com_port: true,
            max_lingering: 4096,
            linger_secs: 300,
        }
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 13371)),
            sticky_ports: false,
            sticky_host: std::net::IpAddr::from([127, 0, 0, 1]),
            sticky_base: 0,
            max_clients: 1000,
            select_timeout_secs: 30,
            max_selecting: 500,
            output_budget: 1 << 20,
            slow_grace_ms: 1000,
            scrollback: 16 * 1024,
        }
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 13372))),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            dir: None,
            name: "{name}_{label}.log".to_owned(),
            flush_ms: 100,
            audit: None,
        }
    }
}

impl Default for VmotionConfig {
    fn default() -> Self {
        VmotionConfig {
            allow: true,
            timeout_ms: 30_000,
            secret_len: 8,
        }
    }
}

impl ServerConfig {
    /// Reads a TOML file.
    pub fn from_file(path: &Path) -> Result<ServerConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        ServerConfig::from_toml(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<ServerConfig, toml::de::Error> {
        toml::from_str(text)
    }

    /// Configuration for tests: every listener on an ephemeral loopback port.
    pub fn ephemeral() -> ServerConfig {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut config = ServerConfig::default();
        config.vm.listen = vec![any];
        config.client.listen = any;
        config.admin.listen = Some(any);
        config
    }

    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        if self.vm.listen.is_empty() && self.vm.tls_listen.is_empty() {
            return invalid("no VM listener (vm.listen and vm.tls_listen are empty)");
        }
        if !self.vm.tls_listen.is_empty()
            && (self.vm.tls_cert.is_none() || self.vm.tls_key.is_none())
        {
            return invalid("vm.tls_listen needs vm.tls_cert and vm.tls_key");
        }
        if self.vm.keep_idle_secs == 0 {
            return invalid("vm.keep_idle_secs must be at least 1");
        }
        if self.runtime.worker_threads == 0 || self.runtime.worker_threads > 1024 {
            return invalid("runtime.worker_threads must be 1..=1024");
        }
        if self.vmotion.secret_len == 0 || self.vmotion.secret_len > 64 {
            return invalid("vmotion.secret_len must be 1..=64");
        }
        if self.client.output_budget < 1024 {
            return invalid("client.output_budget must be at least 1024 bytes");
        }
        if self.client.slow_grace_ms == 0 || self.client.slow_grace_ms > 600_000 {
            return invalid("client.slow_grace_ms must be 1..=600000");
        }
        if self.log.flush_ms == 0 || self.log.flush_ms > 60_000 {
            return invalid("log.flush_ms must be 1..=60000");
        }
        if self.web.tls_cert.is_some() != self.web.tls_key.is_some() {
            return invalid("web.tls_cert and web.tls_key go together");
        }
        // Characters a URL query and a cookie carry unescaped.
        let token_char = |c: char| c.is_ascii_alphanumeric() || "-._~".contains(c);
        if self
            .web
            .token
            .as_ref()
            .is_some_and(|t| t.len() < 16 || !t.chars().all(token_char))
        {
            return invalid("web.token must be at least 16 characters of A-Z a-z 0-9 - . _ ~");
        }
        if self.web.max_message < 1024 || self.web.max_message > 16 << 20 {
            return invalid("web.max_message must be 1024..=16777216 bytes");
        }
        if self.web.max_listeners == 0 {
            return invalid("web.max_listeners must be at least 1");
        }
        if self.log.name.contains('/') || self.log.name.contains("..") {
            return invalid("log.name must be a file name, not a path");
        }
        self.cluster.validate()?;
        if self.ssh.listen.is_some() && !cfg!(feature = "ssh") {
            return invalid("ssh.listen is set but vspc-server was built without its ssh feature");
        }
        if self.ssh.auth_timeout_secs == 0 {
            return invalid("ssh.auth_timeout_secs must be at least 1");
        }
        Ok(())
    }

    /// How long a VM entry lingers after its VM left.
    pub fn linger(&self) -> Duration {
        Duration::from_secs(self.vm.linger_secs)
    }

    /// The core's configuration.
    pub fn concentrator(&self) -> ConcentratorConfig {
        let mut core = ConcentratorConfig::default();
        core.max_vm_connections = self.vm.max_connections;
        core.max_subnegotiation = self.vm.max_subnegotiation;
        core.max_held = self.vm.max_held;
        core.max_pending_to_vm = self.vm.max_pending_to_vm;
        core.max_unbound = self.vm.max_unbound;
        core.linger = self.linger();
        core.allow_vmotion = self.vmotion.allow;
        core.vmotion_timeout = Duration::from_millis(self.vmotion.timeout_ms);
        core.secret_len = self.vmotion.secret_len;
        core.max_clients = self.client.max_clients;
        core.select_timeout = Duration::from_secs(self.client.select_timeout_secs);
        core.max_selecting = self.client.max_selecting;
        core.identify_timeout = Duration::from_secs(self.vm.identify_timeout_secs);
        core.vm_com_port = self.vm.com_port;
        core.max_lingering = self.vm.max_lingering;
        core.output_budget = self.client.output_budget;
        core.slow_client_grace = Duration::from_millis(self.client.slow_grace_ms);
        core.scrollback = self.client.scrollback;
        core.console_events = self.log.dir.is_some();
        core
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_partial_toml_with_defaults() {
        let config = ServerConfig::from_toml(
            "[vm]\nlisten = [\"127.0.0.1:1\", \"[::1]:2\"]\n[client]\nsticky_ports = true\n",
        )
        .unwrap();
        assert_eq!(config.vm.listen.len(), 2);
        assert!(config.client.sticky_ports);
        assert_eq!(config.client.listen.port(), 13371);
        assert!(ServerConfig::from_toml("[vm]\nbogus = 1\n").is_err());
    }

    #[test]
    fn cluster_lease_and_instance_are_checked() {
        let defaults = ServerConfig::default();
        assert_eq!(defaults.cluster.lease(), Duration::from_secs(10));
        assert_eq!(defaults.cluster.instance, None);
        let config =
            ServerConfig::from_toml("[cluster]\ninstance = \"a-1\"\nlease_ms = 1000\n").unwrap();
        assert_eq!(config.cluster.instance.as_deref(), Some("a-1"));
        assert_eq!(config.cluster.lease(), Duration::from_secs(1));
        assert!(config.validate().is_ok());
        for bad in [
            "lease_ms = 299",
            "lease_ms = 3600001",
            "instance = \"\"",
            "instance = \"two words\"",
            "instance = \"caf\u{e9}\"",
        ] {
            let config = ServerConfig::from_toml(&format!("[cluster]\n{bad}\n")).unwrap();
            assert!(config.validate().is_err(), "{bad}");
        }
    }

    #[test]
    fn web_console_off_by_default_and_checked() {
        assert_eq!(ServerConfig::default().web.listen, None);
        let config = ServerConfig::from_toml(
            "[web]\nlisten = \"127.0.0.1:13373\"\ntoken = \"0123456789abcdef\"\n",
        )
        .unwrap();
        assert_eq!(
            config.web.listen,
            Some(SocketAddr::from(([127, 0, 0, 1], 13373)))
        );
        assert!(config.validate().is_ok());
        let short = ServerConfig::from_toml("[web]\ntoken = \"short\"\n").unwrap();
        assert!(short.validate().is_err());
        let half_tls = ServerConfig::from_toml("[web]\ntls_cert = \"c.pem\"\n").unwrap();
        assert!(half_tls.validate().is_err());
    }

    #[test]
    fn one_worker_thread_unless_configured() {
        assert_eq!(ServerConfig::default().runtime.worker_threads, 1);
        let config = ServerConfig::from_toml("[runtime]\nworker_threads = 4\n").unwrap();
        assert_eq!(config.runtime.worker_threads, 4);
        assert!(config.validate().is_ok());
        let none = ServerConfig::from_toml("[runtime]\nworker_threads = 0\n").unwrap();
        assert!(none.validate().is_err());
    }
}
