use super::*;
use crate::security::config::ServerTlsArgs;
use std::path::PathBuf;

#[test]
fn defaults_are_valid() {
    Config::default().validate().unwrap();
}

#[test]
fn file_then_flags_override_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fekv.toml");
    std::fs::write(&path, "max_value_size = \"64KiB\"\nrequest_timeout = \"2s\"\nhttp_addr = \"127.0.0.1:4000\"\n")
        .unwrap();
    let args =
        ServeArgs { config: Some(path), http_addr: Some("127.0.0.1:5000".parse().unwrap()), ..Default::default() };
    let config = args.load().unwrap();
    assert_eq!(config.max_value_size, ByteSize::kib(64));
    assert_eq!(config.request_timeout, Duration::from_secs(2));
    assert_eq!(config.http_addr, "127.0.0.1:5000".parse().unwrap());
    assert_eq!(config.map_size, Config::default().map_size);
}

#[test]
fn unknown_file_settings_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fekv.toml");
    std::fs::write(&path, "max_value_sise = \"64KiB\"\n").unwrap();
    let err = ServeArgs { config: Some(path), ..Default::default() }.load().unwrap_err();
    assert!(err.to_string().contains("max_value_sise"), "{err}");
}

#[test]
fn invalid_settings_say_which() {
    let args = ServeArgs { raft_election_ticks: Some(1), ..Default::default() };
    let err = args.load().unwrap_err();
    assert!(err.to_string().contains("raft_election_ticks"), "{err}");
}

/// The defaults `--help` documents are the real ones: feeding them back as flags gives the default
/// config, and every setting documents one.
#[test]
fn help_documents_the_real_defaults() {
    use clap::{CommandFactory, Parser};
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }
    let mut argv = vec!["fekv".to_string()];
    for arg in Cli::command().get_arguments() {
        let (Some(long), Some(help)) = (arg.get_long(), arg.get_help()) else { continue };
        if ["config", "placement", "advertise-http-addr", "advertise-raft-addr", "metrics-addr"].contains(&long) {
            continue; // no default: a file, an address that turns on cluster mode, addresses to register
        }
        if arg.get_help_heading().is_some_and(|heading| heading.starts_with("TLS")) {
            continue; // off by default, and kept out of the printed configuration while off
        }
        let help = help.to_string();
        let default = help
            .split("[default: ")
            .nth(1)
            .and_then(|rest| rest.split(']').next())
            .unwrap_or_else(|| panic!("--{long} documents no default: {help}"));
        argv.push(format!("--{long}={default}"));
    }
    let documented = Cli::try_parse_from(&argv).unwrap().serve.load().unwrap();
    assert_eq!(documented, Config::default(), "{argv:?}");
    let toml_names = toml::to_string(&Config::default()).unwrap();
    // Every setting has a flag (those unset by default are not in the default TOML).
    assert_eq!(argv.len() - 1, toml_names.lines().count(), "every setting has a flag: {argv:?}");
}

#[test]
fn a_log_level_that_is_no_level_is_refused() {
    for bad in ["nonsense", "info,nonsense", "fekv=loud", "info,"] {
        let err = ServeArgs { log_level: Some(bad.into()), ..Default::default() }.load().unwrap_err();
        assert!(err.to_string().contains("log_level"), "{bad}: {err}");
    }
    for good in ["info", "WARN", "off", "info,fekv=debug", "raft=trace", "fekv::api=debug,warn"] {
        ServeArgs { log_level: Some(good.into()), ..Default::default() }.load().unwrap();
    }
}

#[test]
fn advertised_addresses_are_host_port_others_can_reach() {
    for good in ["node-1.internal:3000", "10.0.0.2:20160", "[fe80::1]:3000", "localhost:1"] {
        check_advertised(good).unwrap_or_else(|e| panic!("{good}: {e}"));
    }
    for bad in ["0.0.0.0:3000", "[::]:3000", "node-1", "node-1:0", "node-1:http", ":3000", "fe80::1:3000"] {
        assert!(check_advertised(bad).is_err(), "{bad}");
    }
    let err = ServeArgs { advertise_http_addr: Some("0.0.0.0:3000".into()), ..Default::default() }.load().unwrap_err();
    assert!(err.to_string().contains("advertise_http_addr"), "{err}");
}

#[test]
fn an_unspecified_bind_address_needs_an_advertised_one() {
    let config = Config::default();
    let any: SocketAddr = "0.0.0.0:3000".parse().unwrap();
    let err = config.advertised_http_addr(any).unwrap_err().to_string();
    assert!(err.contains("advertise_http_addr") && err.contains("0.0.0.0:3000"), "{err}");
    assert_eq!(config.advertised_http_addr("10.0.0.2:3000".parse().unwrap()).unwrap(), "10.0.0.2:3000");
    let config = Config { advertise_raft_addr: Some("db-2:20160".into()), ..Config::default() };
    assert_eq!(config.advertised_raft_addr("[::]:20160".parse().unwrap()).unwrap(), "db-2:20160");
}

#[test]
fn the_whole_default_config_round_trips_through_toml() {
    let text = toml::to_string(&Config::default()).unwrap();
    let back: Config = toml::from_str(&text).unwrap();
    assert_eq!(back, Config::default());
}

#[test]
fn placement_is_a_list_from_the_file_the_environment_or_the_flag() {
    let from_file = |text: &str| toml::from_str::<Config>(text).unwrap().placement;
    assert_eq!(from_file("placement = \"a:1,http://b:2\""), Some("a:1,http://b:2".into()));
    assert_eq!(from_file("placement = [\"a:1\", \"b:2\", \"c:3\"]"), Some("a:1,b:2,c:3".into()));
    assert_eq!(from_file(""), None);
    assert!(toml::from_str::<Config>("placement = 7").is_err());
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }
    let cli = Cli::try_parse_from(["fekv", "--placement", "http://127.0.0.1:2479,127.0.0.1:2480"]).unwrap();
    assert_eq!(cli.serve.load().unwrap().placement.as_deref(), Some("http://127.0.0.1:2479,127.0.0.1:2480"));
    let members =
        crate::cluster_link::placement_link::parse_members(cli.serve.placement.as_deref().unwrap(), false, "peer TLS");
    assert_eq!(members.unwrap(), vec!["127.0.0.1:2479", "127.0.0.1:2480"]);
}

#[test]
fn tls_flags_and_the_tls_table_combine_and_incomplete_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fekv.toml");
    std::fs::write(&path, "[tls]\ncert_file = \"a.crt\"\n").unwrap();
    let api = ServerTlsArgs { key_file: Some("a.key".into()), ..Default::default() };
    let args =
        ServeArgs { config: Some(path.clone()), tls: NodeTlsArgs { api, ..Default::default() }, ..Default::default() };
    let config = args.load().unwrap();
    assert_eq!(config.tls.cert_file, Some(PathBuf::from("a.crt")));
    assert!(toml::to_string(&config).unwrap().contains("[tls]"));
    let err = ServeArgs { config: Some(path), ..Default::default() }.load().unwrap_err().to_string();
    assert!(err.contains("tls") && err.contains("key_file"), "{err}");
}
