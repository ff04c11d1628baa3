//! telnets: TLS from the first byte (tokio-rustls, ring), certificate and key from PEM files.

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::TlsAcceptor;
use vspc_backing::Thumbprint;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read or parsed as PEM.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The certificate file holds no certificate.
    #[error("no certificate in {0}")]
    NoCertificate(PathBuf),
    /// The key file holds no private key.
    #[error("no private key in {0}")]
    NoKey(PathBuf),
    /// rustls refused the certificate and key.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A TLS acceptor and the SHA-1 thumbprint of the leaf certificate (what a `proxyURI`'s
/// `#thumbprint=` carries).
pub(crate) struct Tls {
    pub(crate) acceptor: TlsAcceptor,
    pub(crate) thumbprint: Thumbprint,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

pub(crate) fn load(cert: &Path, key: &Path) -> Result<Tls, TlsError> {
    let cert_pem = read(cert)?;
    let certs = rustls_pemfile::certs(&mut BufReader::new(&cert_pem[..]))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Read {
            path: cert.to_owned(),
            source,
        })?;
    let leaf = certs
        .first()
        .ok_or_else(|| TlsError::NoCertificate(cert.to_owned()))?;
    let thumbprint = Thumbprint::sha1_of_der(leaf.as_ref());
    let key_pem = read(key)?;
    let key_der = rustls_pemfile::private_key(&mut BufReader::new(&key_pem[..]))
        .map_err(|source| TlsError::Read {
            path: key.to_owned(),
            source,
        })?
        .ok_or_else(|| TlsError::NoKey(key.to_owned()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key_der)?;
    Ok(Tls {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        thumbprint,
    })
}
