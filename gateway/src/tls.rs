//! TLS on the public side: rustls with the `ring` provider, TLS 1.2 and 1.3, ALPN `http/1.1`,
//! and a certificate that can be replaced while the process runs (SIGHUP): new handshakes get the
//! new chain, live connections keep theirs.
//!
//! The TLS stream is `tokio-rustls` over monoio's readiness-based (`poll-io`) TCP stream, so a
//! TLS connection runs through the very same connection loop as a plain one (see
//! `docs/decisions.md`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;

/// Why the certificate or key could not be loaded. Never includes key material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no usable PEM item.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// rustls refused the chain or key (for example, the key does not match the certificate).
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The current certificate, swapped on reload.
#[derive(Debug)]
struct CertResolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

/// The TLS side of the public listener.
#[derive(Clone)]
pub struct Tls {
    /// Accepts TLS connections (shared by every shard).
    pub acceptor: TlsAcceptor,
    resolver: Arc<CertResolver>,
    provider: Arc<CryptoProvider>,
    cert_file: PathBuf,
    key_file: PathBuf,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("cert_file", &self.cert_file)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Loads the certificate chain and key and builds the server configuration.
    pub fn new(config: &TlsConfig) -> Result<Tls, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = load(&config.cert_file, &config.key_file, &provider)?;
        let resolver = Arc::new(CertResolver {
            current: RwLock::new(Arc::new(key)),
        });
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            resolver,
            provider,
            cert_file: config.cert_file.clone(),
            key_file: config.key_file.clone(),
        })
    }

    /// Re-reads the certificate and key files. On error the current certificate stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let key = load(&self.cert_file, &self.key_file, &self.provider)?;
        *self
            .resolver
            .current
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Arc::new(key);
        Ok(())
    }
}

fn load(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let file_error = |path: &Path, reason: String| TlsError::File {
        path: path.display().to_string(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| file_error(cert, e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(file_error(cert, "no CERTIFICATE in the file".into()));
    }
    // The error of a key file names the file only: its text may hold key material.
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|_| file_error(key, "no readable private key (PEM) in the file".into()))?;
    Ok(CertifiedKey::from_der(chain, key_der, provider)?)
}
