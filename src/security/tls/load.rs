//! From PEM files to rustls configurations. Files are read whole first ([`FileSet`]), then parsed,
//! so the reloader can tell whether anything changed by comparing bytes, and every error names the
//! file and what it should have held.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::security::tls::{AppProtocol, ClientTlsSettings, ServerTlsSettings, TlsError};

/// PEM files larger than this are refused: a certificate chain or a key is a few kilobytes, so a
/// bigger file is a wrong path (a log, a database), not worth reading every few seconds.
const MAX_PEM_FILE: u64 = 1024 * 1024;

/// The bytes of a setting's files, in a fixed order (opaque outside this module).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSet(Vec<(PathBuf, Vec<u8>)>);

impl FileSet {
    pub(crate) fn read(paths: &[&Path]) -> Result<FileSet, TlsError> {
        let mut files = Vec::with_capacity(paths.len());
        for path in paths {
            let read_error = |source| TlsError::Read { path: path.to_path_buf(), source };
            let len = std::fs::metadata(path).map_err(read_error)?.len();
            if len > MAX_PEM_FILE {
                return Err(TlsError::Pem {
                    path: path.to_path_buf(),
                    expected: "PEM file",
                    reason: format!("{len} bytes is too large for one"),
                });
            }
            files.push((path.to_path_buf(), std::fs::read(path).map_err(read_error)?));
        }
        Ok(FileSet(files))
    }

    fn get(&self, path: &Path) -> &[u8] {
        self.0.iter().find(|(p, _)| p == path).map_or(&[], |(_, bytes)| bytes.as_slice())
    }
}

/// The one crypto provider fekv uses: ring (aws-lc-rs needs cmake and a long C build).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub(crate) fn server_config(
    settings: &ServerTlsSettings,
    protocol: AppProtocol,
    files: &FileSet,
) -> Result<ServerConfig, TlsError> {
    settings.check_combination()?;
    let provider = provider();
    let chain = certificates(&settings.cert_file, files.get(&settings.cert_file))?;
    let key = private_key(&settings.key_file, files.get(&settings.key_file))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|err| TlsError::Config(err.to_string()))?;
    let builder = match &settings.trusted_ca_file {
        None => builder.with_no_client_auth(),
        Some(ca_file) => {
            let roots = Arc::new(trust_anchors(ca_file, files.get(ca_file))?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider);
            let verifier = if settings.client_cert_auth { verifier } else { verifier.allow_unauthenticated() };
            builder.with_client_cert_verifier(verifier.build().map_err(|err| TlsError::Config(err.to_string()))?)
        }
    };
    let mut config =
        builder.with_single_cert(chain, key).map_err(|err| key_error(err, &settings.cert_file, &settings.key_file))?;
    config.alpn_protocols = protocol.alpn();
    Ok(config)
}

pub(crate) fn client_config(
    settings: &ClientTlsSettings,
    protocol: AppProtocol,
    files: &FileSet,
) -> Result<ClientConfig, TlsError> {
    settings.check_combination()?;
    let roots = trust_anchors(&settings.cacert, files.get(&settings.cacert))?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|err| TlsError::Config(err.to_string()))?
        .with_root_certificates(roots);
    let mut config = match (&settings.cert, &settings.key) {
        (Some(cert_file), Some(key_file)) => {
            let chain = certificates(cert_file, files.get(cert_file))?;
            let key = private_key(key_file, files.get(key_file))?;
            builder.with_client_auth_cert(chain, key).map_err(|err| key_error(err, cert_file, key_file))?
        }
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = protocol.alpn();
    Ok(config)
}

fn certificates(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| pem_error(path, "certificate", err.to_string()))?;
    if chain.is_empty() {
        return Err(pem_error(path, "certificate", "no CERTIFICATE section".into()));
    }
    Ok(chain)
}

fn private_key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|err| {
        let reason = match err {
            rustls_pki_types::pem::Error::NoItemsFound => "no PRIVATE KEY section".to_string(),
            other => other.to_string(),
        };
        pem_error(path, "private key", reason)
    })
}

fn trust_anchors(path: &Path, pem: &[u8]) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    let certs = certificates(path, pem).map_err(|err| match err {
        TlsError::Pem { path, reason, .. } => TlsError::Pem { path, expected: "CA certificate", reason },
        other => other,
    })?;
    for cert in certs {
        roots.add(cert).map_err(|err| pem_error(path, "CA certificate", err.to_string()))?;
    }
    Ok(roots)
}

fn pem_error(path: &Path, expected: &'static str, reason: String) -> TlsError {
    TlsError::Pem { path: path.to_path_buf(), expected, reason }
}

/// rustls checks the key against the certificate when it builds the config; say which files.
fn key_error(err: rustls::Error, cert: &Path, key: &Path) -> TlsError {
    match err {
        rustls::Error::InconsistentKeys(_) => {
            TlsError::KeyMismatch { cert: cert.to_path_buf(), key: key.to_path_buf() }
        }
        other => pem_error(key, "private key", format!("unusable with {}: {other}", cert.display())),
    }
}
