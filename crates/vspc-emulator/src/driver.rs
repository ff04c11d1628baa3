//! The tokio driver (feature `tokio`): emulated VMs over real sockets, `telnet` or `telnets`
//! (rustls), one VM or a fleet of thousands from one process.
//!
//! This is the IO layer of the sans-IO core: it owns the sockets and the clock. Each
//! [`Transmit::Write`] is one `write_all` on the socket, so segment boundaries survive as far
//! as the kernel keeps them (Nagle is off).

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use crate::connection::ConnId;
use crate::uri::{ProxyUri, Scheme};
use crate::vm::{EmulatedVm, EmulatorConfig, EmulatorEvent, Transmit};

trait Stream: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Stream for T {}

/// Where and how the VMs connect.
#[derive(Clone)]
pub struct Target {
    /// The proxy URI.
    pub uri: ProxyUri,
    /// TLS client configuration for `telnets` (`None` with `telnets` is an error at connect).
    pub tls: Option<TlsConnector>,
    /// At most this many connects in flight at once across everything sharing the target.
    pub connect_limit: Arc<Semaphore>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("uri", &self.uri)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Target {
    /// A target for `uri` allowing `max_connecting` concurrent connects.
    pub fn new(uri: ProxyUri, max_connecting: usize) -> Self {
        Target {
            uri,
            tls: None,
            connect_limit: Arc::new(Semaphore::new(max_connecting.max(1))),
        }
    }

    /// Uses TLS trusting exactly the given root certificates (DER), e.g. a test's self-signed
    /// certificate or a private CA.
    pub fn with_roots(mut self, roots: Vec<CertificateDer<'static>>) -> Result<Self, io::Error> {
        let mut store = RootCertStore::empty();
        for root in roots {
            store
                .add(root)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?
            .with_root_certificates(store)
            .with_no_client_auth();
        self.tls = Some(TlsConnector::from(Arc::new(config)));
        Ok(self)
    }

    /// Reads PEM certificates (for [`with_roots`](Self::with_roots)) from `pem`.
    pub fn roots_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, io::Error> {
        let mut reader = pem;
        rustls_pemfile::certs(&mut reader).collect()
    }

    async fn connect(&self, keep_idle: Duration) -> io::Result<Box<dyn Stream>> {
        let _permit = self
            .connect_limit
            .acquire()
            .await
            .map_err(|_| io::Error::other("connect limiter closed"))?;
        let tcp = TcpStream::connect((self.uri.host.as_str(), self.uri.port)).await?;
        tcp.set_nodelay(true)?;
        set_keepalive(&tcp, keep_idle)?;
        match self.uri.scheme {
            Scheme::Telnet => Ok(Box::new(tcp)),
            Scheme::Telnets => {
                let tls = self.tls.as_ref().ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidInput, "telnets without TLS roots")
                })?;
                let name = ServerName::try_from(self.uri.host.clone())
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                Ok(Box::new(tls.connect(name, tcp).await?))
            }
        }
    }
}

/// ESXi's keepalive on its connection to the proxy: idle `keepIdle`, then 5 probes every
/// keepIdle/100 (whole seconds, at least one), so a vanished proxy is given up on after about
/// keepIdle x 1.05.
fn set_keepalive(tcp: &TcpStream, keep_idle: Duration) -> io::Result<()> {
    let interval = (keep_idle / 100).max(Duration::from_secs(1));
    let params = socket2::TcpKeepalive::new()
        .with_time(keep_idle)
        .with_interval(interval);
    #[cfg(any(target_os = "linux", target_os = "macos", target_os = "freebsd"))]
    let params = params.with_retries(5);
    socket2::SockRef::from(tcp).set_tcp_keepalive(&params)
}

/// What one VM (or a fleet, summed) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Report {
    /// VMs run.
    pub vms: u64,
    /// Connections established.
    pub connected: u64,
    /// Times the proxy answered DO-PROXY with WILL-PROXY.
    pub identified: u64,
    /// Serial bytes the VMs sent.
    pub serial_sent: u64,
    /// Client bytes the VMs received.
    pub client_received: u64,
    /// vMotions completed.
    pub vmotions: u64,
    /// VMs whose received client bytes differ from their configured
    /// [`client_pattern`](crate::EmulatorConfig::client_pattern) (lost, reordered, duplicated
    /// or altered bytes).
    pub client_mismatches: u64,
    /// Connect failures, I/O errors and protocol errors.
    pub errors: u64,
}

impl Report {
    fn add(&mut self, other: &Report) {
        self.vms += other.vms;
        self.connected += other.connected;
        self.identified += other.identified;
        self.serial_sent += other.serial_sent;
        self.client_received += other.client_received;
        self.vmotions += other.vmotions;
        self.client_mismatches += other.client_mismatches;
        self.errors += other.errors;
    }
}

enum Input {
    Connected(
        ConnId,
        WriteHalf<Box<dyn Stream>>,
        ReadHalf<Box<dyn Stream>>,
    ),
    Failed(ConnId),
    Read(ConnId, Vec<u8>),
    Closed(ConnId),
}

/// Reads (and connection results) queued between the socket tasks and the VM's loop.
const READ_QUEUE: usize = 256;

/// Clock reads live here only: the driver is the IO layer.
#[allow(clippy::disallowed_methods)]
fn now() -> Instant {
    Instant::now()
}

/// Runs one VM against `target` for `duration`: powers it on, drives it, powers it off.
pub async fn run_vm(config: EmulatorConfig, target: Target, duration: Duration) -> Report {
    let mut vm = EmulatedVm::new(config);
    // Bounded: a VM that falls behind stops reading its sockets, which is TCP's own
    // backpressure toward the proxy.
    let (tx, mut rx) = mpsc::channel::<Input>(READ_QUEUE);
    let mut writers: Vec<(ConnId, WriteHalf<Box<dyn Stream>>)> = Vec::new();
    let mut report = Report {
        vms: 1,
        ..Report::default()
    };
    let keep_idle = vm.config().port.keep_idle;
    let end = now() + duration;
    vm.power_on(now());
    loop {
        while let Some(transmit) = vm.poll_transmit() {
            match transmit {
                Transmit::Open { conn } => {
                    let target = target.clone();
                    let connected = tx.clone();
                    tokio::spawn(async move {
                        let input = match target.connect(keep_idle).await {
                            Ok(stream) => {
                                let (read, write) = tokio::io::split(stream);
                                Input::Connected(conn, write, read)
                            }
                            Err(_) => Input::Failed(conn),
                        };
                        let _ = connected.send(input).await;
                    });
                    // Writes for a connection still connecting wait in the VM's order: park
                    // them by processing nothing more until it is connected or failed.
                    if !wait_connected(&mut rx, &mut vm, &mut writers, &tx, &mut report, conn).await
                    {
                        continue;
                    }
                }
                Transmit::Write { conn, bytes } => {
                    if let Some((_, writer)) = writers.iter_mut().find(|(c, _)| *c == conn) {
                        if writer.write_all(&bytes).await.is_err() {
                            report.errors += 1;
                        }
                    }
                }
                Transmit::Close { conn } => {
                    if let Some(at) = writers.iter().position(|(c, _)| *c == conn) {
                        let (_, mut writer) = writers.swap_remove(at);
                        let _ = writer.shutdown().await;
                    }
                }
            }
        }
        while let Some(event) = vm.poll_event() {
            match event {
                EmulatorEvent::ProxyAnswered { accepted: true, .. } => report.identified += 1,
                EmulatorEvent::ProtocolError { .. } => report.errors += 1,
                _ => {}
            }
        }
        if now() >= end {
            break;
        }
        let wake = vm.poll_timeout().map_or(end, |t| t.min(end));
        tokio::select! {
            input = rx.recv() => match input {
                Some(input) => handle(input, &mut vm, &mut writers, &tx, &mut report),
                None => break,
            },
            _ = tokio::time::sleep_until(wake.into()) => vm.handle_timeout(now()),
        }
    }
    vm.power_off();
    while let Some(transmit) = vm.poll_transmit() {
        if let Transmit::Close { conn } = transmit {
            if let Some(at) = writers.iter().position(|(c, _)| *c == conn) {
                let (_, mut writer) = writers.swap_remove(at);
                let _ = writer.shutdown().await;
            }
        }
    }
    report.serial_sent = vm.serial_sent();
    report.client_received = vm.recorder().total();
    report.vmotions = vm.stats().vmotions_completed;
    report.client_mismatches = u64::from(
        vm.recorder()
            .verifier()
            .is_some_and(|verifier| verifier.first_error().is_some()),
    );
    report
}

async fn wait_connected(
    rx: &mut mpsc::Receiver<Input>,
    vm: &mut EmulatedVm,
    writers: &mut Vec<(ConnId, WriteHalf<Box<dyn Stream>>)>,
    tx: &mpsc::Sender<Input>,
    report: &mut Report,
    conn: ConnId,
) -> bool {
    while let Some(input) = rx.recv().await {
        let done = matches!(&input, Input::Connected(c, ..) | Input::Failed(c) if *c == conn);
        let ok = matches!(&input, Input::Connected(..));
        handle(input, vm, writers, tx, report);
        if done {
            return ok;
        }
    }
    false
}

fn handle(
    input: Input,
    vm: &mut EmulatedVm,
    writers: &mut Vec<(ConnId, WriteHalf<Box<dyn Stream>>)>,
    tx: &mpsc::Sender<Input>,
    report: &mut Report,
) {
    match input {
        Input::Connected(conn, writer, mut reader) => {
            report.connected += 1;
            writers.push((conn, writer));
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    match reader.read(&mut buf).await {
                        Ok(0) | Err(_) => {
                            let _ = tx.send(Input::Closed(conn)).await;
                            return;
                        }
                        Ok(n) => {
                            if tx.send(Input::Read(conn, buf[..n].to_vec())).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
        Input::Failed(conn) => {
            report.errors += 1;
            vm.handle_closed(now(), conn);
        }
        Input::Read(conn, bytes) => vm.handle_input(now(), conn, &bytes),
        Input::Closed(conn) => {
            writers.retain(|(c, _)| *c != conn);
            vm.handle_closed(now(), conn);
        }
    }
}

/// Runs `count` VMs against `target` for `duration`, VM `n` configured by `config(n)`;
/// connects are bounded by the target's limiter. Returns the summed report.
pub async fn run_fleet(
    count: u64,
    target: Target,
    duration: Duration,
    config: impl Fn(u64) -> EmulatorConfig,
) -> Report {
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..count {
        tasks.spawn(run_vm(config(n), target.clone(), duration));
    }
    let mut total = Report::default();
    while let Some(result) = tasks.join_next().await {
        match result {
            Ok(report) => total.add(&report),
            Err(_) => total.errors += 1,
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_carry_esxi_keepalive() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        set_keepalive(&tcp, Duration::from_secs(300)).unwrap();
        let socket = socket2::SockRef::from(&tcp);
        assert!(socket.keepalive().unwrap());
        assert_eq!(socket.keepalive_time().unwrap(), Duration::from_secs(300));
        assert_eq!(socket.keepalive_interval().unwrap(), Duration::from_secs(3));
        assert_eq!(socket.keepalive_retries().unwrap(), 5);
    }
}
