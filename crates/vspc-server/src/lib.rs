//! A tokio server for VMware virtual serial port concentrators, built on the sans-IO
//! [`vspc_concentrator::Concentrator`].
//!
//! It binds the listeners (VM telnet and telnets, the client selection port, sticky ports,
//! the admin HTTP port), runs one task per connection, drives the core's deadlines from one
//! timer task, sets TCP keepalive on VM sockets from ESXi's keepIdle model, writes console
//! logs, and shuts down gracefully. An embedder gets a [`Handle`]: VM events, console
//! subscriptions, writes to a VM, listings.
//!
//! # The web console
//! With the `web` feature (on by default) and `web.listen` set ([`WebConfig`]), the server
//! also serves a page listing the VM ports with live updates (server-sent events fed by the
//! same VM events a [`Handle`] subscribes to) and a terminal per VM: xterm.js, shipped in
//! the binary, over a WebSocket whose binary messages carry the console's bytes unchanged.
//! A terminal is a core client like a telnet one ([`vspc_concentrator::Transport::Raw`]),
//! run by the same reader and writer tasks, so modes, scrollback, the output budget and flow
//! control are the core's. Every request needs the bearer token (`web.token`, or one made at
//! start: [`Server::web_url`] carries it); HTTPS with `web.tls_cert` and `web.tls_key`.
//!
//! # The run loop
//! Every task does the same thing: lock the hub, make **one** call into the core, then
//! settle (wake the tasks the core named in its wakeups, act on its events, re-arm the timer
//! if the next deadline moved earlier), unlock; then write or read its socket outside the
//! lock. Nothing is held across an `.await`.
//!
//! # SSH access (feature `ssh`, on by default)
//! With `[ssh] listen` set, people attach to consoles with `ssh -p PORT NAME@host`: keys
//! from an `authorized_keys` file whose `console="PATTERN:RIGHTS"` options grant VMs and
//! modes, kick, an in-band escape (Ctrl-] `b` break, `d` detach), and an audit trail. Each
//! SSH session is a raw client of the same core and client tasks as a telnet client. See
//! the [`ssh`] module.
//!
//! # Example: embed a concentrator
//! ```no_run
//! use vspc_server::{Server, ServerConfig};
//!
//! # async fn demo() -> Result<(), vspc_server::ServerError> {
//! let server = Server::start(ServerConfig::default()).await?;
//! let handle = server.handle();
//! let mut events = handle.vm_events();
//! tokio::spawn(async move {
//!     while let Some(event) = events.recv().await {
//!         println!("{event:?}");
//!     }
//! });
//! server.run_until(async { tokio::signal::ctrl_c().await.ok(); }).await;
//! # Ok(())
//! # }
//! ```
//!
//! # Panics
//! No task panics on any input; a poisoned hub lock is recovered (the core is consistent at
//! every call boundary).
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs)]
// This crate is the IO layer of the sans-IO libraries: reading the clock is its job.
#![allow(clippy::disallowed_methods)]

mod access;
mod admin;
mod audit;
mod client;
mod cluster;
mod config;
mod embed;
mod hub;
mod link;
mod logs;
#[cfg(feature = "ssh")]
#[cfg_attr(docsrs, doc(cfg(feature = "ssh")))]
pub mod ssh;
mod tls;
mod vm_conn;
#[cfg(feature = "web")]
mod web;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use vspc_concentrator::VmId;

pub use access::{IpNet, IpNetError};
pub use cluster::{
    Holding, Instance, MemoryState, RedisState, SharedState, SharedStateError, SitePort, SiteVm,
    StateFuture,
};
pub use config::{
    AdminConfig, ClientConfig, ConfigError, LogConfig, RuntimeConfig, ServerConfig, SshConfig,
    VmConfig, VmotionConfig, WebConfig,
};
pub use embed::{ConsoleChunk, Handle, VmEvent};
pub use logs::{file_name, sanitize};
pub use tls::TlsError;
pub use vm_conn::set_keepalive;
pub use vspc_concentrator;

use hub::Hub;

/// State shared by every task.
pub(crate) struct Shared {
    hub: Mutex<Hub>,
    /// Set to true once on shutdown; every listener and connection watches it.
    stop: watch::Sender<bool>,
    /// The SSH listener's keys and settings, when it runs.
    #[cfg(feature = "ssh")]
    ssh: Option<Arc<ssh::SshState>>,
}

impl Shared {
    /// Locks the hub. A panic while it was held poisons it; the core is consistent at every
    /// call boundary, so carry on rather than take the whole concentrator down.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Hub> {
        self.hub.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The telnets certificate or key could not be loaded.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The audit log cannot be opened.
    #[error("audit log {path}: {source}")]
    Audit {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The SSH listener's host key or users could not be loaded.
    #[cfg(feature = "ssh")]
    #[error(transparent)]
    Ssh(#[from] ssh::SshError),
}

/// A running concentrator.
pub struct Server {
    /// Bound telnet VM listeners.
    pub vm_addrs: Vec<SocketAddr>,
    /// Bound telnets VM listeners.
    pub tls_addrs: Vec<SocketAddr>,
    /// The client selection port.
    pub client_addr: SocketAddr,
    /// The admin listener.
    pub admin_addr: Option<SocketAddr>,
    /// The web console's listener (`[web]`).
    pub web_addr: Option<SocketAddr>,
    /// The web console's address with its token (`http://host:port/?token=...`): what an
    /// operator opens. Holds the token: show it only to whom may use the console.
    pub web_url: Option<String>,
    /// `telnets://host:port#thumbprint=...` for each telnets listener: what a VM's backing
    /// names as its proxyURI.
    pub proxy_uris: Vec<String>,
    /// The SSH listener, when configured.
    pub ssh_addr: Option<SocketAddr>,
    /// The SSH host key's fingerprint (`SHA256:...`, as `ssh-keygen -l` shows it).
    pub ssh_fingerprint: Option<String>,
    /// Where the site's other instances attach their clients to this instance's VMs
    /// (`[cluster] link_listen`), when clustered.
    pub link_addr: Option<SocketAddr>,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("vm_addrs", &self.vm_addrs)
            .field("tls_addrs", &self.tls_addrs)
            .field("client_addr", &self.client_addr)
            .field("admin_addr", &self.admin_addr)
            .field("web_addr", &self.web_addr)
            .finish_non_exhaustive()
    }
}

/// Listen backlog: a connect burst of thousands of VMs (a host's VMs after a restart) must
/// queue in the kernel, not overflow it: a dropped SYN costs the VM a 1 s retransmit. The
/// kernel caps it at `net.core.somaxconn`.
const BACKLOG: u32 = 8192;

/// Sticky-port bind requests queued between the hub and the binder task.
const STICKY_QUEUE: usize = 4096;

/// How often the timer runs when nothing else is due and no console log waits for it.
const IDLE_TICK: Duration = Duration::from_secs(1);

async fn bind(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    let listen = || {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(BACKLOG)
    };
    listen().map_err(|source| ServerError::Bind { addr, source })
}

/// The default link listener's address: the first plain VM listener's (the network the
/// instances already reach each other on), else the advertised one's.
fn link_ip(config: &ServerConfig, advertise: SocketAddr) -> std::net::IpAddr {
    config
        .vm
        .listen
        .first()
        .map_or(advertise.ip(), |addr| addr.ip())
}

fn local_addr(listener: &TcpListener, fallback: SocketAddr) -> SocketAddr {
    listener.local_addr().unwrap_or(fallback)
}

impl Server {
    /// Binds every listener and starts serving (on the current tokio runtime).
    pub async fn start(config: ServerConfig) -> Result<Server, ServerError> {
        let state = match &config.cluster.redis_url {
            Some(url) => {
                let prefix = config.cluster.prefix.as_deref().unwrap_or("vspc");
                let state = RedisState::new(url, prefix)
                    .map_err(|e| ServerError::Config(ConfigError::Invalid(e.to_string())))?;
                Some(Arc::new(state) as Arc<dyn SharedState>)
            }
            None => None,
        };
        Server::start_with_state(config, state).await
    }

    /// [`start`](Self::start), sharing vMotions with other instances through `state` (when
    /// `Some`; it overrides `[cluster] redis_url`): a destination that reaches another
    /// instance is carried back to this one.
    pub async fn start_with_state(
        config: ServerConfig,
        state: Option<Arc<dyn SharedState>>,
    ) -> Result<Server, ServerError> {
        config.validate()?;
        let config = Arc::new(config);
        let timer = Arc::new(Notify::new());
        let (stop, _) = watch::channel(false);
        let mut hub = Hub::new(
            config.clone(),
            timer.clone(),
            Instant::now(),
            state.is_some(),
        );
        if let Some(path) = &config.log.audit {
            let audit = audit::Audit::open(path).map_err(|source| ServerError::Audit {
                path: path.clone(),
                source,
            })?;
            hub.audit = Arc::new(audit);
        }
        #[cfg(feature = "ssh")]
        let ssh = match config.ssh.listen {
            Some(addr) => {
                let (ssh_state, fingerprint) = ssh::prepare(&config.ssh, hub.audit.clone())?;
                Some((addr, ssh_state, fingerprint))
            }
            None => None,
        };
        let shared = Arc::new(Shared {
            hub: Mutex::new(hub),
            stop,
            #[cfg(feature = "ssh")]
            ssh: ssh.as_ref().map(|(_, state, _)| state.clone()),
        });
        let mut tasks = Vec::new();
        #[allow(unused_mut)]
        let (mut ssh_addr, mut ssh_fingerprint) = (None, None);
        #[cfg(feature = "ssh")]
        if let Some((addr, ssh_state, fingerprint)) = ssh {
            let listener = bind(addr).await?;
            let bound = local_addr(&listener, addr);
            tracing::info!(addr = %bound, %fingerprint, "listening for SSH clients (host key fingerprint)");
            tasks.push(tokio::spawn(ssh::serve(
                shared.clone(),
                ssh_state,
                listener,
            )));
            ssh_addr = Some(bound);
            ssh_fingerprint = Some(fingerprint);
        }

        let tls = match (&config.vm.tls_cert, &config.vm.tls_key) {
            (Some(cert), Some(key)) if !config.vm.tls_listen.is_empty() => {
                Some(tls::load(cert, key)?)
            }
            _ => None,
        };

        // Bound first, served once the cluster is set: no VM connects before its port can
        // join the leases.
        let mut vm_listeners = Vec::new();
        let mut vm_addrs = Vec::new();
        for &addr in &config.vm.listen {
            let listener = bind(addr).await?;
            vm_addrs.push(local_addr(&listener, addr));
            vm_listeners.push((listener, None));
        }
        let mut tls_addrs = Vec::new();
        let mut proxy_uris = Vec::new();
        if let Some(tls) = &tls {
            for &addr in &config.vm.tls_listen {
                let listener = bind(addr).await?;
                let bound = local_addr(&listener, addr);
                tls_addrs.push(bound);
                proxy_uris.push(format!("telnets://{bound}#thumbprint={}", tls.thumbprint));
                vm_listeners.push((listener, Some(tls.acceptor.clone())));
            }
        }

        let mut link_addr = None;
        if let Some(state) = state {
            let (cluster_tasks, bound) = start_cluster(&shared, &config, state, &vm_addrs).await?;
            tasks.extend(cluster_tasks);
            link_addr = Some(bound);
        }
        for (listener, tls) in vm_listeners {
            tasks.push(tokio::spawn(accept_vms(
                shared.clone(),
                listener,
                tls,
                config.clone(),
            )));
        }

        let listener = bind(config.client.listen).await?;
        let client_addr = local_addr(&listener, config.client.listen);
        tasks.push(tokio::spawn(accept_clients(shared.clone(), listener, None)));

        let admin_addr = match config.admin.listen {
            Some(addr) => {
                let listener = bind(addr).await?;
                let bound = local_addr(&listener, addr);
                tasks.push(tokio::spawn(accept_admin(shared.clone(), listener)));
                Some(bound)
            }
            None => None,
        };

        let web = match config.web.listen {
            Some(addr) => Some(start_web(&shared, &config, bind(addr).await?)?),
            None => None,
        };
        let (web_addr, web_url) = match web {
            Some((addr, url, task)) => {
                tasks.push(task);
                (Some(addr), Some(url))
            }
            None => (None, None),
        };

        if config.client.sticky_ports {
            let (tx, rx) = tokio::sync::mpsc::channel(STICKY_QUEUE);
            shared.lock().set_sticky_sender(tx);
            tasks.push(tokio::spawn(sticky_ports(
                shared.clone(),
                rx,
                config.client.sticky_host,
                config.client.sticky_base,
            )));
        }
        let tick = match config.log.dir {
            Some(_) => Duration::from_millis(config.log.flush_ms),
            None => IDLE_TICK,
        };
        tasks.push(tokio::spawn(run_timer(shared.clone(), timer, tick)));

        for addr in &vm_addrs {
            tracing::info!(%addr, "listening for VMs (telnet://{addr})");
        }
        let exposed = vm_addrs
            .iter()
            .chain(&tls_addrs)
            .any(|a| !a.ip().is_loopback());
        if exposed && config.vm.allow.is_empty() {
            tracing::warn!(
                "VM listeners are reachable beyond loopback and vm.allow is empty: any host \
                 that connects can claim a VM's identity; list the ESXi hosts' networks"
            );
        }
        for uri in &proxy_uris {
            tracing::info!(%uri, "listening for VMs (telnets); proxyURI");
        }
        tracing::info!(addr = %client_addr, "listening for clients");
        if let Some(addr) = admin_addr {
            tracing::info!(%addr, "admin: http://{addr}/vms and http://{addr}/metrics");
        }
        Ok(Server {
            vm_addrs,
            tls_addrs,
            client_addr,
            admin_addr,
            web_addr,
            web_url,
            proxy_uris,
            ssh_addr,
            ssh_fingerprint,
            link_addr,
            shared,
            tasks,
        })
    }

    /// The embedding handle.
    pub fn handle(&self) -> Handle {
        Handle {
            shared: self.shared.clone(),
        }
    }

    /// The admin listing, as `GET /vms` returns it.
    pub fn snapshot(&self) -> serde_json::Value {
        self.handle().snapshot_json()
    }

    /// The sticky port of the VM a selector names (as on the client port), once bound.
    pub fn sticky_addr(&self, selector: &str) -> Option<SocketAddr> {
        let handle = self.handle();
        handle.sticky_addr(handle.resolve(selector)?)
    }

    /// Reopens every console log (after rotation; what SIGHUP does).
    pub fn reopen_logs(&self) {
        self.handle().reopen_logs();
    }

    /// Serves until `shutdown` resolves, then shuts down gracefully.
    pub async fn run_until(self, shutdown: impl std::future::Future<Output = ()>) {
        shutdown.await;
        self.shutdown().await;
    }

    /// Graceful shutdown: stops accepting, tells every client and closes it, writes what is
    /// queued for VMs, flushes the logs. Bounded by a few seconds.
    pub async fn shutdown(self) {
        tracing::info!("shutting down");
        self.shared.lock().shutdown();
        let _ = self.shared.stop.send(true);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            let busy = {
                let hub = self.shared.lock();
                hub.core.open_clients() + hub.core.open_vm_connections()
            };
            if busy == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.shared.lock().flush_logs();
        for task in &self.tasks {
            task.abort();
        }
        release_all(&self.shared).await;
        tracing::info!("shut down");
    }
}

/// Shares vMotions and the directory through `state`: this instance's name and address,
/// and the task that holds its VM ports' leases.
async fn start_cluster(
    shared: &Arc<Shared>,
    config: &ServerConfig,
    state: Arc<dyn SharedState>,
    vm_addrs: &[SocketAddr],
) -> Result<(Vec<JoinHandle<()>>, SocketAddr), ServerError> {
    let advertise = config
        .cluster
        .advertise
        .or_else(|| vm_addrs.first().copied())
        .ok_or_else(|| {
            ServerError::Config(ConfigError::Invalid(
                "cluster needs a plain VM listener or cluster.advertise".into(),
            ))
        })?;
    // The other instances' clients attach to this instance's VMs here.
    let listen = config
        .cluster
        .link_listen
        .unwrap_or_else(|| SocketAddr::new(link_ip(config, advertise), 0));
    let listener = bind(listen).await?;
    let bound = local_addr(&listener, listen);
    let id = config
        .cluster
        .instance
        .clone()
        .unwrap_or_else(|| cluster::default_instance(advertise));
    let me = Instance::new(id, config.cluster.link_advertise.unwrap_or(bound))
        .map_err(|e| ServerError::Config(ConfigError::Invalid(e.to_string())))?;
    tracing::info!(instance = %me.id, lease_ms = config.cluster.lease_ms, link = %bound, "sharing vMotions and VM port leases; listening for links from the site's other instances");
    let cluster = cluster::Cluster {
        state: state.clone(),
        advertise,
        instance: me.id.clone(),
        link: me.link,
        token: Arc::default(),
    };
    let owners = cluster::Ownership::new(me, config.cluster.lease());
    let task = owners.task(shared.clone(), state);
    shared
        .lock()
        .set_cluster(cluster.clone(), owners, Arc::downgrade(shared));
    let links = link::accept_links(shared.clone(), listener, cluster);
    Ok((vec![tokio::spawn(task), tokio::spawn(links)], bound))
}

/// At shutdown, gives up the leases this instance holds: the others may take its VMs at
/// once rather than when the leases lapse. Bounded: a store that does not answer is left.
async fn release_all(shared: &Shared) {
    let held = {
        let hub = shared.lock();
        hub.shared_state()
            .zip(hub.owners.as_ref())
            .map(|(state, o)| (state, o.me().clone(), o.held_ports()))
    };
    if let Some((state, me, ports)) = held.filter(|(_, _, ports)| !ports.is_empty()) {
        let released =
            tokio::time::timeout(Duration::from_secs(2), state.release(&me, &ports)).await;
        if !matches!(released, Ok(Ok(()))) {
            tracing::warn!("VM port leases not released at shutdown: they lapse by themselves");
        }
    }
}

/// Starts the web console on `listener`: its address, its URL with the token, its task.
#[cfg(feature = "web")]
fn start_web(
    shared: &Arc<Shared>,
    config: &ServerConfig,
    listener: TcpListener,
) -> Result<(SocketAddr, String, JoinHandle<()>), ServerError> {
    let web = web::start(shared, &config.web, listener)?;
    Ok((web.addr, web.url, web.task))
}

/// Without the `web` feature a configured console is an error, not silently absent.
#[cfg(not(feature = "web"))]
fn start_web(
    _shared: &Arc<Shared>,
    _config: &ServerConfig,
    _listener: TcpListener,
) -> Result<(SocketAddr, String, JoinHandle<()>), ServerError> {
    Err(ConfigError::Invalid(
        "web.listen is set, but vspc-server was built without its `web` feature".to_owned(),
    )
    .into())
}

/// Starts a server and serves until `shutdown` resolves (mini-redis style).
pub async fn run(
    config: ServerConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ServerError> {
    Server::start(config).await?.run_until(shutdown).await;
    Ok(())
}

/// Accepts connections on `listener` until shutdown, handing each to `serve`.
pub(crate) async fn accept_loop(
    shared: &Shared,
    listener: TcpListener,
    what: &'static str,
    mut serve: impl FnMut(TcpStream, SocketAddr),
) {
    let mut stop = shared.stop.subscribe();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|stop| *stop) => return,
        };
        match accepted {
            Ok((stream, peer)) => serve(stream, peer),
            Err(error) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(%error, listener = what, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn accept_vms(
    shared: Arc<Shared>,
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    config: Arc<ServerConfig>,
) {
    accept_loop(&shared, listener, "VM", |stream, peer| {
        if !access::admitted(&config.vm.allow, peer.ip()) {
            // Counted, and logged at debug only: a scan must not flood the log.
            shared.lock().vm_denied += 1;
            tracing::debug!(%peer, "VM connection from outside vm.allow refused");
            return;
        }
        vm_conn::set_keepalive(&stream, config.vm.keep_idle_secs);
        let shared = shared.clone();
        match &tls {
            None => {
                if let Some(link) = vm_conn::vm_link(shared, stream, peer, false) {
                    tokio::spawn(link);
                }
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let handshake =
                        tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                            .await;
                    match handshake {
                        Ok(Ok(stream)) => {
                            if let Some(link) = vm_conn::vm_link(shared, stream, peer, true) {
                                link.await;
                            }
                        }
                        Ok(Err(error)) => tracing::warn!(%peer, %error, "TLS handshake failed"),
                        Err(_) => tracing::warn!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        }
    })
    .await;
}

async fn accept_clients(shared: Arc<Shared>, listener: TcpListener, sticky: Option<VmId>) {
    accept_loop(&shared, listener, "client", |stream, peer| {
        tokio::spawn(client::serve_client(shared.clone(), stream, peer, sticky));
    })
    .await;
}

async fn accept_admin(shared: Arc<Shared>, listener: TcpListener) {
    accept_loop(&shared, listener, "admin", |stream, _| {
        tokio::spawn(admin::serve_admin(shared.clone(), stream));
    })
    .await;
}

/// Binds a sticky port for each new VM entry; the port lives as long as the entry.
async fn sticky_ports(
    shared: Arc<Shared>,
    mut rx: tokio::sync::mpsc::Receiver<VmId>,
    host: std::net::IpAddr,
    base: u16,
) {
    while let Some(vm) = rx.recv().await {
        let port = if base == 0 {
            0
        } else {
            u16::try_from(u64::from(base) + vm.0 - 1).unwrap_or(0)
        };
        let addr = SocketAddr::new(host, port);
        let listener = match TcpListener::bind(addr).await {
            Ok(listener) => listener,
            Err(error) => {
                tracing::warn!(vm = vm.0, %addr, %error, "cannot bind a sticky port");
                continue;
            }
        };
        let bound = local_addr(&listener, addr);
        let task = tokio::spawn(accept_clients(shared.clone(), listener, Some(vm)));
        let mut hub = shared.lock();
        if hub.core.vm(vm).is_some() {
            hub.sticky.insert(
                vm,
                hub::Sticky {
                    addr: bound,
                    task: task.abort_handle(),
                },
            );
            tracing::info!(vm = vm.0, addr = %bound, "sticky port");
        } else {
            task.abort();
        }
    }
}

/// Drives the core's deadlines (vMotion expiry, lingering entries) and flushes console logs
/// at least once per `tick`.
async fn run_timer(shared: Arc<Shared>, kick: Arc<Notify>, tick: Duration) {
    let mut stop = shared.stop.subscribe();
    loop {
        let next = shared.lock().next_deadline(Instant::now(), tick);
        tokio::select! {
            _ = tokio::time::sleep_until(next.into()) => {}
            _ = kick.notified() => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        shared.lock().on_timer(Instant::now());
    }
}
