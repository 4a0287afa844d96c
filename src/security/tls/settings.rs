//! The TLS settings an operator writes, with etcd's names: a server's `cert_file`, `key_file`,
//! `trusted_ca_file` and `client_cert_auth`; a peer's (raft port, placement link) `peer_*` trio, which
//! is always mutual; a client's `cacert`, `cert`, `key` (etcdctl's names). All serde types for the
//! TOML file, with a `from_flags` that turns the node's flat, optional fields into `None` (no TLS, as
//! today) or a complete setting, and a `validate` that loads every file once so a bad certificate is
//! a clear error at start instead of a failed handshake later.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::security::tls::{AppProtocol, ClientTls, ServerTls, TlsError};

/// A TLS listener (`--cert-file`, `--key-file`, `--trusted-ca-file`, `--client-cert-auth`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsSettings {
    /// The server's certificate chain (PEM), leaf first.
    pub cert_file: PathBuf,
    /// The certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// CA certificates (PEM) that client certificates are verified against. Without
    /// `client_cert_auth`, a client may still connect without a certificate, but one it presents is
    /// verified (so its identity can be trusted).
    #[serde(default)]
    pub trusted_ca_file: Option<PathBuf>,
    /// Require every client to present a certificate signed by `trusted_ca_file` (mutual TLS).
    #[serde(default)]
    pub client_cert_auth: bool,
}

/// The node's peer side: its raft listener and its connections to other stores and to placement,
/// always mutual (`--peer-cert-file`, `--peer-key-file`, `--peer-trusted-ca-file`). One certificate
/// serves both ends, as in etcd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerTlsSettings {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub trusted_ca_file: PathBuf,
}

/// A client's (`--cacert`, `--cert`, `--key`). fekv reads no system trust store: `cacert` is
/// required, which is what a private cluster's CA wants anyway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientTlsSettings {
    /// CA certificates (PEM) the server's certificate is verified against.
    pub cacert: PathBuf,
    /// The client certificate (PEM) to present, for servers that require one; with `key`.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    #[serde(default)]
    pub key: Option<PathBuf>,
}

impl ServerTlsSettings {
    /// The setting the node's flat flags describe: `None` when none is given (plain TCP, as today).
    pub fn from_flags(
        cert_file: Option<PathBuf>,
        key_file: Option<PathBuf>,
        trusted_ca_file: Option<PathBuf>,
        client_cert_auth: bool,
    ) -> Result<Option<ServerTlsSettings>, TlsError> {
        match (cert_file, key_file) {
            (Some(cert_file), Some(key_file)) => {
                let settings = ServerTlsSettings { cert_file, key_file, trusted_ca_file, client_cert_auth };
                settings.check_combination()?;
                Ok(Some(settings))
            }
            (None, None) if trusted_ca_file.is_none() && !client_cert_auth => Ok(None),
            (None, None) => Err(TlsError::Settings(
                "trusted_ca_file and client_cert_auth need a server certificate: set cert_file and key_file".into(),
            )),
            (Some(_), None) => Err(TlsError::Settings("cert_file is set but key_file is not".into())),
            (None, Some(_)) => Err(TlsError::Settings("key_file is set but cert_file is not".into())),
        }
    }

    /// Loads and checks every file (readable, PEM, key matching the certificate, a usable CA).
    pub fn validate(&self) -> Result<(), TlsError> {
        ServerTls::load(self.clone(), AppProtocol::Http1).map(drop)
    }

    pub(crate) fn check_combination(&self) -> Result<(), TlsError> {
        if self.client_cert_auth && self.trusted_ca_file.is_none() {
            return Err(TlsError::Settings(
                "client_cert_auth needs trusted_ca_file: the CA that client certificates are checked against".into(),
            ));
        }
        Ok(())
    }
}

impl PeerTlsSettings {
    /// `None` when no peer flag is given; all three are required otherwise (peer TLS is mutual).
    pub fn from_flags(
        cert_file: Option<PathBuf>,
        key_file: Option<PathBuf>,
        trusted_ca_file: Option<PathBuf>,
    ) -> Result<Option<PeerTlsSettings>, TlsError> {
        match (cert_file, key_file, trusted_ca_file) {
            (None, None, None) => Ok(None),
            (Some(cert_file), Some(key_file), Some(trusted_ca_file)) => {
                Ok(Some(PeerTlsSettings { cert_file, key_file, trusted_ca_file }))
            }
            _ => Err(TlsError::Settings(
                "peer TLS is mutual: set all of peer_cert_file, peer_key_file and peer_trusted_ca_file".into(),
            )),
        }
    }

    /// The raft listener's side: client certificates required.
    pub fn server(&self) -> ServerTlsSettings {
        ServerTlsSettings {
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
            trusted_ca_file: Some(self.trusted_ca_file.clone()),
            client_cert_auth: true,
        }
    }

    /// The outgoing side (to other stores and to placement): the same certificate, presented.
    pub fn client(&self) -> ClientTlsSettings {
        ClientTlsSettings {
            cacert: self.trusted_ca_file.clone(),
            cert: Some(self.cert_file.clone()),
            key: Some(self.key_file.clone()),
        }
    }

    pub fn validate(&self) -> Result<(), TlsError> {
        self.server().validate()?;
        self.client().validate()
    }
}

impl ClientTlsSettings {
    /// `None` when no flag is given. A `cert` or `key` without `cacert` is an error (fekv has no
    /// default trust store), as is one of `cert`/`key` without the other.
    pub fn from_flags(
        cacert: Option<PathBuf>,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
    ) -> Result<Option<ClientTlsSettings>, TlsError> {
        match cacert {
            None if cert.is_none() && key.is_none() => Ok(None),
            None => Err(TlsError::Settings(
                "cert and key need cacert: the CA the server's certificate is checked against".into(),
            )),
            Some(cacert) => {
                let settings = ClientTlsSettings { cacert, cert, key };
                settings.check_combination()?;
                Ok(Some(settings))
            }
        }
    }

    pub fn validate(&self) -> Result<(), TlsError> {
        ClientTls::load(self.clone(), AppProtocol::Http1).map(drop)
    }

    pub(crate) fn check_combination(&self) -> Result<(), TlsError> {
        match (&self.cert, &self.key) {
            (Some(_), None) => Err(TlsError::Settings("cert is set but key is not".into())),
            (None, Some(_)) => Err(TlsError::Settings("key is set but cert is not".into())),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::tls::test_certs::TestPki;

    fn some(path: &std::path::Path) -> Option<PathBuf> {
        Some(path.to_path_buf())
    }

    #[test]
    fn no_flags_means_no_tls() {
        assert_eq!(ServerTlsSettings::from_flags(None, None, None, false).unwrap(), None);
        assert_eq!(PeerTlsSettings::from_flags(None, None, None).unwrap(), None);
        assert_eq!(ClientTlsSettings::from_flags(None, None, None).unwrap(), None);
    }

    #[test]
    fn incomplete_flags_are_refused_with_what_is_missing() {
        let p = PathBuf::from("x.pem");
        fn err<T: std::fmt::Debug>(result: Result<T, TlsError>) -> String {
            result.unwrap_err().to_string()
        }
        assert!(err(ServerTlsSettings::from_flags(Some(p.clone()), None, None, false)).contains("key_file"));
        assert!(err(ServerTlsSettings::from_flags(None, None, None, true)).contains("cert_file"));
        assert!(err(ServerTlsSettings::from_flags(Some(p.clone()), Some(p.clone()), None, true))
            .contains("trusted_ca_file"));
        assert!(err(PeerTlsSettings::from_flags(Some(p.clone()), Some(p.clone()), None)).contains("mutual"));
        assert!(err(ClientTlsSettings::from_flags(None, Some(p.clone()), Some(p.clone()))).contains("cacert"));
        assert!(err(ClientTlsSettings::from_flags(Some(p.clone()), Some(p), None)).contains("key"));
    }

    #[test]
    fn settings_read_from_toml_with_etcd_names() {
        let server: ServerTlsSettings = toml::from_str(
            "cert_file = \"s.crt\"\nkey_file = \"s.key\"\ntrusted_ca_file = \"ca.crt\"\nclient_cert_auth = true\n",
        )
        .unwrap();
        assert!(server.client_cert_auth && server.trusted_ca_file == Some(PathBuf::from("ca.crt")));
        let client: ClientTlsSettings = toml::from_str("cacert = \"ca.crt\"").unwrap();
        assert_eq!((client.cert, client.key), (None, None));
        assert!(toml::from_str::<ClientTlsSettings>("cacert = \"a\"\ncert_file = \"b\"").is_err(), "unknown field");
    }

    #[test]
    fn valid_files_validate() {
        let pki = TestPki::new();
        let server = ServerTlsSettings {
            cert_file: pki.server_files.cert.clone(),
            key_file: pki.server_files.key.clone(),
            trusted_ca_file: some(&pki.ca_file),
            client_cert_auth: true,
        };
        server.validate().unwrap();
        let peer = PeerTlsSettings {
            cert_file: pki.server_files.cert.clone(),
            key_file: pki.server_files.key.clone(),
            trusted_ca_file: pki.ca_file.clone(),
        };
        peer.validate().unwrap();
    }

    #[test]
    fn a_missing_file_names_the_file() {
        let pki = TestPki::new();
        let missing = pki.path("nope.crt");
        let settings = ServerTlsSettings {
            cert_file: missing.clone(),
            key_file: pki.server_files.key.clone(),
            trusted_ca_file: None,
            client_cert_auth: false,
        };
        let err = settings.validate().unwrap_err();
        assert!(matches!(&err, TlsError::Read { path, .. } if *path == missing), "{err}");
        assert!(err.to_string().contains("nope.crt"), "{err}");
    }

    #[test]
    fn a_key_that_does_not_match_the_certificate_is_refused() {
        let pki = TestPki::new();
        let settings = ServerTlsSettings {
            cert_file: pki.server_files.cert.clone(),
            key_file: pki.client_files.key.clone(),
            trusted_ca_file: None,
            client_cert_auth: false,
        };
        let err = settings.validate().unwrap_err();
        assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
        let client = ClientTlsSettings {
            cacert: pki.ca_file.clone(),
            cert: Some(pki.client_files.cert.clone()),
            key: Some(pki.server_files.key.clone()),
        };
        assert!(matches!(client.validate().unwrap_err(), TlsError::KeyMismatch { .. }));
    }

    #[test]
    fn unreadable_pem_is_refused_with_the_file_and_what_was_expected() {
        let pki = TestPki::new();
        let garbage = pki.path("garbage.pem");
        std::fs::write(&garbage, "not a certificate\n").unwrap();
        let with = |cert: &PathBuf, key: &PathBuf, ca: Option<PathBuf>| ServerTlsSettings {
            cert_file: cert.clone(),
            key_file: key.clone(),
            trusted_ca_file: ca,
            client_cert_auth: false,
        };
        for (settings, what) in [
            (with(&garbage, &pki.server_files.key, None), "certificate"),
            (with(&pki.server_files.cert, &garbage, None), "private key"),
            (with(&pki.server_files.cert, &pki.server_files.key, Some(garbage.clone())), "CA certificate"),
            // A key where the certificate should be, and the other way round.
            (with(&pki.server_files.key, &pki.server_files.key, None), "certificate"),
            (with(&pki.server_files.cert, &pki.server_files.cert, None), "private key"),
        ] {
            let err = settings.validate().unwrap_err();
            assert!(matches!(err, TlsError::Pem { .. }), "{err}");
            assert!(err.to_string().contains(what), "{err} should name a {what}");
        }
    }
}
