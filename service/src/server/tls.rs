//! TLS for the API (`[server.tls]`): a certificate chain and its key, PEM
//! files, served with rustls. Tokens are bearer secrets: on any address
//! but loopback the service refuses to start without TLS unless the
//! configuration says `allow_plain_http = true` outright.

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;

/// The certificate and key files (`[server.tls]`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The certificate chain, PEM, the server's own certificate first.
    pub cert_file: PathBuf,
    /// Its private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read or holds no PEM of the kind needed.
    #[error("{path}: {what}")]
    File {
        /// The file.
        path: String,
        /// What is wrong with it.
        what: String,
    },
    /// rustls refused the certificate and key (a key that is not the
    /// certificate's, say).
    #[error("the certificate and key were refused")]
    Refused(#[source] rustls::Error),
}

impl TlsFiles {
    /// The files taken from `base` when they are relative.
    pub(crate) fn relative_to(&self, base: &Path) -> Self {
        Self { cert_file: base.join(&self.cert_file), key_file: base.join(&self.key_file) }
    }

    /// An acceptor that serves the certificate, HTTP/1.1 only.
    pub fn acceptor(&self) -> Result<TlsAcceptor, TlsError> {
        let file_error = |path: &Path, what: String| TlsError::File { path: path.display().to_string(), what };
        let certificates = CertificateDer::pem_file_iter(&self.cert_file)
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(|error| file_error(&self.cert_file, format!("not a PEM certificate chain: {error}")))?;
        if certificates.is_empty() {
            return Err(file_error(&self.cert_file, "holds no certificate".into()));
        }
        let key = PrivateKeyDer::from_pem_file(&self.key_file)
            .map_err(|error| file_error(&self.key_file, format!("not a PEM private key: {error}")))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Refused)?
            .with_no_client_auth()
            .with_single_cert(certificates, key)
            .map_err(TlsError::Refused)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}
