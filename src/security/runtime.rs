//! A process's TLS configurations, kept fresh: [`TlsSet`] loads each one at start (an error there
//! stops the process, naming the file), then [`TlsSet::keep_fresh`] watches every file for changes
//! and reloads all of them on SIGHUP. A reload that fails is logged at `error` by the reloadable
//! config itself, and the certificates in use stay.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::watch;

use crate::security::tls::reload::TlsSource;
use crate::security::tls::{
    AppProtocol, ClientTls, ClientTlsSettings, Reloadable, ServerTls, ServerTlsSettings, TlsError, DEFAULT_WATCH_PERIOD,
};

type Watcher = Box<dyn FnOnce(watch::Receiver<bool>) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// Every TLS configuration one process uses.
#[derive(Default)]
pub struct TlsSet {
    reloads: Vec<Arc<dyn Fn() + Send + Sync>>,
    watchers: Vec<Watcher>,
}

impl TlsSet {
    /// Loads a listener's configuration.
    pub fn server(&mut self, settings: ServerTlsSettings, protocol: AppProtocol) -> Result<Arc<ServerTls>, TlsError> {
        let tls = Arc::new(ServerTls::load(settings, protocol)?);
        self.add(tls.clone());
        Ok(tls)
    }

    /// Loads an outgoing connection's configuration.
    pub fn client(&mut self, settings: ClientTlsSettings, protocol: AppProtocol) -> Result<Arc<ClientTls>, TlsError> {
        let tls = Arc::new(ClientTls::load(settings, protocol)?);
        self.add(tls.clone());
        Ok(tls)
    }

    fn add<S: TlsSource>(&mut self, tls: Arc<Reloadable<S>>) {
        let reloaded = tls.clone();
        // The error, if any, is logged by `reload` itself.
        self.reloads.push(Arc::new(move || drop(reloaded.reload())));
        self.watchers.push(Box::new(move |stop| Box::pin(tls.watch(DEFAULT_WATCH_PERIOD, stopped(stop)))));
    }

    pub fn is_empty(&self) -> bool {
        self.reloads.is_empty()
    }

    /// Spawns the file watchers and the SIGHUP handler, all ending when `stop` turns true.
    pub fn keep_fresh(self, stop: watch::Receiver<bool>) {
        if self.is_empty() {
            return;
        }
        for watcher in self.watchers {
            tokio::spawn(watcher(stop.clone()));
        }
        tokio::spawn(reload_on_sighup(self.reloads, stop));
    }
}

async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

#[cfg(unix)]
async fn reload_on_sighup(reloads: Vec<Arc<dyn Fn() + Send + Sync>>, stop: watch::Receiver<bool>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(hangups) => hangups,
        Err(err) => {
            tracing::warn!(error = %err, "cannot listen for SIGHUP; certificates reload only when their files change");
            return;
        }
    };
    let stopped = stopped(stop);
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            got = hangups.recv() => {
                if got.is_none() {
                    return;
                }
                tracing::info!("SIGHUP: reloading TLS certificates");
                let reloads = reloads.clone();
                // A few small files: quick, but blocking reads all the same.
                let _ = tokio::task::spawn_blocking(move || reloads.iter().for_each(|reload| reload())).await;
            }
            _ = &mut stopped => return,
        }
    }
}

#[cfg(not(unix))]
async fn reload_on_sighup(_: Vec<Arc<dyn Fn() + Send + Sync>>, _: watch::Receiver<bool>) {}
