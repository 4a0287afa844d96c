//! Reloadable TLS configurations: [`ServerTls`] (listeners) and [`ClientTls`] (outgoing connections).
//!
//! Each holds the rustls config built from its files and swaps in a new one on [`Reloadable::reload`]
//! (call it on SIGHUP) or when [`Reloadable::watch`] sees the files' bytes change. Every new connection
//! takes [`Reloadable::current`], so it uses the latest certificates and CA; connections already open
//! keep the config they started with. A reload that fails (a half-written file, a key that does not
//! match the new certificate) keeps the old config, logs at `error` and is retried only once the files
//! change again.
//!
//! The watcher compares the files' contents (not mtimes), every few seconds: a certificate file is a
//! few kilobytes, content survives the symlink swaps of Kubernetes secrets and mtime granularity, and
//! a rotation is seen within one period.

use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use rustls::{ClientConfig, ServerConfig};

use crate::security::tls::load::{self, FileSet};
use crate::security::tls::{AppProtocol, ClientTlsSettings, ServerTlsSettings, TlsError};

/// How often the watcher reads the files, unless told otherwise.
pub const DEFAULT_WATCH_PERIOD: Duration = Duration::from_secs(5);

/// Where a configuration comes from: the files to read, and how to build it from their bytes.
pub trait TlsSource: Send + Sync + 'static {
    type Config: Send + Sync + 'static;
    /// A name for logs ("server", "client").
    const KIND: &'static str;
    fn paths(&self) -> Vec<&Path>;
    fn build(&self, files: &FileSet) -> Result<Self::Config, TlsError>;
}

pub struct ServerSource {
    settings: ServerTlsSettings,
    protocol: AppProtocol,
}

pub struct ClientSource {
    settings: ClientTlsSettings,
    protocol: AppProtocol,
}

impl TlsSource for ServerSource {
    type Config = ServerConfig;
    const KIND: &'static str = "server";

    fn paths(&self) -> Vec<&Path> {
        let s = &self.settings;
        [Some(&s.cert_file), Some(&s.key_file), s.trusted_ca_file.as_ref()]
            .into_iter()
            .flatten()
            .map(|p| p.as_path())
            .collect()
    }

    fn build(&self, files: &FileSet) -> Result<ServerConfig, TlsError> {
        load::server_config(&self.settings, self.protocol, files)
    }
}

impl TlsSource for ClientSource {
    type Config = ClientConfig;
    const KIND: &'static str = "client";

    fn paths(&self) -> Vec<&Path> {
        let s = &self.settings;
        [Some(&s.cacert), s.cert.as_ref(), s.key.as_ref()].into_iter().flatten().map(|p| p.as_path()).collect()
    }

    fn build(&self, files: &FileSet) -> Result<ClientConfig, TlsError> {
        load::client_config(&self.settings, self.protocol, files)
    }
}

/// A listener's TLS configuration, reloadable.
pub type ServerTls = Reloadable<ServerSource>;
/// An outgoing connection's TLS configuration, reloadable.
pub type ClientTls = Reloadable<ClientSource>;

/// What a reload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reloaded {
    /// The files are those of the current config: nothing to do.
    Unchanged,
    /// A new config is in use for new connections.
    Applied,
}

/// What a reload compares the files with before it builds anything.
enum Baseline {
    /// The files of the config in use (an explicit reload retries files that failed before).
    Current,
    /// The files the last reload tried (the watcher waits for them to change again).
    LastTried,
}

pub struct Reloadable<S: TlsSource> {
    source: S,
    current: RwLock<Arc<S::Config>>,
    /// The bytes the current config was built from, and the last bytes a reload tried (which differ
    /// after a failed reload, so the watcher does not retry the same broken files every period).
    files: Mutex<(FileSet, FileSet)>,
    /// Configs built so far (1 after `load`): lets tests and metrics see a reload happen.
    generation: AtomicU64,
}

impl ServerTls {
    /// Loads a listener's config; an error here is fatal (the node should not start).
    pub fn load(settings: ServerTlsSettings, protocol: AppProtocol) -> Result<ServerTls, TlsError> {
        Reloadable::from_source(ServerSource { settings, protocol })
    }

    pub fn settings(&self) -> &ServerTlsSettings {
        &self.source.settings
    }
}

impl ClientTls {
    pub fn load(settings: ClientTlsSettings, protocol: AppProtocol) -> Result<ClientTls, TlsError> {
        Reloadable::from_source(ClientSource { settings, protocol })
    }

    pub fn settings(&self) -> &ClientTlsSettings {
        &self.source.settings
    }
}

impl<S: TlsSource> Reloadable<S> {
    fn from_source(source: S) -> Result<Reloadable<S>, TlsError> {
        let files = FileSet::read(&source.paths())?;
        let config = source.build(&files)?;
        Ok(Reloadable {
            source,
            current: RwLock::new(Arc::new(config)),
            files: Mutex::new((files.clone(), files)),
            generation: AtomicU64::new(1),
        })
    }

    /// The config a new connection should use.
    pub fn current(&self) -> Arc<S::Config> {
        self.current.read().clone()
    }

    /// Configs built so far, the first included.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// Reads the files and, if they differ from the current config's, builds and installs a new
    /// config. On error the current config stays (and the error is logged and returned).
    pub fn reload(&self) -> Result<Reloaded, TlsError> {
        self.reload_unless_same_as(Baseline::Current)
    }

    /// The watcher's reload: only when the files differ from the last ones tried.
    fn reload_if_changed(&self) -> Result<Reloaded, TlsError> {
        self.reload_unless_same_as(Baseline::LastTried)
    }

    fn reload_unless_same_as(&self, baseline: Baseline) -> Result<Reloaded, TlsError> {
        // One reload at a time (SIGHUP and the watcher may race); connections read `current` meanwhile.
        let mut files = self.files.lock();
        let result = FileSet::read(&self.source.paths()).and_then(|read| {
            let same = match baseline {
                Baseline::Current => read == files.0,
                Baseline::LastTried => read == files.1,
            };
            if same {
                return Ok(Reloaded::Unchanged);
            }
            files.1 = read.clone();
            let config = self.source.build(&read)?;
            *self.current.write() = Arc::new(config);
            files.0 = read;
            self.generation.fetch_add(1, Ordering::Relaxed);
            Ok(Reloaded::Applied)
        });
        match &result {
            Ok(Reloaded::Applied) => tracing::info!(kind = S::KIND, "TLS certificates reloaded"),
            Ok(Reloaded::Unchanged) => {}
            Err(err) => {
                tracing::error!(kind = S::KIND, error = %err, "TLS reload failed; keeping the current certificates")
            }
        }
        result
    }

    /// Polls the files every `period` until `stop` resolves, reloading when their bytes change.
    /// Spawn it next to the listener: `tokio::spawn(tls.clone().watch(period, stopped))`.
    pub async fn watch(self: Arc<Self>, period: Duration, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            tokio::select! {
                _ = ticks.tick() => {
                    // Reading a few small files: quick, but blocking I/O all the same.
                    let tls = self.clone();
                    let _ = tokio::task::spawn_blocking(move || tls.reload_if_changed()).await;
                }
                _ = &mut stop => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::tls::test_certs::TestPki;

    fn server_settings(pki: &TestPki) -> ServerTlsSettings {
        ServerTlsSettings {
            cert_file: pki.server_files.cert.clone(),
            key_file: pki.server_files.key.clone(),
            trusted_ca_file: None,
            client_cert_auth: false,
        }
    }

    #[test]
    fn reloading_unchanged_files_changes_nothing() {
        let pki = TestPki::new();
        let tls = ServerTls::load(server_settings(&pki), AppProtocol::Http1).unwrap();
        let before = tls.current();
        assert_eq!(tls.reload().unwrap(), Reloaded::Unchanged);
        assert!(Arc::ptr_eq(&before, &tls.current()));
        assert_eq!(tls.generation(), 1);
    }

    #[test]
    fn a_new_certificate_is_applied_and_a_broken_one_keeps_the_old() {
        let pki = TestPki::new();
        let tls = ServerTls::load(server_settings(&pki), AppProtocol::Http1).unwrap();
        pki.ca.issue("rotated").write_to(&pki.server_files);
        assert_eq!(tls.reload().unwrap(), Reloaded::Applied);
        assert_eq!(tls.generation(), 2);
        let good = tls.current();
        // Half a rotation: a new certificate whose key is not there yet.
        std::fs::write(&pki.server_files.cert, pki.ca.issue("next").cert_pem).unwrap();
        assert!(matches!(tls.reload(), Err(TlsError::KeyMismatch { .. })));
        assert!(Arc::ptr_eq(&good, &tls.current()), "the old config stays");
        // The watcher does not retry the same broken files; an explicit reload does.
        assert_eq!(tls.reload_if_changed().unwrap(), Reloaded::Unchanged);
        assert!(tls.reload().is_err());
        std::fs::remove_file(&pki.server_files.key).unwrap();
        assert!(matches!(tls.reload_if_changed(), Err(TlsError::Read { .. })));
        assert_eq!(tls.generation(), 2);
    }
}
