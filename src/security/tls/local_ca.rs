//! A certificate authority made on the spot with rcgen: `fekv cluster --tls-dir` issues its
//! placement's, nodes' and client's certificates with it, and the tests theirs
//! (`tests/common/certs.rs`). Leaf certificates are good for both ends of a connection (server and
//! client auth), as fekv's peers present one certificate both ways; names that parse as IP
//! addresses become IP SANs, the others DNS SANs.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

pub use rcgen::Error as CaError;

/// A CA with its private key, in memory.
pub struct LocalCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A leaf certificate and its private key.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    /// The certificate in DER, to compare with what a peer presented.
    pub der: Vec<u8>,
}

impl LocalCa {
    /// A new self-signed CA named `name` (its subject's CN).
    pub fn new(name: &str) -> Result<LocalCa, CaError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate()?;
        Ok(LocalCa { issuer: CertifiedIssuer::self_signed(params, key)? })
    }

    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// The CA's private key (PEM), to issue more certificates later.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// A certificate with subject CN `common_name` for exactly `names`.
    pub fn issue(&self, common_name: &str, names: &[&str]) -> Result<Issued, CaError> {
        let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
        let mut params = CertificateParams::new(names)?;
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem(), der: cert.der().to_vec() })
    }
}
