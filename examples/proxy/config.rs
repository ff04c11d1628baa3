//! Configuration: a TOML file, overridden by command-line flags.
//!
//! Every bound the concentrator enforces is here, with a default that suits a loopback
//! start (`cargo run --example proxy`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid configuration in {path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Config {
    pub(crate) vm: VmConfig,
    pub(crate) client: ClientConfig,
    pub(crate) admin: AdminConfig,
    pub(crate) log: LogConfig,
    pub(crate) vmotion: VmotionConfig,
    pub(crate) runtime: RuntimeConfig,
}

/// The async runtime.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RuntimeConfig {
    /// Tokio worker threads. One by default: all connection work goes through the hub's one
    /// lock, and a second worker mostly waited for it (GOAHEAD p99 under a handshake storm
    /// 0.10-0.18 ms with one, 0.22-0.47 with two; a `current_thread` runtime was as fast but
    /// less steady, 0.11-1.2 ms); more can help when many telnets (TLS) handshakes arrive at
    /// once, whose cryptography runs outside the lock.
    pub(crate) worker_threads: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig { worker_threads: 1 }
    }
}

/// The VM side.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct VmConfig {
    /// Plain telnet listeners for VMs.
    pub(crate) listen: Vec<SocketAddr>,
    /// telnets (TLS from the first byte) listeners for VMs; needs `tls_cert` and `tls_key`.
    pub(crate) tls_listen: Vec<SocketAddr>,
    /// PEM certificate chain for telnets.
    pub(crate) tls_cert: Option<PathBuf>,
    /// PEM private key for telnets.
    pub(crate) tls_key: Option<PathBuf>,
    /// Cap on simultaneous VM connections; beyond it a connection is closed at once.
    pub(crate) max_connections: usize,
    /// The keepIdle model (seconds) for TCP keepalive: idle, then 5 probes every keepIdle/100.
    pub(crate) keep_idle_secs: u32,
    /// Cap on one telnet subnegotiation from a VM, in bytes.
    pub(crate) max_subnegotiation: usize,
    /// Cap on client bytes held for a VM during a vMotion.
    pub(crate) max_held: usize,
    /// Cap on bytes queued toward one VM before its clients are paused (backpressure).
    pub(crate) max_pending_to_vm: usize,
    /// Cap on VM output kept for a connection that has not identified yet.
    pub(crate) max_unbound: usize,
    /// How long a VM entry (clients, log, sticky port, scrollback) is kept after its
    /// connection went away, waiting for a reconnect.
    pub(crate) linger_secs: u64,
}

/// The client side.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct ClientConfig {
    /// The port where a client picks a VM by name or UUID.
    pub(crate) listen: SocketAddr,
    /// Give every VM its own port (on `sticky_host`, ephemeral unless `sticky_base` is set).
    pub(crate) sticky_ports: bool,
    /// Address of sticky ports.
    pub(crate) sticky_host: std::net::IpAddr,
    /// First sticky port (0: ephemeral ports).
    pub(crate) sticky_base: u16,
    /// Cap on simultaneous clients.
    pub(crate) max_clients: usize,
    /// Cap on bytes queued toward one client; beyond it the client is dropped with a message.
    pub(crate) output_budget: usize,
    /// Bytes of VM output replayed to a client that joins.
    pub(crate) scrollback: usize,
}

/// The admin listener (JSON listing and Prometheus metrics).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct AdminConfig {
    /// Where to listen; `None` disables it. Keep it on loopback: it is unauthenticated.
    pub(crate) listen: Option<SocketAddr>,
}

/// Console logs.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct LogConfig {
    /// Directory of console logs; `None` disables them.
    pub(crate) dir: Option<PathBuf>,
    /// File name scheme: `{name}`, `{uuid}`, `{label}` and `{id}` are replaced.
    pub(crate) name: String,
}

/// vMotion.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct VmotionConfig {
    /// Answer VMOTION-BEGIN with GOAHEAD (`false`: always NOTNOW).
    pub(crate) allow: bool,
    /// How long a vMotion may stay pending after GOAHEAD, in milliseconds.
    pub(crate) timeout_ms: u64,
    /// Length of minted secrets.
    pub(crate) secret_len: usize,
}

impl Default for VmConfig {
    fn default() -> Self {
        VmConfig {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 13370))],
            tls_listen: Vec::new(),
            tls_cert: None,
            tls_key: None,
            max_connections: 10_000,
            keep_idle_secs: 300,
            max_subnegotiation: vspc_proto::vspc_telnet::DEFAULT_MAX_SUBNEGOTIATION,
            max_held: 1 << 20,
            max_pending_to_vm: 256 * 1024,
            max_unbound: 64 * 1024,
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
            output_budget: 1 << 20,
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

impl Config {
    /// Reads a TOML file.
    pub(crate) fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    /// Parses TOML text.
    pub(crate) fn from_toml(text: &str) -> Result<Config, toml::de::Error> {
        toml::from_str(text)
    }

    /// Configuration for tests: every listener on an ephemeral loopback port.
    #[allow(dead_code)] // for the integration tests
    pub(crate) fn ephemeral() -> Config {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut config = Config::default();
        config.vm.listen = vec![any];
        config.client.listen = any;
        config.admin.listen = Some(any);
        config
    }

    /// Checks what serde cannot.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
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
        if self.log.name.contains('/') || self.log.name.contains("..") {
            return invalid("log.name must be a file name, not a path");
        }
        Ok(())
    }

    pub(crate) fn linger(&self) -> Duration {
        Duration::from_secs(self.vm.linger_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_partial_toml_with_defaults() {
        let config = Config::from_toml(
            "[vm]\nlisten = [\"127.0.0.1:1\", \"[::1]:2\"]\n[client]\nsticky_ports = true\n",
        )
        .unwrap();
        assert_eq!(config.vm.listen.len(), 2);
        assert!(config.client.sticky_ports);
        assert_eq!(config.client.listen.port(), 13371);
        assert!(Config::from_toml("[vm]\nbogus = 1\n").is_err());
    }

    #[test]
    fn one_worker_thread_unless_configured() {
        assert_eq!(Config::default().runtime.worker_threads, 1);
        let config = Config::from_toml("[runtime]\nworker_threads = 4\n").unwrap();
        assert_eq!(config.runtime.worker_threads, 4);
        assert!(config.validate().is_ok());
        let none = Config::from_toml("[runtime]\nworker_threads = 0\n").unwrap();
        assert!(none.validate().is_err());
    }
}
