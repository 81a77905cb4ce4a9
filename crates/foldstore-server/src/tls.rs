//! HTTPS: TLS termination with rustls (ring provider) in front of the same router.
//!
//! [`serve_tls`] runs the connection loop HTTP uses (`serving.rs`: same graceful
//! shutdown, same connection handling) with a TLS handshake first on each connection,
//! in the connection's own task and with a timeout, so a client that stalls
//! mid-handshake never holds up the others. ALPN offers `h2` and `http/1.1`.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use foldstore_core::EventStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::ServerConfig;

/// Why the certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("could not load {what} from {}: {detail}", path.display())]
    Pem {
        /// `certificate` or `private key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// rustls refused the pair (for instance, the key does not match the certificate).
    #[error(
        "the certificate and key cannot be used together: {0}; check that --tls-key is the key of --tls-cert"
    )]
    Config(#[from] rustls::Error),
}

/// A server certificate chain and its key, ready to serve.
#[derive(Clone)]
pub struct TlsConfig(Arc<rustls::ServerConfig>);

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsConfig(..)")
    }
}

impl TlsConfig {
    /// Loads a PEM certificate chain (leaf first) and a PEM private key (PKCS#8, PKCS#1
    /// or SEC1).
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let pem = |what: &'static str, path: &Path, detail: String| TlsError::Pem {
            what,
            path: path.to_path_buf(),
            detail,
        };
        let certs = CertificateDer::pem_file_iter(cert)
            .map_err(|e| pem("certificate", cert, e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem("certificate", cert, e.to_string()))?;
        if certs.is_empty() {
            return Err(pem(
                "certificate",
                cert,
                "no CERTIFICATE block found".to_owned(),
            ));
        }
        let key = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| pem("private key", key, e.to_string()))?;
        Self::new(certs, key)
    }

    /// A configuration from DER certificates and key.
    pub fn new(
        certs: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self(Arc::new(config)))
    }
}

/// [`crate::serve`] over HTTPS: the same API, TLS terminated with `tls`.
pub async fn serve_tls(
    listener: TcpListener,
    tls: TlsConfig,
    store: Arc<dyn EventStore>,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let (router, stop) = crate::build(store, config.clone(), true);
    let acceptor = TlsAcceptor::from(tls.0);
    crate::serving::serve(listener, Some(acceptor), router, &config, stop, shutdown).await
}
