//! `fekv cluster --tls-dir DIR`: the local cluster with TLS everywhere. A CA made on the spot signs a
//! certificate for placement, one per node (CN `node-N`) and one for the operator's tools (CN
//! `client`), all for `127.0.0.1` and `localhost`, written as PEM into DIR (keys readable by the
//! owner only). Placement then runs mutual TLS, each node serves HTTPS and mutual TLS on its raft
//! port and to placement, and `fekv cluster` itself checks health over HTTPS and reads placement
//! with the client certificate. A DIR that already holds every file is reused as it is, so a
//! restarted cluster keeps the certificates its users were given.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

use crate::security::tls::local_ca::{CaError, LocalCa};
use crate::security::tls::{AppProtocol, ClientTls, ClientTlsSettings, TlsConnector, TlsError};

#[derive(Debug, thiserror::Error)]
pub enum ClusterTlsError {
    #[error("cannot make the cluster's certificates: {0}")]
    Generate(#[from] CaError),
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Load(#[from] TlsError),
}

/// The certificates of a local TLS cluster, on disk, and the client configs `fekv cluster` uses.
pub struct ClusterTls {
    dir: PathBuf,
    nodes: u16,
    /// To placement (gRPC), with the client certificate.
    grpc: Arc<ClientTls>,
    /// To the nodes' REST API (HTTP/1.1).
    https: Arc<ClientTls>,
}

/// The names every certificate is good for: the cluster listens on loopback.
const NAMES: [&str; 3] = ["127.0.0.1", "localhost", "::1"];

impl ClusterTls {
    /// Writes the certificates for `nodes` nodes into `dir`, unless it holds them all already.
    pub fn prepare(dir: &Path, nodes: u16) -> Result<ClusterTls, ClusterTlsError> {
        let write_error = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ClusterTlsError::Write { path, source }
        };
        std::fs::create_dir_all(dir).map_err(write_error(dir))?;
        let stems: Vec<String> =
            ["placement".to_string(), "client".to_string()].into_iter().chain((1..=nodes).map(node_stem)).collect();
        let complete = dir.join("ca.crt").exists()
            && stems
                .iter()
                .all(|stem| dir.join(format!("{stem}.crt")).exists() && dir.join(format!("{stem}.key")).exists());
        if !complete {
            let ca = LocalCa::new("fekv cluster CA")?;
            write(&dir.join("ca.crt"), &ca.cert_pem(), false)?;
            write(&dir.join("ca.key"), &ca.key_pem(), true)?;
            for stem in &stems {
                let issued = ca.issue(stem, &NAMES)?;
                write(&dir.join(format!("{stem}.crt")), &issued.cert_pem, false)?;
                write(&dir.join(format!("{stem}.key")), &issued.key_pem, true)?;
            }
        }
        let client = |protocol| {
            let settings = ClientTlsSettings {
                cacert: dir.join("ca.crt"),
                cert: Some(dir.join("client.crt")),
                key: Some(dir.join("client.key")),
            };
            ClientTls::load(settings, protocol).map(Arc::new)
        };
        Ok(ClusterTls {
            dir: dir.to_path_buf(),
            nodes,
            grpc: client(AppProtocol::Grpc)?,
            https: client(AppProtocol::Http1)?,
        })
    }

    fn file(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// Placement's flags: its certificate, and the CA that makes it mutual.
    pub fn placement_flags(&self) -> Vec<String> {
        let (cert, key, ca) = (self.file("placement.crt"), self.file("placement.key"), self.file("ca.crt"));
        ["--cert-file", &cert, "--key-file", &key, "--trusted-ca-file", &ca].map(String::from).to_vec()
    }

    /// Node `n`'s flags (from 1): HTTPS, and mutual TLS on the peer side, with one certificate.
    pub fn node_flags(&self, n: u16) -> Vec<String> {
        debug_assert!(n >= 1 && n <= self.nodes);
        let stem = node_stem(n);
        let (cert, key, ca) =
            (self.file(&format!("{stem}.crt")), self.file(&format!("{stem}.key")), self.file("ca.crt"));
        ["--cert-file", &cert, "--key-file", &key]
            .into_iter()
            .chain(["--peer-cert-file", &cert, "--peer-key-file", &key, "--peer-trusted-ca-file", &ca])
            .map(String::from)
            .collect()
    }

    /// The TLS config for placement's gRPC port.
    pub fn grpc(&self) -> &Arc<ClientTls> {
        &self.grpc
    }

    /// What to tell the user: curl and ctl command lines that work with this cluster (placement's
    /// replicas at `placement_addrs`).
    pub fn usage(&self, http_port: u16, placement_addrs: &[String]) -> String {
        let (ca, cert, key) = (self.file("ca.crt"), self.file("client.crt"), self.file("client.key"));
        let placement: Vec<String> = placement_addrs.iter().map(|addr| format!("https://{addr}")).collect();
        let placement = placement.join(",");
        format!(
            "TLS everywhere; certificates in {dir} (CA ca.crt, ca.key; client.crt for tools). Try:\n  \
             curl --cacert {ca} -L -X PUT https://127.0.0.1:{http_port}/fekv/hello -d world\n  \
             fekv ctl --placement {placement} --cacert {ca} --cert {cert} --key {key} store list",
            dir = self.dir.display()
        )
    }
}

fn node_stem(n: u16) -> String {
    format!("node-{n}")
}

fn write(path: &Path, contents: &str, private: bool) -> Result<(), ClusterTlsError> {
    let write_error = |source| ClusterTlsError::Write { path: path.to_path_buf(), source };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let _ = private;
    use std::io::Write;
    options.open(path).and_then(|mut file| file.write_all(contents.as_bytes())).map_err(write_error)
}

/// The client `fekv cluster` checks its nodes' health with: plain HTTP, or HTTPS with the CA.
pub enum HealthClient {
    Plain(Client<HttpConnector, Empty<Bytes>>),
    Tls(Client<TlsConnector, Empty<Bytes>>),
}

impl HealthClient {
    pub fn new(tls: Option<&ClusterTls>) -> HealthClient {
        let builder = Client::builder(TokioExecutor::new());
        match tls {
            None => HealthClient::Plain(builder.build_http()),
            Some(tls) => HealthClient::Tls(builder.build(TlsConnector::new(tls.https.clone()))),
        }
    }

    /// `http` or `https`, for the URLs to check.
    pub fn scheme(&self) -> &'static str {
        match self {
            HealthClient::Plain(_) => "http",
            HealthClient::Tls(_) => "https",
        }
    }

    pub async fn get(
        &self,
        uri: hyper::Uri,
    ) -> Result<hyper::Response<hyper::body::Incoming>, hyper_util::client::legacy::Error> {
        match self {
            HealthClient::Plain(client) => client.get(uri).await,
            HealthClient::Tls(client) => client.get(uri).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_certificates_are_made_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let tls = ClusterTls::prepare(dir.path(), 2).unwrap();
        let ca = std::fs::read(dir.path().join("ca.crt")).unwrap();
        for name in ["placement", "client", "node-1", "node-2"] {
            use rustls_pki_types::pem::PemObject as _;
            let der = rustls_pki_types::CertificateDer::from_pem_file(dir.path().join(format!("{name}.crt"))).unwrap();
            let names = crate::security::tls::CertNames::parse(&der).unwrap();
            assert_eq!(names.common_names, [name]);
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("node-1.key")).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "keys are the owner's only: {mode:o}");
        }
        assert!(tls.node_flags(2).join(" ").contains("node-2.crt --key-file"));
        assert!(tls.placement_flags().contains(&"--trusted-ca-file".to_string()));
        assert!(tls.usage(3000, &["127.0.0.1:2379".to_string()]).contains("--cacert"));
        // Again: the same files.
        ClusterTls::prepare(dir.path(), 2).unwrap();
        assert_eq!(std::fs::read(dir.path().join("ca.crt")).unwrap(), ca);
        // One node more: a new set.
        ClusterTls::prepare(dir.path(), 3).unwrap();
        assert_ne!(std::fs::read(dir.path().join("ca.crt")).unwrap(), ca);
    }
}
