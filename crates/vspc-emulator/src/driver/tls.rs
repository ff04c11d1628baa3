//! How the emulated host verifies a `telnets` proxy: as ESXi does, by the proxyURI's
//! authentication parameters (`#thumbprint=`, `certificate=`, `peerName=`, `verify`), not by a
//! CA store alone.
//!
//! The rules (all that are given must hold):
//! - `thumbprint=<hex>`: the SHA-1 (20 pairs, what vSphere prints) or SHA-256 (32 pairs) of the
//!   proxy's leaf certificate (DER) equals it.
//! - `certificate=<PEM>`: the leaf certificate is exactly this one.
//! - `peerName=<name>`: the leaf certificate is valid for this name (instead of the URI's
//!   host).
//! - With neither `thumbprint` nor `certificate` (nothing pinned), the chain must verify
//!   against the root certificates given to the
//!   [`TargetBuilder`](super::TargetBuilder) (with `peerName` or, failing that, the URI's
//!   host as the name): a proxyURI that pins nothing needs roots.
//!
//! The handshake's signatures are always verified with the leaf's key, so a pin cannot be
//! replayed without the proxy's private key. Every refusal is a [`TlsRejection`], reported in
//! [`ConnectError::Rejected`](super::ConnectError::Rejected).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme};
use vspc_backing::{AuthKey, AuthParams, Thumbprint};

/// Why the emulated host refused the proxy's certificate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TlsRejection {
    /// The leaf certificate's digest is not the proxyURI's `thumbprint=`.
    #[error("thumbprint mismatch: expected {expected}, got {got}")]
    ThumbprintMismatch {
        /// The proxyURI's thumbprint.
        expected: Thumbprint,
        /// The proxy's leaf certificate's digest (same algorithm as `expected`).
        got: Thumbprint,
    },
    /// The leaf certificate is not the proxyURI's `certificate=`.
    #[error("certificate mismatch: expected the pinned certificate {expected}, got {got} (SHA-1)")]
    CertificateMismatch {
        /// SHA-1 thumbprint of the pinned certificate.
        expected: Thumbprint,
        /// SHA-1 thumbprint of the proxy's leaf certificate.
        got: Thumbprint,
    },
    /// The leaf certificate is not valid for the proxyURI's `peerName=`.
    #[error("peer name mismatch: the certificate is not valid for {expected:?} ({reason})")]
    PeerNameMismatch {
        /// The name required.
        expected: String,
        /// What the certificate check said.
        reason: String,
    },
    /// Nothing is pinned and the chain does not verify against the given roots.
    #[error("untrusted certificate: {reason}")]
    Untrusted {
        /// What the chain check said.
        reason: String,
    },
    /// Nothing is pinned (no `thumbprint` or `certificate`) and no root certificates were
    /// given, so nothing could vouch for the proxy.
    #[error("no trust anchor: the proxyURI pins no thumbprint or certificate and no root certificates were given")]
    NoTrustAnchor,
}

impl TlsRejection {
    /// Finds the rejection inside an error from a TLS connect, if a rejection caused it.
    pub(crate) fn find(error: &std::io::Error) -> Option<TlsRejection> {
        let rustls = error.get_ref()?.downcast_ref::<rustls::Error>()?;
        match rustls {
            rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner))) => {
                inner.downcast_ref::<TlsRejection>().cloned()
            }
            _ => None,
        }
    }

    fn into_rustls(self) -> rustls::Error {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(self))))
    }
}

/// Why the proxyURI's authentication parameters cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// `thumbprint=` is not 20 or 32 colon-separated hex pairs.
    #[error("thumbprint: {0}")]
    Thumbprint(#[from] vspc_backing::ThumbprintError),
    /// `certificate=` holds no PEM certificate.
    #[error("certificate= holds no PEM certificate")]
    Certificate,
    /// `peerName=` is not a DNS name or IP address.
    #[error("peerName={0:?} is not a DNS name or IP address")]
    PeerName(String),
    /// A root certificate was refused.
    #[error("root certificate: {0}")]
    Root(String),
}

/// What the proxyURI asks of the proxy's certificate.
#[derive(Debug)]
pub(crate) struct ProxyVerifier {
    thumbprint: Option<Thumbprint>,
    certificate: Option<CertificateDer<'static>>,
    peer_name: Option<(String, ServerName<'static>)>,
    roots: Option<Arc<WebPkiServerVerifier>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ProxyVerifier {
    pub(crate) fn new(
        auth: &AuthParams,
        roots: &[CertificateDer<'static>],
        provider: &Arc<CryptoProvider>,
    ) -> Result<ProxyVerifier, PolicyError> {
        let thumbprint = auth
            .get(AuthKey::Thumbprint)
            .map(str::parse::<Thumbprint>)
            .transpose()?;
        let certificate = match auth.get(AuthKey::Certificate) {
            None => None,
            Some(pem) => {
                let mut reader = pem.as_bytes();
                let first = rustls_pemfile::certs(&mut reader).next();
                Some(first.and_then(Result::ok).ok_or(PolicyError::Certificate)?)
            }
        };
        let peer_name = auth
            .get(AuthKey::PeerName)
            .map(|name| {
                ServerName::try_from(name.to_owned())
                    .map(|server| (name.to_owned(), server))
                    .map_err(|_| PolicyError::PeerName(name.to_owned()))
            })
            .transpose()?;
        let roots = if roots.is_empty() {
            None
        } else {
            let mut store = RootCertStore::empty();
            for root in roots {
                store
                    .add(root.clone())
                    .map_err(|e| PolicyError::Root(e.to_string()))?;
            }
            Some(
                WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider.clone())
                    .build()
                    .map_err(|e| PolicyError::Root(e.to_string()))?,
            )
        };
        Ok(ProxyVerifier {
            thumbprint,
            certificate,
            peer_name,
            roots,
            algorithms: provider.signature_verification_algorithms,
        })
    }

    /// The checks on the leaf (and chain), without the handshake signatures.
    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        now: UnixTime,
    ) -> Result<(), TlsRejection> {
        if let Some(expected) = &self.thumbprint {
            let got = digest_like(expected, end_entity);
            if got != *expected {
                return Err(TlsRejection::ThumbprintMismatch {
                    expected: expected.clone(),
                    got,
                });
            }
        }
        if let Some(pinned) = &self.certificate {
            if pinned.as_ref() != end_entity.as_ref() {
                return Err(TlsRejection::CertificateMismatch {
                    expected: Thumbprint::sha1_of_der(pinned),
                    got: Thumbprint::sha1_of_der(end_entity),
                });
            }
        }
        let pinned = self.thumbprint.is_some() || self.certificate.is_some();
        let name = self.peer_name.as_ref().map_or(server_name, |(_, n)| n);
        if !pinned {
            let roots = self.roots.as_ref().ok_or(TlsRejection::NoTrustAnchor)?;
            return roots
                .verify_server_cert(end_entity, intermediates, name, &[], now)
                .map(|_| ())
                .map_err(|e| match (&self.peer_name, e) {
                    (Some((expected, _)), rustls::Error::InvalidCertificate(reason))
                        if matches!(
                            reason,
                            CertificateError::NotValidForName
                                | CertificateError::NotValidForNameContext { .. }
                        ) =>
                    {
                        TlsRejection::PeerNameMismatch {
                            expected: expected.clone(),
                            reason: format!("{reason:?}"),
                        }
                    }
                    (_, e) => TlsRejection::Untrusted {
                        reason: e.to_string(),
                    },
                });
        }
        if let Some((expected, name)) = &self.peer_name {
            let reason = |e: rustls::Error| TlsRejection::PeerNameMismatch {
                expected: expected.clone(),
                reason: e.to_string(),
            };
            let parsed = ParsedCertificate::try_from(end_entity).map_err(reason)?;
            rustls::client::verify_server_name(&parsed, name).map_err(reason)?;
        }
        Ok(())
    }
}

/// The leaf's digest with the algorithm of `expected` (SHA-256 for 32 bytes, else SHA-1).
fn digest_like(expected: &Thumbprint, der: &[u8]) -> Thumbprint {
    if expected.as_bytes().len() == 32 {
        let digest = ring::digest::digest(&ring::digest::SHA256, der);
        Thumbprint::from_digest(digest.as_ref()).unwrap_or_else(|_| Thumbprint::sha1_of_der(der))
    } else {
        Thumbprint::sha1_of_der(der)
    }
}

impl ServerCertVerifier for ProxyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity, intermediates, server_name, now)
            .map(|()| ServerCertVerified::assertion())
            .map_err(TlsRejection::into_rustls)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(names: &[&str]) -> CertificateDer<'static> {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        rcgen::generate_simple_self_signed(names)
            .unwrap()
            .cert
            .der()
            .clone()
    }

    fn verifier(auth: &str, roots: &[CertificateDer<'static>]) -> ProxyVerifier {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        ProxyVerifier::new(&auth.parse().unwrap(), roots, &provider).unwrap()
    }

    fn check(v: &ProxyVerifier, leaf: &CertificateDer<'_>) -> Result<(), TlsRejection> {
        let host = ServerName::try_from("127.0.0.1").unwrap();
        v.check(leaf, &[], &host, UnixTime::now())
    }

    #[test]
    fn thumbprints_pin_the_leaf_by_sha1_or_sha256() {
        let leaf = cert(&["localhost"]);
        let sha1 = Thumbprint::sha1_of_der(&leaf);
        assert_eq!(
            check(&verifier(&format!("thumbprint={sha1}"), &[]), &leaf),
            Ok(())
        );
        let lower = sha1.to_string().to_lowercase();
        assert_eq!(
            check(&verifier(&format!("thumbprint={lower}"), &[]), &leaf),
            Ok(())
        );
        let sha256 = digest_like(&Thumbprint::from_digest(&[0; 32]).unwrap(), &leaf);
        assert_eq!(
            check(&verifier(&format!("thumbprint={sha256}"), &[]), &leaf),
            Ok(())
        );

        let other = cert(&["localhost"]);
        let wrong = Thumbprint::sha1_of_der(&other);
        let rejection = check(&verifier(&format!("thumbprint={wrong}"), &[]), &leaf).unwrap_err();
        assert_eq!(
            rejection.to_string(),
            format!("thumbprint mismatch: expected {wrong}, got {sha1}")
        );
    }

    #[test]
    fn a_pinned_certificate_must_be_the_leaf() {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let leaf = certified.cert.der().clone();
        let pem = certified.cert.pem();
        assert_eq!(
            check(&verifier(&format!("certificate={pem}"), &[]), &leaf),
            Ok(())
        );
        let other = cert(&["localhost"]);
        assert!(matches!(
            check(&verifier(&format!("certificate={pem}"), &[]), &other),
            Err(TlsRejection::CertificateMismatch { .. })
        ));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let bad = "certificate=not a pem".parse().unwrap();
        assert_eq!(
            ProxyVerifier::new(&bad, &[], &provider).unwrap_err(),
            PolicyError::Certificate
        );
    }

    #[test]
    fn peer_names_are_checked_against_the_certificate() {
        let leaf = cert(&["vspc.example.com"]);
        let sha1 = Thumbprint::sha1_of_der(&leaf);
        let ok = verifier(&format!("thumbprint={sha1}&peerName=vspc.example.com"), &[]);
        assert_eq!(check(&ok, &leaf), Ok(()));
        let wrong = verifier(
            &format!("thumbprint={sha1}&peerName=other.example.com"),
            &[],
        );
        assert!(matches!(
            check(&wrong, &leaf),
            Err(TlsRejection::PeerNameMismatch { expected, .. }) if expected == "other.example.com"
        ));
        // Not pinned: the chain against the roots, with peerName as the name.
        let by_roots = verifier("peerName=vspc.example.com", std::slice::from_ref(&leaf));
        assert_eq!(check(&by_roots, &leaf), Ok(()));
        let by_roots = verifier("peerName=other.example.com", std::slice::from_ref(&leaf));
        assert!(matches!(
            check(&by_roots, &leaf),
            Err(TlsRejection::PeerNameMismatch { .. })
        ));
    }

    #[test]
    fn nothing_pinned_needs_roots() {
        let leaf = cert(&["localhost"]);
        assert_eq!(
            check(&verifier("verify", &[]), &leaf),
            Err(TlsRejection::NoTrustAnchor)
        );
        let stranger = cert(&["localhost"]);
        assert!(matches!(
            check(&verifier("verify", &[stranger]), &leaf),
            Err(TlsRejection::Untrusted { .. })
        ));
    }
}
