//! Certificates made at test time (with rcgen, through `fekv::security::tls::local_ca`), never
//! checked in: a CA, and leaf certificates it signs
//! for `127.0.0.1`, `::1` and `localhost`, written as PEM files into a temporary directory. Shared by
//! the integration tests and, through `#[path]`, by the unit tests of `src/security/tls`.
#![allow(dead_code)] // each test binary uses its own part of this module

use std::path::{Path, PathBuf};

use fekv::security::tls::local_ca::{Issued, LocalCa};

/// A certificate authority that signs test certificates.
pub struct TestCa(LocalCa);

/// A leaf certificate and its private key, as PEM.
pub struct IssuedCert {
    pub cert_pem: String,
    pub key_pem: String,
    /// The certificate in DER, to compare with what a peer presented.
    pub der: Vec<u8>,
}

/// Where a certificate and its key were written.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        TestCa(LocalCa::new(name).expect("test CA"))
    }

    pub fn cert_pem(&self) -> String {
        self.0.cert_pem()
    }

    /// Writes the CA certificate to `dir/name`.
    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, self.cert_pem()).expect("write CA certificate");
        path
    }

    /// A certificate for the loopback names, good for both ends of a TLS connection (servers present
    /// it to clients and peers present it as clients), with `common_name` as its subject.
    pub fn issue(&self, common_name: &str) -> IssuedCert {
        self.issue_for(common_name, &["127.0.0.1", "::1", "localhost"])
    }

    /// A certificate for exactly `names` (IP addresses become IP SANs, the rest DNS SANs).
    pub fn issue_for(&self, common_name: &str, names: &[&str]) -> IssuedCert {
        let Issued { cert_pem, key_pem, der } = self.0.issue(common_name, names).expect("test certificate");
        IssuedCert { cert_pem, key_pem, der }
    }
}

impl IssuedCert {
    /// Writes `dir/<stem>.crt` and `dir/<stem>.key`.
    pub fn write(&self, dir: &Path, stem: &str) -> CertFiles {
        let files = CertFiles { cert: dir.join(format!("{stem}.crt")), key: dir.join(format!("{stem}.key")) };
        self.write_to(&files);
        files
    }

    /// Overwrites existing files (a certificate rotation).
    pub fn write_to(&self, files: &CertFiles) {
        std::fs::write(&files.cert, &self.cert_pem).expect("write certificate");
        std::fs::write(&files.key, &self.key_pem).expect("write key");
    }
}

/// A complete test PKI on disk: a CA with a server and a client certificate, and another CA with a
/// client certificate of its own (which the first CA's servers must refuse).
pub struct TestPki {
    pub dir: tempfile::TempDir,
    pub ca: TestCa,
    pub ca_file: PathBuf,
    pub server: IssuedCert,
    pub server_files: CertFiles,
    pub client_files: CertFiles,
    pub other_ca_file: PathBuf,
    pub other_client_files: CertFiles,
}

impl TestPki {
    pub fn new() -> TestPki {
        let dir = tempfile::tempdir().expect("temporary directory");
        let ca = TestCa::new("fekv test CA");
        let ca_file = ca.write(dir.path(), "ca.crt");
        let server = ca.issue("fekv server");
        let server_files = server.write(dir.path(), "server");
        let client_files = ca.issue("fekv client").write(dir.path(), "client");
        let other = TestCa::new("another CA");
        let other_ca_file = other.write(dir.path(), "other-ca.crt");
        let other_client_files = other.issue("stranger").write(dir.path(), "stranger");
        TestPki { dir, ca, ca_file, server, server_files, client_files, other_ca_file, other_client_files }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}
