//! The TLS settings of each fekv command as the operator writes them, with etcd's names:
//!
//! - the node: [`TlsConfig`], the `[tls]` table of its TOML file, and [`NodeTlsArgs`], the same
//!   settings as flags and `FEKV_*` variables (`--cert-file`, `--key-file`, `--trusted-ca-file`,
//!   `--client-cert-auth` for the REST API; `--peer-cert-file`, `--peer-key-file`,
//!   `--peer-trusted-ca-file` for the raft port and the node's connections to other stores and to
//!   placement; `--peer-cert-allowed-cn` and `--peer-cert-allowed-hostname` narrow who may connect to
//!   the raft port);
//! - placement: [`PlacementTlsArgs`] (`--cert-file`, `--key-file`, `--trusted-ca-file`; a CA makes
//!   it mutual; `--client-cert-allowed-cn` / `--client-cert-allowed-hostname` narrow it). The listener
//!   trio is one [`ServerTlsArgs`], shared with the node's REST API;
//! - `fekv ctl` and `fekv bench`: [`ClientTlsArgs`] (etcdctl's `--cacert`, `--cert`, `--key`).
//!
//! Nothing set means no TLS, as before. The files are read by [`super::runtime`] at start.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::security::tls::{AllowedNames, ClientTlsSettings, PeerTlsSettings, ServerTlsSettings, TlsError};

/// The node's `[tls]` table. Every field is optional; none set means plain TCP everywhere.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// The REST API's certificate chain (PEM): with `key_file`, the API speaks HTTPS.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// CA that client certificates of the REST API are verified against.
    pub trusted_ca_file: Option<PathBuf>,
    /// Require a client certificate signed by `trusted_ca_file` on the REST API.
    pub client_cert_auth: bool,
    /// The certificate this node presents to other stores and placement and serves on its raft port.
    pub peer_cert_file: Option<PathBuf>,
    pub peer_key_file: Option<PathBuf>,
    /// The CA every peer's and placement's certificate must be signed by.
    pub peer_trusted_ca_file: Option<PathBuf>,
    /// Common names a peer's certificate must carry one of on the raft port (etcd's
    /// `--peer-cert-allowed-cn`); empty, with `peer_cert_allowed_hostname`: any the CA signed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub peer_cert_allowed_cn: Vec<String>,
    /// Host names one of a peer certificate's SANs must cover (etcd's `--peer-cert-allowed-hostname`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub peer_cert_allowed_hostname: Vec<String>,
}

impl TlsConfig {
    /// Nothing set (the default): kept out of the printed configuration.
    pub fn is_empty(&self) -> bool {
        *self == TlsConfig::default()
    }

    /// The REST API's listener settings, `None` for plain HTTP.
    pub fn client_listener(&self) -> Result<Option<ServerTlsSettings>, TlsError> {
        ServerTlsSettings::from_flags(
            self.cert_file.clone(),
            self.key_file.clone(),
            self.trusted_ca_file.clone(),
            self.client_cert_auth,
        )
    }

    /// The peer side (raft port, connections to stores and placement), `None` for plain gRPC.
    pub fn peer(&self) -> Result<Option<PeerTlsSettings>, TlsError> {
        PeerTlsSettings::from_flags(
            self.peer_cert_file.clone(),
            self.peer_key_file.clone(),
            self.peer_trusted_ca_file.clone(),
        )
    }

    /// The names the raft port requires of a peer's certificate (empty: none beyond the CA).
    pub fn peer_allowed(&self) -> AllowedNames {
        AllowedNames::new(&self.peer_cert_allowed_cn, &self.peer_cert_allowed_hostname)
    }

    /// Checks the combination of settings (not the files: those are loaded at start).
    pub fn validate(&self) -> Result<(), TlsError> {
        self.client_listener()?;
        if self.peer()?.is_none() && !self.peer_allowed().is_empty() {
            return Err(TlsError::Settings(
                "peer_cert_allowed_cn and peer_cert_allowed_hostname need peer TLS (peer_cert_file, ...)".into(),
            ));
        }
        Ok(())
    }
}

/// Checks the node's security settings (the `[tls]` table, the auth ones) for `Config::validate`:
/// the name of the first bad setting and why. It takes the settings, not the `Config` that holds
/// them, so that security stays below config (config imports this module, not the other way).
pub fn check(
    tls: &TlsConfig,
    auth_token_ttl: std::time::Duration,
    auth_password_cost: &str,
) -> Result<(), (&'static str, String)> {
    tls.validate().map_err(|err| ("tls", err.to_string()))?;
    if auth_token_ttl.is_zero() {
        return Err(("auth_token_ttl", "must be positive".into()));
    }
    crate::security::node_auth::parse_password_cost(auth_password_cost)
        .map_err(|reason| ("auth_password_cost", reason))?;
    Ok(())
}

/// A TLS listener's flags, the same for the node's REST API and for placement (etcd's names).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServerTlsArgs {
    /// Certificate chain (PEM) of this listener: with --key-file it serves TLS
    #[arg(long, env = "FEKV_CERT_FILE", value_name = "FILE")]
    pub cert_file: Option<PathBuf>,
    /// Private key (PEM) of --cert-file
    #[arg(long, env = "FEKV_KEY_FILE", value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// CA (PEM) that clients' certificates are verified against (on placement: required of every
    /// node and `fekv ctl`, mutual TLS)
    #[arg(long, env = "FEKV_TRUSTED_CA_FILE", value_name = "FILE")]
    pub trusted_ca_file: Option<PathBuf>,
}

impl ServerTlsArgs {
    /// The listener these flags describe, `None` without any; `mutual` requires client certificates.
    pub fn settings(&self, mutual: bool) -> Result<Option<ServerTlsSettings>, TlsError> {
        ServerTlsSettings::from_flags(
            self.cert_file.clone(),
            self.key_file.clone(),
            self.trusted_ca_file.clone(),
            mutual,
        )
    }
}

/// The node's TLS flags; each one set replaces the file's.
#[derive(Debug, Clone, Default, clap::Args)]
#[command(next_help_heading = "TLS (etcd's names; none set: plain HTTP and gRPC)")]
pub struct NodeTlsArgs {
    /// The REST API's listener
    #[command(flatten)]
    pub api: ServerTlsArgs,
    /// Require REST clients to present a certificate signed by --trusted-ca-file
    #[arg(long, env = "FEKV_CLIENT_CERT_AUTH")]
    pub client_cert_auth: bool,
    /// Certificate (PEM) of the raft port and of this node's connections to stores and placement
    #[arg(long, env = "FEKV_PEER_CERT_FILE", value_name = "FILE")]
    pub peer_cert_file: Option<PathBuf>,
    /// Private key (PEM) of --peer-cert-file
    #[arg(long, env = "FEKV_PEER_KEY_FILE", value_name = "FILE")]
    pub peer_key_file: Option<PathBuf>,
    /// CA (PEM) that signs every store's and placement's certificate (mutual TLS)
    #[arg(long, env = "FEKV_PEER_TRUSTED_CA_FILE", value_name = "FILE")]
    pub peer_trusted_ca_file: Option<PathBuf>,
    /// On the raft port, accept only peer certificates with one of these common names (comma-separated or repeated)
    #[arg(long, env = "FEKV_PEER_CERT_ALLOWED_CN", value_name = "CN", value_delimiter = ',')]
    pub peer_cert_allowed_cn: Vec<String>,
    /// On the raft port, accept only peer certificates whose SANs cover one of these host names
    #[arg(long, env = "FEKV_PEER_CERT_ALLOWED_HOSTNAME", value_name = "HOST", value_delimiter = ',')]
    pub peer_cert_allowed_hostname: Vec<String>,
}

impl NodeTlsArgs {
    /// Lays the flags given over the file's settings.
    pub fn overlay(&self, config: &mut TlsConfig) {
        for (flag, setting) in [
            (&self.api.cert_file, &mut config.cert_file),
            (&self.api.key_file, &mut config.key_file),
            (&self.api.trusted_ca_file, &mut config.trusted_ca_file),
            (&self.peer_cert_file, &mut config.peer_cert_file),
            (&self.peer_key_file, &mut config.peer_key_file),
            (&self.peer_trusted_ca_file, &mut config.peer_trusted_ca_file),
        ] {
            if flag.is_some() {
                *setting = flag.clone();
            }
        }
        config.client_cert_auth |= self.client_cert_auth;
        for (flag, setting) in [
            (&self.peer_cert_allowed_cn, &mut config.peer_cert_allowed_cn),
            (&self.peer_cert_allowed_hostname, &mut config.peer_cert_allowed_hostname),
        ] {
            if !flag.is_empty() {
                *setting = flag.clone();
            }
        }
    }
}

/// Placement's TLS flags: a certificate makes its gRPC port TLS; a CA makes it mutual (nodes and
/// `fekv ctl` then need a certificate that CA signed).
#[derive(Debug, Clone, Default, clap::Args)]
#[command(next_help_heading = "TLS (etcd's names; none set: plain gRPC)")]
pub struct PlacementTlsArgs {
    #[command(flatten)]
    pub server: ServerTlsArgs,
    /// Accept only client certificates (nodes, fekv ctl) with one of these common names (comma-separated or repeated)
    #[arg(long, env = "FEKV_CLIENT_CERT_ALLOWED_CN", value_name = "CN", value_delimiter = ',')]
    pub client_cert_allowed_cn: Vec<String>,
    /// Accept only client certificates whose SANs cover one of these host names
    #[arg(long, env = "FEKV_CLIENT_CERT_ALLOWED_HOSTNAME", value_name = "HOST", value_delimiter = ',')]
    pub client_cert_allowed_hostname: Vec<String>,
}

impl PlacementTlsArgs {
    pub fn settings(&self) -> Result<Option<ServerTlsSettings>, TlsError> {
        if !self.mutual() && !self.allowed().is_empty() {
            return Err(TlsError::Settings(
                "--client-cert-allowed-cn and --client-cert-allowed-hostname need --trusted-ca-file (mutual TLS)"
                    .into(),
            ));
        }
        self.server.settings(self.mutual())
    }

    /// The names placement requires of a client's certificate (empty: none beyond the CA).
    pub fn allowed(&self) -> AllowedNames {
        AllowedNames::new(&self.client_cert_allowed_cn, &self.client_cert_allowed_hostname)
    }

    /// A CA makes placement's TLS mutual.
    pub fn mutual(&self) -> bool {
        self.server.trusted_ca_file.is_some()
    }
}

/// A client's TLS flags (`fekv ctl`, `fekv bench`), etcdctl's names.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClientTlsArgs {
    /// CA (PEM) that servers' certificates are verified against; turns TLS on (https://)
    // Ids of their own, and not global: `fekv ctl region split --key` is the split key, so the TLS
    // flags go before the subcommand (`fekv ctl --cacert ca.crt --key k.pem region list`).
    #[arg(id = "tls_cacert", long = "cacert", env = "FEKV_CACERT", value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// Client certificate (PEM), for servers that require one
    #[arg(id = "tls_cert", long = "cert", env = "FEKV_CERT", value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// Private key (PEM) of --cert
    #[arg(id = "tls_key", long = "key", env = "FEKV_KEY", value_name = "FILE")]
    pub key: Option<PathBuf>,
}

impl ClientTlsArgs {
    pub fn settings(&self) -> Result<Option<ClientTlsSettings>, TlsError> {
        ClientTlsSettings::from_flags(self.cacert.clone(), self.cert.clone(), self.key.clone())
    }
}

/// Splits an address a person gave (`host:port`, `http://host:port`, `https://host:port`) into
/// `host:port` and whether it asks for TLS; `tls_configured` says whether TLS flags were given.
/// A bare `host:port` follows the flags; `https://` needs them and `http://` refuses them, so a
/// typo never silently sends credentials or data in clear text.
pub fn endpoint_scheme(addr: &str, tls_configured: bool) -> Result<(&str, bool), String> {
    let (rest, tls) = match (addr.strip_prefix("https://"), addr.strip_prefix("http://")) {
        (Some(_), _) if !tls_configured => {
            return Err(format!("{addr}: https:// needs --cacert (the CA that signed the server's certificate)"))
        }
        (Some(rest), _) => (rest, true),
        (None, Some(_)) if tls_configured => {
            return Err(format!("{addr}: http:// with TLS flags given; write https:// or drop the flags"))
        }
        (None, Some(rest)) => (rest, false),
        (None, None) => (addr, tls_configured),
    };
    Ok((rest.trim_end_matches('/'), tls))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_toml_tls_table_and_flags_combine() {
        let config: TlsConfig =
            toml::from_str("cert_file = \"a.crt\"\nkey_file = \"a.key\"\npeer_cert_file = \"p.crt\"").unwrap();
        let mut merged = config.clone();
        let api = ServerTlsArgs { key_file: Some("b.key".into()), ..Default::default() };
        NodeTlsArgs { api, client_cert_auth: true, ..Default::default() }.overlay(&mut merged);
        assert_eq!(merged.cert_file, Some(PathBuf::from("a.crt")));
        assert_eq!(merged.key_file, Some(PathBuf::from("b.key")));
        assert!(merged.client_cert_auth);
        assert!(merged.peer().unwrap_err().to_string().contains("mutual"), "one peer file of three");
        assert!(TlsConfig::default().is_empty() && TlsConfig::default().validate().is_ok());
    }

    #[test]
    fn allowed_peer_names_come_from_the_tls_table_or_the_flags_and_need_peer_tls() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            tls: NodeTlsArgs,
        }
        let peer = "peer_cert_file = \"p.crt\"\npeer_key_file = \"p.key\"\npeer_trusted_ca_file = \"ca.crt\"\n";
        let mut config: TlsConfig = toml::from_str(&format!("{peer}peer_cert_allowed_cn = [\"node-1\"]")).unwrap();
        assert_eq!(config.peer_allowed().common_names, ["node-1"]);
        config.validate().unwrap();
        let cli =
            Cli::try_parse_from(["fekv", "--peer-cert-allowed-cn=node-2,node-3", "--peer-cert-allowed-hostname", "h"])
                .unwrap();
        cli.tls.overlay(&mut config);
        assert_eq!(config.peer_allowed(), AllowedNames::new(&["node-2".into(), "node-3".into()], &["h".into()]));
        assert!(toml::to_string(&config).unwrap().contains("peer_cert_allowed_hostname"));
        let alone: TlsConfig = toml::from_str("peer_cert_allowed_hostname = [\"h\"]").unwrap();
        assert!(alone.validate().unwrap_err().to_string().contains("peer TLS"));
    }

    #[test]
    fn schemes_follow_the_flags() {
        assert_eq!(endpoint_scheme("127.0.0.1:2379", false).unwrap(), ("127.0.0.1:2379", false));
        assert_eq!(endpoint_scheme("127.0.0.1:2379", true).unwrap(), ("127.0.0.1:2379", true));
        assert_eq!(endpoint_scheme("https://h:1/", true).unwrap(), ("h:1", true));
        assert_eq!(endpoint_scheme("http://h:1", false).unwrap(), ("h:1", false));
        assert!(endpoint_scheme("https://h:1", false).unwrap_err().contains("--cacert"));
        assert!(endpoint_scheme("http://h:1", true).is_err());
    }

    #[test]
    fn placement_with_a_ca_is_mutual() {
        let server = ServerTlsArgs {
            cert_file: Some("p.crt".into()),
            key_file: Some("p.key".into()),
            trusted_ca_file: Some("ca.crt".into()),
        };
        let args = PlacementTlsArgs { server: server.clone(), ..Default::default() };
        assert!(args.settings().unwrap().unwrap().client_cert_auth);
        assert_eq!(PlacementTlsArgs::default().settings().unwrap(), None);
        // Allowed names need client certificates to look at.
        let allowed = vec!["ctl".to_string()];
        let args = PlacementTlsArgs { server, client_cert_allowed_cn: allowed.clone(), ..Default::default() };
        assert_eq!(args.allowed().common_names, allowed);
        let server = ServerTlsArgs { trusted_ca_file: None, ..args.server.clone() };
        let err = PlacementTlsArgs { server, ..args }.settings().unwrap_err().to_string();
        assert!(err.contains("--trusted-ca-file"), "{err}");
    }
}
