//! Where the VMs connect ([`Target`]) and one connection to the proxy (TCP, or TLS for
//! `telnets`, with ESXi's keepalive).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::ClientConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use vspc_backing::{KeepIdle, ProxyScheme, ProxyUri};

use super::tls::{PolicyError, ProxyVerifier, TlsRejection};

/// Why a [`Target`] cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TargetError {
    /// The proxyURI's authentication parameters (or the roots) cannot be used.
    #[error("{0}")]
    Policy(#[from] PolicyError),
    /// The host is not a name TLS can carry.
    #[error("the host {0:?} is not a DNS name or IP address")]
    Host(String),
    /// TLS could not be configured.
    #[error("TLS configuration: {0}")]
    Tls(String),
}

/// Why a connection to the proxy could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// TCP connect failed.
    #[error("TCP connect to {uri}: {source}")]
    Tcp {
        /// The proxyURI (without its parameters).
        uri: String,
        /// The socket error.
        source: io::Error,
    },
    /// The proxy's certificate was refused (see [`TlsRejection`]).
    #[error("TLS: the proxy's certificate was refused: {0}")]
    Rejected(TlsRejection),
    /// The TLS handshake failed otherwise.
    #[error("TLS handshake: {0}")]
    Handshake(io::Error),
    /// The connect (TCP and TLS) took longer than the target's connect timeout.
    #[error("connect timed out after {0:?}")]
    Timeout(Duration),
}

/// Where and how VMs connect: a backing's proxyURI, verified as ESXi verifies it.
///
/// Cheap to clone; clones share one limit of connects in flight.
#[derive(Clone)]
pub struct Target {
    uri: ProxyUri,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    connect_limit: Arc<Semaphore>,
    connect_timeout: Duration,
    loopback_sources: bool,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("uri", &self.uri.to_string())
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// Builds a [`Target`].
#[derive(Debug, Clone)]
pub struct TargetBuilder {
    uri: ProxyUri,
    roots: Vec<CertificateDer<'static>>,
    max_connecting: usize,
    connect_timeout: Duration,
    loopback_sources: bool,
}

impl TargetBuilder {
    /// Trusts these root certificates (DER) for a `telnets` proxyURI that pins neither a
    /// `thumbprint` nor a `certificate` (see the [`tls`](super::tls) rules).
    #[must_use]
    pub fn roots(mut self, roots: Vec<CertificateDer<'static>>) -> Self {
        self.roots = roots;
        self
    }

    /// At most this many connects in flight at once across every VM sharing the target
    /// (default 256; 0 counts as 1).
    #[must_use]
    pub fn max_connecting(mut self, max: usize) -> Self {
        self.max_connecting = max.max(1);
        self
    }

    /// Gives up a connect (TCP and TLS) after this long (default 10 s).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Connects VM `n` from loopback address 127.0.0.(2 + n mod 253) when the proxy is on
    /// IPv4 loopback: a load generator holding tens of thousands of connections from one
    /// address spends much of its CPU in the kernel's search for a free ephemeral port.
    #[must_use]
    pub fn loopback_sources(mut self, on: bool) -> Self {
        self.loopback_sources = on;
        self
    }

    /// The target.
    pub fn build(self) -> Result<Target, TargetError> {
        let tls = match self.uri.scheme() {
            ProxyScheme::Telnet => None,
            ProxyScheme::Telnets => {
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let verifier = ProxyVerifier::new(self.uri.auth(), &self.roots, &provider)?;
                let config = ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|e| TargetError::Tls(e.to_string()))?
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(verifier))
                    .with_no_client_auth();
                let host = self.uri.host().as_str().to_owned();
                let name =
                    ServerName::try_from(host.clone()).map_err(|_| TargetError::Host(host))?;
                Some((TlsConnector::from(Arc::new(config)), name))
            }
        };
        Ok(Target {
            uri: self.uri,
            tls,
            connect_limit: Arc::new(Semaphore::new(self.max_connecting)),
            connect_timeout: self.connect_timeout,
            loopback_sources: self.loopback_sources,
        })
    }
}

impl Target {
    /// A builder for `uri` (256 connects in flight, a 10 s connect timeout, no roots).
    pub fn builder(uri: ProxyUri) -> TargetBuilder {
        TargetBuilder {
            uri,
            roots: Vec::new(),
            max_connecting: 256,
            connect_timeout: Duration::from_secs(10),
            loopback_sources: false,
        }
    }

    /// A target for `uri` with the builder's defaults: for `telnets`, the proxy is verified
    /// by the URI's `thumbprint`, `certificate` and `peerName` parameters alone.
    pub fn new(uri: ProxyUri) -> Result<Target, TargetError> {
        Target::builder(uri).build()
    }

    /// The proxyURI.
    pub fn uri(&self) -> &ProxyUri {
        &self.uri
    }

    /// Reads PEM certificates (for [`TargetBuilder::roots`]).
    pub fn roots_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, io::Error> {
        let mut reader = pem;
        rustls_pemfile::certs(&mut reader).collect()
    }

    /// Connects VM `n`: TCP (no Nagle, ESXi's keepalive), then TLS for `telnets`.
    pub(crate) async fn connect(&self, n: u64, keep_idle: KeepIdle) -> Result<Link, ConnectError> {
        let connect = async {
            let _permit = self.connect_limit.acquire().await;
            let tcp = self
                .connect_tcp(n, keep_idle)
                .await
                .map_err(|source| ConnectError::Tcp {
                    uri: format!(
                        "{}://{}:{}",
                        self.uri.scheme(),
                        self.uri.host(),
                        self.uri.port()
                    ),
                    source,
                })?;
            match &self.tls {
                None => Ok(Link::Tcp(tcp)),
                Some((connector, name)) => match connector.connect(name.clone(), tcp).await {
                    Ok(tls) => Ok(Link::Tls(Box::new(tls), vec![0; READ_BUFFER].into())),
                    Err(error) => Err(match TlsRejection::find(&error) {
                        Some(rejection) => ConnectError::Rejected(rejection),
                        None => ConnectError::Handshake(error),
                    }),
                },
            }
        };
        tokio::time::timeout(self.connect_timeout, connect)
            .await
            .unwrap_or(Err(ConnectError::Timeout(self.connect_timeout)))
    }

    async fn connect_tcp(&self, n: u64, keep_idle: KeepIdle) -> io::Result<TcpStream> {
        let host = self.uri.host().as_str();
        let port = self.uri.port();
        let tcp = match host.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(ip)) if self.loopback_sources && ip.is_loopback() => {
                let socket = tokio::net::TcpSocket::new_v4()?;
                let last = 2 + (n % 253) as u8;
                socket.bind(SocketAddr::from(([127, 0, 0, last], 0)))?;
                socket.connect(SocketAddr::from((ip, port))).await?
            }
            _ => TcpStream::connect((host, port)).await?,
        };
        tcp.set_nodelay(true)?;
        set_keepalive(&tcp, keep_idle)?;
        Ok(tcp)
    }
}

/// ESXi's keepalive on its connection to the proxy ([`KeepIdle::tcp_keepalive`]).
fn set_keepalive(tcp: &TcpStream, keep_idle: KeepIdle) -> io::Result<()> {
    socket2::SockRef::from(tcp).set_tcp_keepalive(&keep_idle.tcp_keepalive())
}

/// The most one read takes from a connection.
pub(crate) const READ_BUFFER: usize = 16 * 1024;

/// One open connection. A TCP one holds no read buffer while idle (it is read on readiness
/// into the reader's stack); a TLS one keeps its own, beside rustls's much larger ones.
pub(crate) enum Link {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>, Box<[u8]>),
}

/// What waiting on a link found.
pub(crate) enum Ready {
    /// The TCP socket is readable: read it with [`Link::try_read`].
    Readable,
    /// A TLS read completed into the link's buffer (0: EOF).
    Read(io::Result<usize>),
}

impl Link {
    pub(crate) fn is_tls(&self) -> bool {
        matches!(self, Link::Tls(..))
    }

    /// Waits until there is something to read. Cancel-safe: nothing is lost when dropped.
    pub(crate) async fn ready(&mut self) -> Ready {
        match self {
            Link::Tcp(tcp) => {
                let _ = tcp.readable().await;
                Ready::Readable
            }
            Link::Tls(tls, buf) => Ready::Read(tls.read(buf).await),
        }
    }

    /// A TCP read into `buf` without waiting (`WouldBlock` when readiness was spurious).
    pub(crate) fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Link::Tcp(tcp) => tcp.try_read(buf),
            Link::Tls(..) => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    /// What the last TLS read put in the buffer.
    pub(crate) fn tls_buffer(&self, len: usize) -> &[u8] {
        match self {
            Link::Tls(_, buf) => buf.get(..len).unwrap_or_default(),
            Link::Tcp(_) => &[],
        }
    }

    /// One write, whole.
    pub(crate) async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Link::Tcp(tcp) => tcp.write_all(bytes).await,
            Link::Tls(tls, _) => {
                tls.write_all(bytes).await?;
                tls.flush().await
            }
        }
    }

    /// FIN (after TLS's close_notify).
    pub(crate) async fn shutdown(&mut self) {
        let _ = match self {
            Link::Tcp(tcp) => tcp.shutdown().await,
            Link::Tls(tls, _) => tls.shutdown().await,
        };
    }
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
        set_keepalive(&tcp, KeepIdle::from_secs(300)).unwrap();
        let socket = socket2::SockRef::from(&tcp);
        assert!(socket.keepalive().unwrap());
        assert_eq!(socket.keepalive_time().unwrap(), Duration::from_secs(300));
        assert_eq!(socket.keepalive_interval().unwrap(), Duration::from_secs(3));
        assert_eq!(socket.keepalive_retries().unwrap(), 5);
    }
}
