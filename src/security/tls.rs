//! TLS from PEM files. Server side (Flight and HTTP): the certificate chain
//! and key, and optionally a CA whose signature client certificates must
//! carry (mutual TLS: a client without such a certificate is refused during
//! the handshake). Client side (Cassandra, OpenSearch): the CA that signed
//! the backend's certificates. Files are read and checked once at start,
//! with errors that name the file and the problem.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The PEM contents, checked to parse.
#[derive(Clone)]
pub struct TlsFiles {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    /// Set = clients must present a certificate signed by this CA.
    pub client_ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("TlsFiles").field("mutual", &self.client_ca_pem.is_some()).finish_non_exhaustive()
    }
}

/// Why TLS cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {source}")]
    Read { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("{what} {path}: {message}")]
    Pem { what: &'static str, path: PathBuf, message: String },
    #[error("TLS needs both a certificate and a key (tls.cert and tls.key); only the {0} is set")]
    Half(&'static str),
    #[error("tls.client_ca is set but tls.cert / tls.key are not: mutual TLS needs server TLS")]
    CaWithoutTls,
    #[error("TLS configuration: {0}")]
    Rustls(String),
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { what, path: path.to_path_buf(), source })
}

fn certificates(what: &'static str, path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem).collect::<Result<_, _>>().map_err(|e| TlsError::Pem {
        what,
        path: path.to_path_buf(),
        message: format!("not PEM: {e}"),
    })?;
    if certs.is_empty() {
        return Err(TlsError::Pem { what, path: path.to_path_buf(), message: "holds no CERTIFICATE".into() });
    }
    Ok(certs)
}

impl TlsFiles {
    /// Reads the files; None when neither certificate nor key is set.
    pub fn load(cert: &str, key: &str, client_ca: &str) -> Result<Option<Self>, TlsError> {
        match (cert.is_empty(), key.is_empty()) {
            (true, true) if client_ca.is_empty() => return Ok(None),
            (true, true) => return Err(TlsError::CaWithoutTls),
            (false, true) => return Err(TlsError::Half("certificate")),
            (true, false) => return Err(TlsError::Half("key")),
            (false, false) => {}
        }
        let (cert_path, key_path) = (Path::new(cert), Path::new(key));
        let cert_pem = read("TLS certificate", cert_path)?;
        certificates("TLS certificate", cert_path, &cert_pem)?;
        let key_pem = read("TLS key", key_path)?;
        PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Pem {
            what: "TLS key",
            path: key_path.to_path_buf(),
            message: format!("no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {e}"),
        })?;
        let client_ca_pem = if client_ca.is_empty() {
            None
        } else {
            let path = Path::new(client_ca);
            let pem = read("client CA", path)?;
            certificates("client CA", path, &pem)?;
            Some(pem)
        };
        let files = Self { cert_pem, key_pem, client_ca_pem };
        // Fail now, not at the first connection, if rustls refuses the pair.
        files.rustls_server_config()?;
        Ok(Some(files))
    }

    /// The rustls configuration of the HTTP listener.
    pub fn rustls_server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let certs = CertificateDer::pem_slice_iter(&self.cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::Rustls(e.to_string()))?;
        let key = PrivateKeyDer::from_pem_slice(&self.key_pem).map_err(|e| TlsError::Rustls(e.to_string()))?;
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Rustls(e.to_string()))?;
        let builder = match &self.client_ca_pem {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(ca) {
                    roots
                        .add(cert.map_err(|e| TlsError::Rustls(e.to_string()))?)
                        .map_err(|e| TlsError::Rustls(format!("client CA certificate refused: {e}")))?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .map_err(|e| TlsError::Rustls(format!("client CA: {e}")))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder
            .with_single_cert(certs, key)
            .map_err(|e| TlsError::Rustls(format!("certificate and key do not make a usable pair: {e}")))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// The tonic configuration of the Flight listener.
    pub fn tonic_server_config(&self) -> tonic::transport::ServerTlsConfig {
        let identity = tonic::transport::Identity::from_pem(&self.cert_pem, &self.key_pem);
        let config = tonic::transport::ServerTlsConfig::new().identity(identity);
        match &self.client_ca_pem {
            Some(ca) => config.client_ca_root(tonic::transport::Certificate::from_pem(ca)).client_auth_optional(false),
            None => config,
        }
    }
}

/// A CA file a client trusts: read and checked to hold certificates.
pub fn read_ca(what: &'static str, path: &str) -> Result<Vec<u8>, TlsError> {
    let path = Path::new(path);
    let pem = read(what, path)?;
    certificates(what, path, &pem)?;
    Ok(pem)
}

/// A rustls client configuration that trusts only the CA in `path` (for a
/// backend whose certificates a private CA signed).
pub fn client_config(what: &'static str, path: &str) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certificates(what, Path::new(path), &read_ca(what, path)?)? {
        roots.add(cert).map_err(|e| TlsError::Pem { what, path: path.into(), message: format!("refused: {e}") })?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_a_configuration_is_refused_by_name() {
        assert!(TlsFiles::load("", "", "").unwrap().is_none());
        assert!(matches!(TlsFiles::load("cert.pem", "", ""), Err(TlsError::Half("certificate"))));
        assert!(matches!(TlsFiles::load("", "key.pem", ""), Err(TlsError::Half("key"))));
        assert!(matches!(TlsFiles::load("", "", "ca.pem"), Err(TlsError::CaWithoutTls)));
        let missing = TlsFiles::load("/no/such/cert.pem", "/no/such/key.pem", "").unwrap_err().to_string();
        assert!(missing.starts_with("cannot read TLS certificate /no/such/cert.pem"), "{missing}");
    }

    #[test]
    fn a_file_that_is_not_pem_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        std::fs::write(&cert, "not a certificate").unwrap();
        let e = TlsFiles::load(cert.to_str().unwrap(), cert.to_str().unwrap(), "").unwrap_err().to_string();
        assert!(e.contains("cert.pem") && e.contains("no CERTIFICATE"), "{e}");
    }
}
