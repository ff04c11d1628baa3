//! The concentrator as a library: everything but `main`, so integration tests can start it
//! in-process on ephemeral ports (`#[path = "../examples/proxy/lib.rs"] mod proxy;`).
//!
//! Layout: `hub` owns every `ProxySession`, the `Coordinator`, the VM registry and the
//! clients behind one `std::sync::Mutex`; `vm_conn` and `client` run one reader and one
//! writer task per connection; one timer task drives the sans-IO deadlines; `admin` serves
//! JSON and metrics; `logs` writes console logs; `tls` loads the telnets certificate.

// This module is the IO layer of the sans-IO libraries: reading the clock is its job.
#![allow(clippy::disallowed_methods)]

#[path = "admin.rs"]
mod admin;
#[path = "client.rs"]
mod client;
#[path = "config.rs"]
pub(crate) mod config;
#[path = "hub.rs"]
pub(crate) mod hub;
#[path = "logs.rs"]
mod logs;
#[path = "tls.rs"]
pub(crate) mod tls;
#[path = "vm_conn.rs"]
mod vm_conn;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

pub(crate) use config::Config;
use hub::{Hub, VmId};

/// State shared by every task.
pub(crate) struct Shared {
    hub: Mutex<Hub>,
    /// Set to true once on shutdown; every listener and connection watches it.
    stop: watch::Sender<bool>,
}

impl Shared {
    /// Locks the hub. A panic while it was held poisons it; the state is still consistent
    /// at every statement boundary we care about, so carry on rather than take the whole
    /// concentrator down.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Hub> {
        self.hub.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Why the concentrator could not start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProxyError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// A running concentrator.
pub(crate) struct Proxy {
    /// Bound telnet VM listeners.
    pub(crate) vm_addrs: Vec<SocketAddr>,
    /// Bound telnets VM listeners.
    pub(crate) tls_addrs: Vec<SocketAddr>,
    /// The client selection port.
    pub(crate) client_addr: SocketAddr,
    /// The admin listener.
    pub(crate) admin_addr: Option<SocketAddr>,
    /// `telnets://host:port#thumbprint=...` for each telnets listener.
    pub(crate) proxy_uris: Vec<String>,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

/// Listen backlog: a connect burst of thousands of VMs (a host's VMs after a restart) must
/// queue in the kernel, not overflow it: a dropped SYN costs the VM a 1 s retransmit. The
/// kernel caps it at `net.core.somaxconn`.
const BACKLOG: u32 = 8192;

async fn bind(addr: SocketAddr) -> Result<TcpListener, ProxyError> {
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
    listen().map_err(|source| ProxyError::Bind { addr, source })
}

fn local_addr(listener: &TcpListener, fallback: SocketAddr) -> SocketAddr {
    listener.local_addr().unwrap_or(fallback)
}

impl Proxy {
    /// Binds every listener and starts serving.
    pub(crate) async fn start(config: Config) -> Result<Proxy, ProxyError> {
        config.validate()?;
        let config = Arc::new(config);
        let timer = Arc::new(Notify::new());
        let (stop, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            hub: Mutex::new(Hub::new(config.clone(), timer.clone())),
            stop,
        });
        let mut tasks = Vec::new();

        let tls = match (&config.vm.tls_cert, &config.vm.tls_key) {
            (Some(cert), Some(key)) if !config.vm.tls_listen.is_empty() => {
                Some(tls::load(cert, key)?)
            }
            _ => None,
        };

        let mut vm_addrs = Vec::new();
        for &addr in &config.vm.listen {
            let listener = bind(addr).await?;
            vm_addrs.push(local_addr(&listener, addr));
            tasks.push(tokio::spawn(accept_vms(
                shared.clone(),
                listener,
                None,
                config.vm.keep_idle_secs,
            )));
        }
        let mut tls_addrs = Vec::new();
        let mut proxy_uris = Vec::new();
        if let Some(tls) = &tls {
            for &addr in &config.vm.tls_listen {
                let listener = bind(addr).await?;
                let bound = local_addr(&listener, addr);
                tls_addrs.push(bound);
                proxy_uris.push(format!("telnets://{bound}#thumbprint={}", tls.thumbprint));
                tasks.push(tokio::spawn(accept_vms(
                    shared.clone(),
                    listener,
                    Some(tls.acceptor.clone()),
                    config.vm.keep_idle_secs,
                )));
            }
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
        tasks.push(tokio::spawn(run_timer(shared.clone(), timer)));

        for addr in &vm_addrs {
            tracing::info!(%addr, "listening for VMs (telnet://{addr})");
        }
        for uri in &proxy_uris {
            tracing::info!(%uri, "listening for VMs (telnets); proxyURI");
        }
        tracing::info!(addr = %client_addr, "listening for clients");
        if let Some(addr) = admin_addr {
            tracing::info!(%addr, "admin: http://{addr}/vms and http://{addr}/metrics");
        }
        Ok(Proxy {
            vm_addrs,
            tls_addrs,
            client_addr,
            admin_addr,
            proxy_uris,
            shared,
            tasks,
        })
    }

    /// Reopens every console log (after rotation; what SIGHUP does).
    pub(crate) fn reopen_logs(&self) {
        self.shared.lock().reopen_logs();
    }

    /// The admin listing, as `GET /vms` returns it.
    #[allow(dead_code)] // for the integration tests
    pub(crate) fn snapshot(&self) -> serde_json::Value {
        self.shared.lock().snapshot()
    }

    /// The sticky port of a VM (selected as on the client port), once bound.
    #[allow(dead_code)] // for the integration tests
    pub(crate) fn sticky_addr(&self, selector: &str) -> Option<SocketAddr> {
        let hub = self.shared.lock();
        let vm = hub.resolve(selector).ok()?;
        hub.sticky_addr(vm)
    }

    /// Graceful shutdown: stops accepting, tells every client and closes it, writes what is
    /// queued for VMs, flushes the logs. Bounded by a few seconds.
    pub(crate) async fn shutdown(self) {
        tracing::info!("shutting down");
        self.shared.lock().shutdown();
        let _ = self.shared.stop.send(true);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            let busy = {
                let hub = self.shared.lock();
                hub.open_clients() + hub.open_vm_conns()
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
        tracing::info!("shut down");
    }
}

/// Runs until `shutdown` resolves, reopening logs whenever `reopen` yields.
pub(crate) async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
    mut reopen: tokio::sync::mpsc::Receiver<()>,
) -> Result<(), ProxyError> {
    let proxy = Proxy::start(config).await?;
    // Printed on stdout, not only logged: operators paste these into the VMs' backings and
    // scripts read them.
    for addr in &proxy.vm_addrs {
        println!("vm telnet://{addr}");
    }
    for (addr, uri) in proxy.tls_addrs.iter().zip(&proxy.proxy_uris) {
        println!("vm telnets {addr} proxyURI {uri}");
    }
    println!("clients telnet {}", proxy.client_addr);
    if let Some(addr) = proxy.admin_addr {
        println!("admin http://{addr}/vms http://{addr}/metrics");
    }
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(()) = reopen.recv() => proxy.reopen_logs(),
        }
    }
    proxy.shutdown().await;
    Ok(())
}

/// Sticky-port bind requests queued between the hub and the binder task.
const STICKY_QUEUE: usize = 4096;

/// Accepts connections on `listener` until shutdown, handing each to `serve`.
async fn accept_loop(
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
    keep_idle_secs: u32,
) {
    accept_loop(&shared, listener, "VM", |stream, peer| {
        vm_conn::set_keepalive(&stream, keep_idle_secs);
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

/// Binds a sticky port for each new VM entry; the port lives as long as the entry (which
/// lingers `vm.linger_secs` after the VM leaves).
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
            u16::try_from(u64::from(base) + vm - 1).unwrap_or(0)
        };
        let addr = SocketAddr::new(host, port);
        let listener = match TcpListener::bind(addr).await {
            Ok(listener) => listener,
            Err(error) => {
                tracing::warn!(vm, %addr, %error, "cannot bind a sticky port");
                continue;
            }
        };
        let bound = local_addr(&listener, addr);
        let task = tokio::spawn(accept_clients(shared.clone(), listener, Some(vm)));
        if shared.lock().set_sticky(vm, bound, task.abort_handle()) {
            tracing::info!(vm, addr = %bound, "sticky port");
        } else {
            task.abort();
        }
    }
}

/// Drives every deadline of the sans-IO state (coordinator, held sessions) plus the
/// once-a-second housekeeping (log flush, lingering entries).
async fn run_timer(shared: Arc<Shared>, kick: Arc<Notify>) {
    let mut stop = shared.stop.subscribe();
    loop {
        let next = shared.lock().next_deadline(Instant::now());
        tokio::select! {
            _ = tokio::time::sleep_until(next.into()) => {}
            _ = kick.notified() => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        shared.lock().on_timer(Instant::now());
    }
}
