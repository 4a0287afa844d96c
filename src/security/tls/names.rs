//! Who a certificate names, past "signed by our CA": [`CertNames`] reads a leaf's subject common
//! names and its subject-alternative DNS names and IP addresses; [`AllowedNames`] is etcd's
//! `--peer-cert-allowed-cn` / `--peer-cert-allowed-hostname` (the node's raft port) and
//! `--client-cert-allowed-cn` / `--client-cert-allowed-hostname` (placement): with either list set, a
//! certificate the CA signed must also carry one of those names, so one CA can sign certificates for
//! several roles (nodes, ctl users, other services) without each being able to act as any other.
//!
//! [`CertNames::identity`] is the name placement binds a store to (see `state/cert_identity.rs` in the
//! placement crate): the first common name, else the first SAN.

use std::net::IpAddr;

use rustls_pki_types::CertificateDer;
use x509_parser::prelude::{FromDer as _, GeneralName, X509Certificate};

/// The names in a certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertNames {
    /// The subject as text (`CN=node-1, O=…`), for logs.
    pub subject: String,
    pub common_names: Vec<String>,
    /// DNS names of the subject-alternative-name extension, as written (maybe `*.example.com`).
    pub dns_names: Vec<String>,
    pub ip_addrs: Vec<IpAddr>,
}

impl CertNames {
    /// Reads the names of a DER certificate; `Err` says why it is no certificate.
    pub fn parse(der: &[u8]) -> Result<CertNames, String> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|err| err.to_string())?;
        let subject = cert.subject();
        let common_names =
            subject.iter_common_name().filter_map(|cn| cn.as_str().ok()).map(str::to_string).collect::<Vec<_>>();
        let mut names = CertNames { subject: subject.to_string(), common_names, ..CertNames::default() };
        let san = cert.subject_alternative_name().map_err(|err| err.to_string())?;
        for name in san.iter().flat_map(|san| &san.value.general_names) {
            match name {
                GeneralName::DNSName(dns) => names.dns_names.push(dns.to_string()),
                GeneralName::IPAddress(bytes) => {
                    if let Some(ip) = ip_from_bytes(bytes) {
                        names.ip_addrs.push(ip);
                    }
                }
                _ => {}
            }
        }
        Ok(names)
    }

    /// The leaf certificate of a chain a peer presented, read.
    pub fn of_leaf(chain: Option<&[CertificateDer<'_>]>) -> Result<CertNames, String> {
        let leaf = chain.and_then(|chain| chain.first()).ok_or("no certificate was presented")?;
        CertNames::parse(leaf.as_ref())
    }

    /// The identity a store is bound to: its first common name, else its first SAN (DNS, then IP).
    pub fn identity(&self) -> Option<String> {
        (self.common_names.first().cloned())
            .or_else(|| self.dns_names.first().cloned())
            .or_else(|| self.ip_addrs.first().map(IpAddr::to_string))
    }
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

/// The names a listener accepts in a client certificate; both lists empty accepts every certificate
/// the CA signed (as without the flags). Either list may match: a certificate passes with an allowed
/// common name or with an allowed host name among its SANs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedNames {
    /// Exact (case-sensitive, as etcd compares them) subject common names.
    pub common_names: Vec<String>,
    /// Host names (or IP addresses) a SAN must cover, as a server name is checked: case-insensitive,
    /// a `*.example.com` SAN covering one label.
    pub hostnames: Vec<String>,
}

impl AllowedNames {
    pub fn new(common_names: &[String], hostnames: &[String]) -> AllowedNames {
        AllowedNames { common_names: common_names.to_vec(), hostnames: hostnames.to_vec() }
    }

    /// No restriction beyond the CA.
    pub fn is_empty(&self) -> bool {
        self.common_names.is_empty() && self.hostnames.is_empty()
    }

    pub fn admits(&self, names: &CertNames) -> bool {
        self.is_empty()
            || names.common_names.iter().any(|cn| self.common_names.contains(cn))
            || self.hostnames.iter().any(|host| covers(names, host))
    }
}

/// Whether a certificate's SANs cover `host`, as a TLS client checks a server's name.
fn covers(names: &CertNames, host: &str) -> bool {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return names.ip_addrs.contains(&ip);
    }
    let host = host.trim_end_matches('.');
    names.dns_names.iter().any(|dns| {
        let dns = dns.trim_end_matches('.');
        match dns.strip_prefix("*.") {
            Some(parent) => {
                host.split_once('.').is_some_and(|(label, rest)| !label.is_empty() && rest.eq_ignore_ascii_case(parent))
            }
            None => dns.eq_ignore_ascii_case(host),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::tls::test_certs::TestCa;

    #[test]
    fn the_names_of_a_certificate_are_read() {
        let ca = TestCa::new("names CA");
        let names = CertNames::parse(&ca.issue_for("node-1", &["node-1.fekv.internal", "10.0.0.1"]).der).unwrap();
        assert_eq!(names.common_names, ["node-1"]);
        assert_eq!(names.dns_names, ["node-1.fekv.internal"]);
        assert_eq!(names.ip_addrs, [IpAddr::from([10, 0, 0, 1])]);
        assert!(names.subject.contains("CN=node-1"), "{}", names.subject);
        assert_eq!(names.identity().as_deref(), Some("node-1"));
        assert!(CertNames::parse(b"not a certificate").is_err());
        assert!(CertNames::of_leaf(None).is_err());
    }

    #[test]
    fn without_a_common_name_the_identity_is_the_first_san() {
        let names = CertNames { dns_names: vec!["a.example".into()], ..CertNames::default() };
        assert_eq!(names.identity().as_deref(), Some("a.example"));
        let names = CertNames { ip_addrs: vec![IpAddr::from([127, 0, 0, 1])], ..CertNames::default() };
        assert_eq!(names.identity().as_deref(), Some("127.0.0.1"));
        assert_eq!(CertNames::default().identity(), None);
    }

    #[test]
    fn allowed_names_match_a_common_name_or_a_san() {
        let node = CertNames {
            common_names: vec!["node-1".into()],
            dns_names: vec!["*.nodes.fekv".into(), "Node-1.Example".into()],
            ip_addrs: vec![IpAddr::from([10, 0, 0, 1])],
            ..CertNames::default()
        };
        let cn = |names: &[&str]| AllowedNames::new(&names.iter().map(|n| n.to_string()).collect::<Vec<_>>(), &[]);
        let host = |names: &[&str]| AllowedNames::new(&[], &names.iter().map(|n| n.to_string()).collect::<Vec<_>>());
        assert!(AllowedNames::default().admits(&node), "no list: the CA decides alone");
        assert!(cn(&["ctl", "node-1"]).admits(&node));
        assert!(!cn(&["node-2"]).admits(&node) && !cn(&["Node-1"]).admits(&node));
        assert!(host(&["node-1.example"]).admits(&node), "host names are case-insensitive");
        assert!(host(&["a.nodes.fekv"]).admits(&node) && host(&["10.0.0.1"]).admits(&node));
        assert!(!host(&["a.b.nodes.fekv"]).admits(&node), "a wildcard covers one label");
        assert!(!host(&["nodes.fekv"]).admits(&node) && !host(&["10.0.0.2"]).admits(&node));
        assert!(!host(&["node-1"]).admits(&node), "a common name is no host name");
    }
}
